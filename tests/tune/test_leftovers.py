"""loravc.tune.leftovers: what a killed trial's `dvc exp run --temp` left is removed, never a live process's run.

The records here are written as DVC 3 writes them (tests/tune/test_study.py kills a real trial and checks
`dvc exp show` after it)."""

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from loravc.tune import leftovers
from loravc.tune.space import check
from loravc.tune.study import Options, Study
from loravc.tune.study import tune as tune_study
from tests.conftest import git
from tests.tune.scratch import fake_repo

EXPS = Path(".dvc", "tmp", "exps")


def dvc_repo(tmp_path: Path) -> Path:
    from dvc.repo import Repo

    repo = fake_repo(tmp_path, {"study": "c", "sampler": "random", "space": {"train.lora.r": {"choices": [2, 4]}}})
    Repo.init(str(repo)).close()
    return repo


def record_run(repo: Path, key: str, name: str, status: int = 2, copy: Path | None = None) -> Path:
    """DVC's records of a `dvc exp run --temp -n name` (2: running, 6: finished) and its temporary copy."""
    copy = copy or repo / EXPS / "standalone" / f"tmp{key}"
    copy.mkdir(parents=True, exist_ok=True)
    git(copy, "init", "-q")
    (copy / "model.safetensors").write_bytes(b"\0" * 1000)
    info = {"git_url": f"file://{copy}", "baseline_rev": "0" * 40, "location": "tempdir", "root_dir": str(copy),
            "dvc_dir": ".dvc", "name": name, "wdir": ".", "result_hash": None, "result_ref": None,
            "result_force": False, "status": status}  # fmt: skip
    for records, state in ((repo / EXPS / "standalone" / "run", status), (repo / EXPS / "run", 1)):
        (records / key).mkdir(parents=True)
        (records / key / f"{key}.run").write_text(json.dumps(info | {"status": state}))
    return copy


def trial_of(study: Study, owner: dict[str, Any]) -> None:
    trial = study.study.ask()
    trial.suggest_categorical("train.lora.r", [2, 4])
    trial.set_user_attr("owner", {"host": socket.gethostname(), "start": None, "branch": "main"} | owner)


def test_only_runs_of_trials_whose_processes_ended_are_removed(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path)
    said: list[str] = []
    study = Study(repo, *check(repo / "params.yaml"), said.append)
    dead = subprocess.Popen(["true"])
    dead.wait()
    trial_of(study, {"pid": dead.pid, "child": dead.pid})  # 0: loravc tune and its dvc exp run killed
    trial_of(study, {"pid": os.getpid()})  # 1: a concurrent loravc tune that still runs
    trial_of(study, {"pid": dead.pid, "child": os.getpid()})  # 2: its dvc exp run outlived a killed loravc tune
    trial_of(study, {"pid": dead.pid, "host": "elsewhere"})  # 3: another machine's
    killed = record_run(repo, "a" * 40, "c-0")
    kept = [record_run(repo, key * 40, name) for key, name in (("b", "c-1"), ("d", "c-2"), ("e", "c-3"))]
    kept.append(record_run(repo, "f" * 40, "mine"))  # no trial of the study: a run of the user's
    kept.append(record_run(repo, "1" * 40, "c-0", copy=tmp_path / "outside"))  # a copy outside .dvc/tmp/exps
    finished = record_run(repo, "2" * 40, "c-0", status=6)  # DVC finished it: its copy is no run's
    assert sorted(run.name for run in leftovers.unfinished(repo)) == ["c-0", "c-1", "c-2", "c-3", "mine"]

    assert study.remove_leftovers() == 1
    assert said == [
        "trial 0: removed what its killed dvc exp run left: DVC's record of it (Running in dvc exp show) and its "
        f"temporary copy .dvc/tmp/exps/standalone/tmp{'a' * 40} (0.0 MB)"
    ]
    assert not killed.exists() and not (repo / EXPS / "standalone" / "run" / ("a" * 40)).exists()
    assert not (repo / EXPS / "run" / ("a" * 40)).exists()
    assert all(copy.is_dir() for copy in [*kept, finished])
    assert sorted(run.name for run in leftovers.unfinished(repo)) == ["c-1", "c-2", "c-3", "mine"]


def test_tune_clean_settles_and_removes_without_starting_a_trial(tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path)
    study = Study(repo, *check(repo / "params.yaml"), lambda line: None)
    dead = subprocess.Popen(["true"])
    dead.wait()
    trial_of(study, {"pid": dead.pid, "child": dead.pid})
    copy = record_run(repo, "a" * 40, "c-0")
    said: list[str] = []
    cleaned = tune_study(repo, Options(clean=True), said.append)
    assert said[0] == "trial 0: cut off before DVC saved it; its params are queued again"
    assert said[1].startswith("trial 0: removed what its killed dvc exp run left") and len(said) == 2
    assert not copy.exists() and [t.state.name for t in cleaned.study.trials] == ["FAIL", "WAITING"]
    said.clear()
    tune_study(repo, Options(clean=True), said.append)
    assert said == ["study c: no killed trial left a DVC run behind"]
