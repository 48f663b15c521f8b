"""After a failed stage, the recovery commands the README documents bring the last version back byte for byte.

DVC removes a stage's outputs before running it. The cached ones come back with `dvc checkout`; the
git-tracked ones (`cache: false`: dvclive/*/metrics.json, reports/samples.md) and what the stages that
did succeed rewrote (dvc.lock) come back from git. A run that dies midway also leaves partial outputs that
were never cached, which plain `dvc checkout` refuses to overwrite, hence `--force`.
"""

import re
from pathlib import Path

from tests.conftest import ROOT, UP_TO_DATE, dvc, git, run, sha256_tree, update_params

RECOVERY = "git checkout HEAD -- params.yaml dvc.lock dvclive reports && dvc checkout --force"


def last_version(repo: Path) -> dict[str, str]:
    """Every file the pipeline writes or reads as params: outputs, metrics, reports, dvc.lock, params.yaml."""
    files = {name: sha256_tree(repo / name) for name in ("models", "dvclive", "reports", "data/prepared")}
    return files | {name: sha256_tree(repo)[name] for name in ("dvc.lock", "params.yaml")}


def recover(repo: Path) -> None:
    run(["bash", "-c", RECOVERY], repo)


def assert_back(repo: Path, before: dict[str, str]) -> None:
    assert last_version(repo) == before
    assert dvc(repo, "status").stdout.strip() == UP_TO_DATE
    assert git(repo, "status", "--porcelain") == ""


def test_the_readme_and_the_experiments_page_document_these_commands() -> None:
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert f"`{RECOVERY}`" in readme
    assert RECOVERY in (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")


def test_a_stage_failing_after_others_reran_is_undone(built_repo: Path) -> None:
    """train reruns and succeeds (a new adapter, curves, metrics and dvc.lock); then evaluate fails."""
    repo = built_repo
    before = last_version(repo)
    update_params(repo / "params.yaml", {"train": {"seed": 7}, "evaluate": {"device": "cuda:99"}})
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0 and "failed to reproduce 'evaluate'" in failed.stderr, failed.stderr
    assert "Running stage 'train'" in failed.stdout
    assert not (repo / "dvclive" / "evaluate" / "metrics.json").exists()  # git-tracked: dvc checkout misses it
    assert not (repo / "reports" / "samples.md").exists()
    assert "dvc.lock" in git(repo, "status", "--porcelain")

    recover(repo)
    assert_back(repo, before)


def test_what_a_run_killed_midway_leaves_is_undone(built_repo: Path) -> None:
    """train fails; then the partial outputs a killed run leaves (part of its curves, its running metrics)."""
    repo = built_repo
    before = last_version(repo)
    # early stopping's evaluation interval against the run's steps needs the data: only train's preflight sees it,
    # after DVC removed train's outputs (a value stage `source` can check fails before: tests/test_experiments.py)
    update_params(repo / "params.yaml", {"train": {"early_stopping": {"patience": 1, "eval_steps": 500}}})
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0 and "train.early_stopping.eval_steps is 500" in failed.stderr, failed.stderr
    assert "failed to reproduce 'train'" in failed.stderr
    assert not (repo / "dvclive" / "train" / "metrics.json").exists()
    curves = repo / "dvclive" / "train" / "plots" / "metrics"
    curves.mkdir(parents=True)
    (curves / "loss.tsv").write_text("step\tloss\n1\t6.0\n", encoding="utf-8")
    (repo / "dvclive" / "train" / "metrics.json").write_text('{"loss": 6.0, "step": 1}\n', encoding="utf-8")
    refused = dvc(repo, "checkout", check=False)  # why the documented command has --force
    assert refused.returncode != 0 and "--force" in refused.stderr, refused.stderr

    recover(repo)
    assert_back(repo, before)
