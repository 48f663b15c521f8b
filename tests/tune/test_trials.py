"""loravc.tune.trials: what DVC saved for a trial, read from its experiment; the data a trial's copy needs."""

import json
from pathlib import Path

import pytest

from loravc.core.errors import UserError
from loravc.tune.trials import TEST_METRICS, TRAIN_METRICS, check_data_committed, experiment, experiments, trial_name
from loravc.versions.gitrepo import GitRepo
from tests.conftest import git

COMMIT = ("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm")


def saved_experiment(repo: Path, name: str, files: dict[str, dict[str, float]]) -> str:
    """A commit holding `files` (metrics JSON), saved as DVC saves an experiment: a ref under refs/exps."""
    for path, metrics in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(json.dumps(metrics))
    git(repo, "add", "-A")
    git(repo, *COMMIT, name)
    commit = git(repo, "rev-parse", "HEAD")
    git(repo, "update-ref", f"refs/exps/ab/{'c' * 38}/{name}", commit)
    return commit


def test_a_trial_is_read_back_from_the_experiment_dvc_saved(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    train, test = {"validation_loss": 1.25, "train_loss": 1.1}, {"tuned_perplexity": 3.5}
    done = saved_experiment(tmp_path, trial_name("lora", 0), {TRAIN_METRICS: train, TEST_METRICS: test})
    git(tmp_path, "rm", "-rq", "dvclive")
    cut = saved_experiment(tmp_path, trial_name("lora", 1), {TRAIN_METRICS: {"validation_loss": 2.0}})
    assert experiments(tmp_path) == {"lora-0": done, "lora-1": cut}
    repo = GitRepo(tmp_path)
    assert experiment(repo, "lora-0") == (done, train, test)
    assert experiment(repo, "lora-1") == (cut, {"validation_loss": 2.0}, {})  # evaluate wrote nothing there
    assert experiment(repo, "lora-2") is None  # DVC saved none by that name


def test_a_trial_needs_its_data_in_git_or_dvc_or_copied(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "data" / "mine").mkdir(parents=True)
    (tmp_path / "data" / "mine" / "train.jsonl").write_text("{}\n")
    message = r"^data\.train \(data/mine\) holds files git does not track \(data/mine/train\.jsonl\.\.\.\)"
    with pytest.raises(UserError, match=message):
        check_data_committed(tmp_path, "data/mine", ["data/min"])  # a name that merely starts the same
    check_data_committed(tmp_path, "data/mine", ["data/"])  # a folder above it copied into each trial
    (tmp_path / "data" / "mine.dvc").write_text("outs:\n- path: mine\n")  # `dvc add data/mine`
    check_data_committed(tmp_path, "data/mine", [])
    (tmp_path / "data" / "mine.dvc").unlink()
    git(tmp_path, "add", "data")
    check_data_committed(tmp_path, "data/mine", [])  # tracked by git
