"""loravc.tune.study: studies whose trials are DVC experiments, faked and real on the tiny pipeline."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import optuna
import pytest

from loravc.core.errors import UserError
from loravc.core.schema import parse_yaml
from loravc.core.tools import dvc_cmd, tool_env
from loravc.train import pruning
from loravc.tune.space import check
from loravc.tune.study import Options, Study
from loravc.tune.study import tune as tune_study
from loravc.tune.trials import check_data_committed, experiments
from tests.conftest import UP_TO_DATE, git, make_repo, run, update_params
from tests.tune.scratch import LR, fake_repo, params_with

SPACE = {"train.lora.r": {"choices": [2, 4]}, LR: {"low": 1.0e-3, "high": 1.0e-2, "log": True}}


def test_a_trial_that_fails_stops_the_study_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = fake_repo(tmp_path, {"study": "p", "space": {"train.lora.r": {"choices": [2, 4]}}})
    tune, dims = check(repo / "params.yaml")
    study = Study(repo, tune, dims, lambda line: None)

    def crashed(name: str, overrides: list[str], spec: Any, options: Any, log: Path, *owner: Any) -> int:
        log.write_text("ERROR: failed to reproduce 'train': out of memory\n")
        return 255

    monkeypatch.setattr(study, "_dvc_exp_run", crashed)
    with pytest.raises(UserError, match=r"(?s)^trial 0 failed \(dvc exp run exited 255; log .*out of memory\nfix the"):
        study.trial(Options(trials=2))
    assert study.study.trials[0].state == optuna.trial.TrialState.FAIL


# --- real studies on the tiny pipeline --------------------------------------------------------------
def tune_repo(repo: Path, built_repo_template: Path, tune: dict[str, Any]) -> Path:
    """The built tiny pipeline with three epochs (three evaluations a trial) and a tune section, committed: its
    trials take base and prepare from the first version, as a study after a first `dvc repro` does."""
    shutil.copytree(built_repo_template, repo, symlinks=True)
    update_params(repo / "params.yaml", {"train": {"trainer": {"max_steps": -1, "num_train_epochs": 3}}})
    update_params(repo / "params.yaml", {"tune": {"space": None}})
    update_params(repo / "params.yaml", {"tune": {**tune, "space": SPACE}})
    git(repo, "commit", "-qam", "a study")
    return repo


def loravc_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "loravc", *args]


def trials_of(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=pruning.open_storage(storage)).get_trials(deepcopy=False)


def assert_trials_are_experiments(repo: Path, trials: list[optuna.trial.FrozenTrial], study: str) -> None:
    """Each finished trial is the experiment <study>-<number>, run with the sampled params, scored as told."""
    found = experiments(repo)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(found) == sorted(f"{study}-{t.number}" for t in complete)
    for trial in complete:
        commit = found[f"{study}-{trial.number}"]
        params = parse_yaml(git(repo, "show", f"{commit}:params.yaml"))
        assert params["train"]["lora"]["r"] == trial.params["train.lora.r"]
        assert params["train"]["trainer"]["learning_rate"] == pytest.approx(trial.params[LR], rel=1e-12)
        metrics = parse_yaml(git(repo, "show", f"{commit}:dvclive/train/metrics.json"))
        assert metrics["validation_loss"] == trial.value and trial.user_attrs["commit"] == commit


def dvc_running(repo: Path) -> list[str]:
    """The experiments whose `dvc exp run --temp` DVC records as running (its executor info files)."""
    names = []
    for record in sorted((repo / ".dvc" / "tmp" / "exps" / "standalone" / "run").glob("*/*.run")):
        with suppress(OSError, ValueError):  # one DVC is writing
            info = json.loads(record.read_text())
            names += [info["name"]] if info["status"] <= 2 else []  # DVC's TaskStatus.RUNNING
    return names


@pytest.mark.slow  # real trials: dvc exp run in a scratch repository (tests/conftest.py's rule)
def test_a_killed_study_resumes_and_every_trial_is_an_experiment(tmp_path: Path, built_repo_template: Path) -> None:
    repo = tune_repo(
        tmp_path / "repo", built_repo_template, {"study": "t", "sampler": "random", "trials": 2, "pruner": "none"}
    )
    storage = str(repo / ".dvc" / "tmp" / "tune" / "t.journal")
    first = subprocess.Popen(loravc_cmd("tune"), cwd=repo, env=tool_env(), start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # trial 0 finished and trial 1 runs: kill it all, as a crash would
        trials = trials_of(storage, "t") if Path(storage).exists() else []
        if any(t.number == 1 and "child" in t.user_attrs.get("owner", {}) for t in trials) and dvc_running(repo):
            break
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = trials_of(storage, "t")
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"] and list(experiments(repo)) == ["t-0"]
    assert dvc_running(repo) == ["t-1"] and len(list((repo / ".dvc" / "tmp" / "exps").glob("standalone/tmp*"))) == 1
    kept = experiments(repo)["t-0"]

    resumed = run(loravc_cmd("tune"), repo).stdout
    assert "trial 1: cut off before DVC saved it; its params are queued again" in resumed
    # what the killed dvc exp run left is gone: no phantom Running in `dvc exp show`, no temporary copy
    assert "trial 1: removed what its killed dvc exp run left: DVC's record of it (Running in dvc exp show)" in resumed
    shown = list(csv.DictReader(io.StringIO(run(dvc_cmd("exp", "show", "--csv"), repo).stdout)))
    assert [row.get("State") for row in shown if row.get("State")] == [] and dvc_running(repo) == []
    assert sorted(row["Experiment"] for row in shown if row["Experiment"]) == ["t-0", "t-2"]
    assert list((repo / ".dvc" / "tmp" / "exps").glob("standalone/tmp*")) == []
    after = trials_of(storage, "t")
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE"]  # the 2 asked for, and the cut-off one
    assert after[2].params == before[1].params and after[2].user_attrs["retry_of"] == 1  # the cut-off point again
    assert experiments(repo)["t-0"] == kept  # a finished trial is read back, never rerun
    assert_trials_are_experiments(repo, after, "t")
    best = min((t for t in after if t.value is not None), key=lambda t: t.value)
    assert f"best: trial {best.number} (experiment t-{best.number}): validation_loss {best.value:.4f}" in resumed
    assert f"  dvc exp apply t-{best.number} && git add -A && git commit" in resumed
    listed = run(loravc_cmd("list"), repo).stdout
    assert all(f" t-{n} " in listed for n in (0, 2)) and " t-1 " not in listed
    assert git(repo, "status", "--porcelain") == ""  # trials ran in temporary copies: the workspace is as it was
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"  # (a kill during DVC's set-up is undone)


@pytest.mark.slow  # real trials: dvc exp run in a scratch repository (tests/conftest.py's rule)
def test_two_processes_share_one_sqlite_study(tmp_path: Path, built_repo_template: Path) -> None:
    repo = tune_repo(
        tmp_path / "repo", built_repo_template, {"study": "s", "storage": "sqlite:///shared.db", "pruner": "none"}
    )
    workers = [
        subprocess.Popen(loravc_cmd("tune", "--trials", "2"), cwd=repo, env=tool_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = trials_of(f"sqlite:///{repo / 'shared.db'}", "s")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]  # two asked for, two run: none twice
    assert {t.user_attrs["owner"]["pid"] for t in trials} == {w.pid for w in workers}  # one trial each
    assert trials[0].params != trials[1].params
    assert_trials_are_experiments(repo, trials, "s")


def test_bad_tune_params_stop_before_any_trial(tmp_path: Path, tiny_model_dir: Path) -> None:
    repo = make_repo(tmp_path / "repo", tiny_model_dir)
    update_params(repo / "params.yaml", {"tune": {"objective": "tuned_perplexity"}})
    result = run(loravc_cmd("tune"), repo, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: params.yaml: tune.objective: tuned_perplexity is a test metric")
    assert len(result.stderr.splitlines()) == 1
    assert not (repo / ".dvc" / "tmp" / "tune").exists() and experiments(repo) == {}


@pytest.mark.slow  # real trials: dvc exp run in a scratch repository (tests/conftest.py's rule)
def test_a_pruned_trial_stops_training_and_is_no_version(tmp_path: Path, built_repo_template: Path) -> None:
    repo = tune_repo(tmp_path / "repo", built_repo_template, {"study": "p", "trials": 3, "pruner": "median"})
    storage = str(repo / ".dvc" / "tmp" / "tune" / "p.journal")
    Path(storage).parent.mkdir(parents=True)
    study = optuna.create_study(study_name="p", storage=pruning.open_storage(storage))
    space = {"train.lora.r": optuna.distributions.CategoricalDistribution([2, 4]),
             LR: optuna.distributions.FloatDistribution(1.0e-3, 1.0e-2, log=True)}  # fmt: skip
    for r in (2, 4):  # two finished trials far better at both evaluations than the tiny model can be
        study.add_trial(optuna.trial.create_trial(
            params={"train.lora.r": r, LR: 2.0e-3}, distributions=space, value=0.1,
            intermediate_values={1: 0.2, 2: 0.1}, user_attrs={"experiment": f"elsewhere-{r}"},
        ))  # fmt: skip
    out = run(loravc_cmd("tune"), repo).stdout
    assert "trial 2: pruned at evaluation 2 (step 8): not a version" in out
    assert "study p: 3 finished trials (asked for 3)" in out and ": 2 complete, 1 pruned, 0 fail" in out
    pruned = trials_of(storage, "p")[2]
    assert pruned.state.name == "PRUNED" and sorted(pruned.intermediate_values) == [1, 2]
    log = (repo / ".dvc" / "tmp" / "tune" / "p" / "p-2.log").read_text()
    assert "error: tune study 'p' pruned trial 2 at evaluation 2 (step 8, validation loss" in log
    assert experiments(repo) == {}  # the stage failed on purpose: DVC saved nothing


def test_a_database_that_cannot_be_opened_is_one_error_without_its_password(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path, {"storage": "postgresql://tuner:s3cret@127.0.0.1:9/optuna"})
    tune, dims = check(repo / "params.yaml")
    with pytest.raises(UserError, match=r"^tune\.storage: postgresql://tuner:\*\*\*@127\.0\.0\.1:9/optuna ") as err:
        Study(repo, tune, dims)
    assert "s3cret" not in str(err.value)


def faked(study: Study, monkeypatch: pytest.MonkeyPatch, losses: dict[int, float]) -> list[list[str]]:
    """Trials that "run" instantly: trial n's experiment has validation loss losses[n]. Returns the overrides."""
    ran: list[list[str]] = []

    def run_trial(name: str, overrides: list[str], *rest: Any) -> int:
        ran.append(overrides)
        return 0

    def found(repo: Path, name: str) -> Any:
        number = int(name.rsplit("-", 1)[1])
        return (f"{number:040x}", {"validation_loss": losses[number]}, {}) if number in losses else None

    monkeypatch.setattr(study, "_dvc_exp_run", run_trial)
    monkeypatch.setattr("loravc.tune.study.experiment", found)
    return ran


