"""params.yaml files and git repositories with a `tune` section, for the tune tests."""

from pathlib import Path
from typing import Any

from tests.conftest import ROOT, git, update_params

LR = "train.trainer.learning_rate"


def params_with(tmp_path: Path, tune: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    update_params(path, {"tune": {key: value for key, value in tune.items() if key != "space"}})
    if "space" in tune:  # replace the shipped space, not merge into it
        update_params(path, {"tune": {"space": None}})
        update_params(path, {"tune": {"space": tune["space"]}})
    return path


def fake_repo(tmp_path: Path, tune: dict[str, Any]) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    params_with(repo, tune)
    return repo
