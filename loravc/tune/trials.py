"""loravc tune's trials as DVC experiments: the data a trial's clean copy of the repository needs, and what DVC
saved for a trial (its commit, and the metrics files the train and evaluate stages wrote there)."""

import json
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.versions.gitrepo import GitRepo

TRAIN_METRICS = "dvclive/train/metrics.json"  # validation_loss, the objective, among the train stage's metrics
TEST_METRICS = "dvclive/evaluate/metrics.json"  # the evaluate stage's: shown in the summary, never an objective


def trial_name(study: str, number: int) -> str:
    """The experiment of trial `number`: <study>-<number>."""
    return f"{study}-{number}"


def check_data_committed(repo: Path, data_path: str, copy_paths: list[str]) -> None:
    """A trial runs in a clean copy of the repository: the data must be in git or DVC, or copied."""
    if any(data_path == p or data_path.startswith(p.rstrip("/") + "/") for p in copy_paths):
        return
    untracked = GitRepo(repo).git("ls-files", "--others", "--exclude-standard", "--", data_path).split()
    dvc_file = (repo / f"{data_path.rstrip('/')}.dvc").exists()
    if untracked and not dvc_file:
        raise UserError(
            f"data.train ({data_path}) holds files git does not track ({untracked[0]}...): a trial runs in a clean "
            f"copy of the repository; commit them (or `dvc add {data_path}` and commit the .dvc file), "
            f"or pass --copy-paths {data_path}"
        )


def experiments(repo: Path) -> dict[str, str]:
    """Every DVC experiment of the repository: name -> commit."""
    return GitRepo(repo).experiments()


def experiment(git: GitRepo, name: str) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(commit, train metrics, test metrics) of experiment `name`, or None if DVC saved none by that name."""
    commit = git.experiments().get(name)
    if commit is None:
        return None
    blobs = git.read_blobs([f"{commit}:{TRAIN_METRICS}", f"{commit}:{TEST_METRICS}"])
    train, test = (json.loads(b) if b else {} for b in blobs.values())
    return commit, train, test