def test_the_grid_tries_each_point_once_then_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = {"train.lora.r": {"choices": [2, 4]}, "train.lora.dropout": {"low": 0.0, "high": 0.1, "step": 0.05}}
    repo = fake_repo(tmp_path, {"study": "g", "sampler": "grid", "space": space})
    said: list[str] = []
    study = Study(repo, *check(repo / "params.yaml"), said.append)
    ran = faked(study, monkeypatch, {n: 2.0 - n / 10 for n in range(6)} | {3: float("nan")})
    study.run(Options(trials=50))
    assert ran == [[f"train.lora.r={r}", f"train.lora.dropout={d}"] for r in (2, 4) for d in (0.0, 0.05, 0.1)]
    assert said[-1] == "study g: every grid point is tried or being tried (5 finished)"
    assert "trial 3: validation_loss is nan: failed (experiment g-3 is kept)" in said
    states = [t.state.name for t in study.study.trials]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    study.run(Options(trials=50))  # nothing left: no trial is rerun (the failed NaN one neither)
    assert len(ran) == 6 and study.best().number == 5


def test_a_trial_whose_process_died_is_read_back_or_queued_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = fake_repo(tmp_path, {"study": "r", "sampler": "random", "space": {"train.lora.r": {"choices": [2, 4, 8]}}})
    said: list[str] = []
    study = Study(repo, *check(repo / "params.yaml"), said.append)
    dead = subprocess.Popen(["true"])
    dead.wait()
    for _ in (0, 1):  # two trials a killed loravc tune left running
        trial = study.study.ask()
        trial.suggest_categorical("train.lora.r", [2, 4, 8])
        trial.set_user_attr("owner", {"host": os.uname().nodename, "pid": dead.pid, "start": "1"})
    alive = study.study.ask()  # one another loravc tune of this machine still runs (this process)
    alive.suggest_categorical("train.lora.r", [2, 4, 8])
    alive.set_user_attr("owner", {"host": os.uname().nodename, "pid": os.getpid(), "start": None})
    ran = faked(study, monkeypatch, {0: 1.5, 3: 1.4})  # DVC saved trial 0's experiment before the kill
    study.recover(Options())
    assert said == [
        "trial 0: validation_loss 1.5000 (read back from the experiment DVC saved; experiment r-0)",
        "trial 1: cut off before DVC saved it; its params are queued again",
    ]
    trials = study.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "RUNNING", "WAITING"]
    study.trial(Options())  # the next trial is the cut-off point again
    assert ran == [[f"train.lora.r={trials[1].params['train.lora.r']}"]]
    assert study.study.trials[3].user_attrs["retry_of"] == 1 and study.study.trials[3].state.name == "COMPLETE"


def test_editing_the_tune_section_retrains_nothing(built_repo: Path) -> None:
    dropout = {"train.lora.dropout": {"low": 0.0, "high": 0.2}}
    update_params(built_repo / "params.yaml", {"tune": {"trials": 30, "sampler": "random", "space": dropout}})
    assert run(dvc_cmd("status"), built_repo).stdout.strip() == UP_TO_DATE
    check(built_repo / "params.yaml")  # and the edited section is a valid search


def test_a_kill_during_dvcs_set_up_of_a_trial_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dvc.utils.hydra import apply_overrides

    repo = fake_repo(tmp_path, {"study": "k", "sampler": "random", "space": {"train.lora.r": {"choices": [2, 16]}}})
    git(repo, "checkout", "-q", "-b", "main")
    git(repo, "add", "params.yaml")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params")
    committed = (repo / "params.yaml").read_bytes()
    said: list[str] = []
    study = Study(repo, *check(repo / "params.yaml"), said.append)
    trial = study.study.ask()
    r = trial.suggest_categorical("train.lora.r", [2, 16])
    trial.set_user_attr("owner", {"host": os.uname().nodename, "pid": 0, "start": None, "branch": "main"})
    # what `dvc exp run --temp` has done when a kill -9 stops it mid-set-up: HEAD detached, overrides staged
    git(repo, "checkout", "-q", "--detach")
    apply_overrides(repo / "params.yaml", [f"train.lora.r={r}"])
    git(repo, "add", "params.yaml")
    faked(study, monkeypatch, {})
    study.recover(Options())
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert (repo / "params.yaml").read_bytes() == committed
    assert said == [
        "trial 0: HEAD was left detached by DVC's set-up of the trial: back on main",
        "trial 0: params.yaml held the trial's overrides, left by DVC's set-up: restored",
        "trial 0: cut off before DVC saved it; its params are queued again",
    ]


def test_what_a_study_refuses_before_its_first_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = fake_repo(tmp_path, {"study": "c", "space": {"train.lora.r": {"choices": [2, 4]}}})
    with pytest.raises(UserError, match=r"^--push nowhere: no such git remote"):
        tune_study(repo, Options(push="nowhere"), lambda line: None)
    (tmp_path / "two").mkdir()
    two = params_with(tmp_path / "two", {})
    update_params(two, {"train": {"processes": 2}})
    with pytest.raises(UserError, match=r"tune\.pruner: median needs each evaluation's validation loss"):
        check(two)
    (repo / "data" / "mine").mkdir(parents=True)
    (repo / "data" / "mine" / "train.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match=r"^data\.train \(data/mine\) holds files git does not track"):
        check_data_committed(repo, "data/mine", [])
    check_data_committed(repo, "data/mine", ["data/mine"])  # copied into each trial: fine

    study = Study(repo, *check(repo / "params.yaml"), lambda line: None)
    monkeypatch.setattr(study.git, "experiments", lambda: {"c-7": "0" * 40})  # left by an older study
    with pytest.raises(UserError, match=r"^experiment c-7 exists but study 'c' .* has no trial 7"):
        study.check_names()
    update_params(repo / "params.yaml", {"tune": {"space": {"train.lora.r": {"choices": [2, 4, 8]}}}})
    with pytest.raises(UserError, match=r"^tune\.space differs from the space study 'c' was started with"):
        Study(repo, *check(repo / "params.yaml"), lambda line: None)


def test_processes_sharing_a_database_get_different_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = {}
    for storage in (None, f"sqlite:///{tmp_path / 'db.sqlite'}"):
        (tmp_path / str(len(seeds))).mkdir()
        repo = fake_repo(tmp_path / str(len(seeds)), {"storage": storage})
        study = Study(repo, *check(repo / "params.yaml"), lambda line: None)
        for pid in (1000, 1001):  # neighbouring pids asking with the same number of trials
            monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
            seeds[(storage is None, pid)] = study._seed()
    assert seeds[(True, 1000)] == seeds[(True, 1001)] == 42  # the journal: tune.seed + trials so far
    assert seeds[(False, 1000)] != seeds[(False, 1001)]
