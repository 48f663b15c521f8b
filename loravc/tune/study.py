"""`loravc tune`: a hyperparameter search with Optuna in which every trial is a DVC experiment.

The search space, objective, sampler and pruner are params.yaml's `tune` section (loravc.params.
TuneParams), which no stage reads. Everything is checked before the first trial: each knob names a
params.yaml key (or a trl.SFTConfig setting under train.trainer) and each of its bounds and choices
is a valid value there; the objective is a validation metric the pipeline writes, never a test metric
(loravc.tune.space).

Each trial is `dvc exp run --temp -n <study>-<number> -S key=value ...`: DVC runs the pipeline in a
temporary copy of the repository (git-tracked files and DVC-tracked data; the workspace is left
alone) and saves the experiment, so every finished trial is a version that `dvc exp show`, `loravc
list/compare` and `dvc exp apply` understand. The study lives in Optuna's storage (a journal file
under .dvc/tmp/tune/, or a database several machines share; loravc.tune.storage): rerunning `loravc tune`
continues it, and a trial cut off by a kill is read back from its experiment when that was saved, else run
again with the same params (loravc.tune.liveness, loravc.tune.workspace). The train stage of a trial reports
each evaluation to the study (loravc.train.pruning), which may prune it: DVC then saves nothing for it.
"""

import hashlib
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.tools import dvc_cmd, tool_env
from loravc.params import load_params
from loravc.train import pruning
from loravc.tune import leftovers, workspace
from loravc.tune.liveness import alive, heartbeat, started
from loravc.tune.params import TuneParams
from loravc.tune.space import Dimension, check
from loravc.tune.storage import make_sampler, open_study_storage, require_optuna, shown, storage_of
from loravc.tune.summary import summary
from loravc.tune.trials import check_data_committed, experiment, trial_name
from loravc.versions.gitrepo import GitRepo


@dataclass
class Options:
    trials: int | None = None  # finished trials the study is to hold (None: tune.trials)
    timeout: float | None = None
    push: str | None = None  # a git remote to `dvc exp push` each finished trial to
    copy_paths: tuple[str, ...] = ()
    clean: bool = False  # only settle the trials of ended processes and remove what they left; start none


class Study:
    """One `loravc tune` process working on a study (alone, or beside others sharing its storage)."""

    def __init__(self, repo: Path, tune: TuneParams, dims: list[Dimension], say: Callable[[str], None] = print):
        optuna = self._optuna = require_optuna()
        self.repo, self.tune, self.dims, self.say = repo, tune, dims, say
        self.git = GitRepo(repo)
        self.storage_spec = storage_of(tune, repo)
        self.database = "://" in self.storage_spec
        self.shown_storage = shown(self.storage_spec)  # no password
        self.logs = repo / ".dvc" / "tmp" / "tune" / tune.study
        if not self.database:
            Path(self.storage_spec).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.storage = open_study_storage(self.storage_spec)
            self.study = optuna.create_study(
                study_name=tune.study,
                storage=self.storage,
                direction=tune.direction,
                pruner=pruning.make_pruner(tune.pruner),
                load_if_exists=True,
            )
        except ImportError as err:
            raise UserError(
                f"tune.storage: {self.shown_storage} needs a database driver that is not installed ({err}): "
                "pip install psycopg2-binary for PostgreSQL, pymysql for MySQL (mysql+pymysql://...)"
            ) from None
        except Exception as err:  # SQLAlchemy's OperationalError: no such host, a refused password, ...
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"tune.storage: cannot open {self.shown_storage}: {first}") from None
        self.states = optuna.trial.TrialState
        saved = self.study.user_attrs.get("space")
        space = {d.key: d.knob.__dict__ for d in dims}
        if saved is not None and saved != space:
            raise UserError(
                f"tune.space differs from the space study {tune.study!r} was started with ({self.shown_storage}): "
                "restore it, or name a new study in tune.study"
            )
        self.study.set_user_attr("space", space)

    def name(self, number: int) -> str:
        return trial_name(self.tune.study, number)

    def trials(self, *states: Any) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=states)

    def check_names(self) -> None:
        """Every experiment named <study>-<n> belongs to a trial of this study (a new storage beside old
        experiments would otherwise fail on the first name DVC already has)."""
        numbers = {t.number for t in self.study.get_trials(deepcopy=False)}
        prefix = f"{self.tune.study}-"
        for name in self.git.experiments():
            rest = name[len(prefix) :]
            if name.startswith(prefix) and rest.isdigit() and int(rest) not in numbers:
                raise UserError(
                    f"experiment {name} exists but study {self.tune.study!r} ({self.shown_storage}) has no trial "
                    f"{rest}: name a new study in tune.study, or remove the old trials (dvc exp remove {name} ...)"
                )

    def recover(self, options: Options) -> None:
        """Settle trials left running by a `loravc tune` of this machine that has ended: read back from the
        experiment DVC saved for them, else failed and their params queued again. (With a database, a trial
        of any machine whose heartbeat stopped is failed and queued again by Optuna: `fail_stale`.)"""
        self.fail_stale()
        for trial in self.trials(self.states.RUNNING):
            owner = trial.user_attrs.get("owner")
            if owner is None:  # between ask and the owner's record: a moment, unless that process died there
                asked = trial.datetime_start
                if asked is None or (datetime.now() - asked).total_seconds() < 60 or self.database:
                    continue
            elif owner.get("host") != socket.gethostname() or alive(owner.get("pid"), owner.get("start")):
                continue
            elif owner.get("child") and alive(owner["child"], owner.get("child_start")):
                self.say(f"trial {trial.number}: its loravc tune ended but its dvc exp run (pid {owner['child']}) "
                         "still runs; it is settled by the next loravc tune after that ends")  # fmt: skip
                continue
            name = self.name(trial.number)
            found = experiment(self.git, name)
            value = found[1].get(self.tune.objective) if found else None
            if found and value is not None:
                self.settle(trial, found, value, options, "read back from the experiment DVC saved")
                continue
            self.repair_workspace(trial)
            self.study.tell(trial.number, state=self.states.FAIL, skip_if_finished=True)
            self.requeue(trial)
            self.say(f"trial {trial.number}: cut off before DVC saved it; its params are queued again")

    def ended(self, trial: Any) -> bool:
        """Whether every process of this machine that ran `trial` has ended: its loravc tune and its dvc exp run."""
        owner = trial.user_attrs.get("owner")
        if not owner or owner.get("host") != socket.gethostname() or alive(owner.get("pid"), owner.get("start")):
            return False
        return not (owner.get("child") and alive(owner["child"], owner.get("child_start")))

    def remove_leftovers(self) -> int:
        """Remove what the killed `dvc exp run --temp` of a trial left (loravc.tune.leftovers): DVC's record of the
        run, which `dvc exp show` lists as Running, and its temporary copy. Only runs of this study's trials whose
        processes have all ended, never one a live process (a concurrent loravc tune) may still use."""
        trials = {self.name(t.number): t for t in self.study.get_trials(deepcopy=False)}
        removed = 0
        for run in leftovers.unfinished(self.repo):
            trial = trials.get(run.name)
            if trial is None or not self.ended(trial):
                continue
            size, copy = leftovers.remove(self.repo, run), run.copy.relative_to(self.repo.resolve())
            removed += 1
            self.say(f"trial {trial.number}: removed what its killed dvc exp run left: DVC's record of it (Running in "
                     f"dvc exp show) and its temporary copy {copy} ({size / 1e6:.1f} MB)")  # fmt: skip
        return removed

    def repair_workspace(self, trial: Any) -> None:
        """Undo what a kill -9 during DVC's set-up of `trial` left in the workspace (loravc.tune.workspace)."""
        overrides = [d.override(trial.params[d.key]) for d in self.dims if d.key in trial.params]
        branch = trial.user_attrs.get("owner", {}).get("branch")
        workspace.repair_workspace(self.repo, self.git, trial.number, branch, overrides, self.say)

    def fail_stale(self) -> None:
        """With a database: fail (and queue again, once) the trials whose heartbeat stopped, on any machine."""
        if self.database:
            self._optuna.storages.fail_stale_trials(self.study)

    def requeue(self, trial: Any) -> None:
        """Run the point of a trial that was cut off again (the grid finds untried points itself)."""
        if self.tune.sampler != "grid":
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

    def settle(self, trial: Any, found: tuple[str, dict[str, Any], dict[str, Any]], value: Any, options: Options,
               how: str) -> None:  # fmt: skip
        """Tell the study a trial's objective from its experiment (a NaN fails it), and push the experiment."""
        commit, _, test = found
        name = self.name(trial.number)
        for key, attr in (("experiment", name), ("commit", commit), ("test", test)):
            self.storage.set_trial_user_attr(trial._trial_id, key, attr)
        if not isinstance(value, int | float) or not math.isfinite(value):
            self.study.tell(trial.number, state=self.states.FAIL, skip_if_finished=True)
            self.say(f"trial {trial.number}: {self.tune.objective} is {value}: failed (experiment {name} is kept)")
            return
        self.study.tell(trial.number, value, skip_if_finished=True)
        self.say(f"trial {trial.number}: {self.tune.objective} {value:.4f} ({how}; experiment {name})")
        if options.push:
            pushed = subprocess.run(dvc_cmd("exp", "push", options.push, name), cwd=self.repo, env=tool_env(),
                                    capture_output=True, text=True)  # fmt: skip
            if pushed.returncode != 0:
                last = (pushed.stderr or pushed.stdout).strip().splitlines()[-1:] or ["no output"]
                raise UserError(f"dvc exp push {options.push} {name} failed ({last[0]}); the trial is finished and "
                                f"kept: push it later with `dvc exp push {options.push} {name}`")  # fmt: skip

    def next_point(self) -> dict[str, Any] | None:
        """The grid's first point that no trial has tried or is trying (None: every point has been). A trial
        cut off before DVC saved it did not try its point; one that failed with an experiment (a NaN) did."""
        states = (self.states.COMPLETE, self.states.PRUNED, self.states.RUNNING, self.states.FAIL)
        taken = {
            json.dumps(t.params, sort_keys=True)
            for t in self.trials(*states)
            if t.state != self.states.FAIL or "experiment" in t.user_attrs
        }
        for values in itertools.product(*(d.grid() for d in self.dims)):
            point = dict(zip((d.key for d in self.dims), values, strict=True))
            if json.dumps(point, sort_keys=True) not in taken:
                return point
        return None

    def run(self, options: Options) -> None:
        self.recover(options)
        self.remove_leftovers()
        self.check_names()
        wanted = options.trials or self.tune.trials
        begun = time.monotonic()
        while True:
            self.fail_stale()
            done = len(self.trials(self.states.COMPLETE, self.states.PRUNED))
            running = len(self.trials(self.states.RUNNING))
            if done + running >= wanted:  # trials other processes run count: no more than asked for
                also = f", {running} still running in other processes" if running else ""
                self.say(f"study {self.tune.study}: {done} finished trials (asked for {wanted}){also}")
                return
            if options.timeout is not None and time.monotonic() - begun > options.timeout:
                self.say(f"study {self.tune.study}: --timeout {options.timeout:g} s reached; {done} finished trials")
                return
            point = self.next_point() if self.tune.sampler == "grid" else None
            if self.tune.sampler == "grid" and point is None:
                self.say(f"study {self.tune.study}: every grid point is tried or being tried ({done} finished)")
                return
            self.trial(options, point)

    def _seed(self) -> int:
        """The sampler's seed for the next trial: tune.seed plus the trials so far, so a resumed study does
        not propose its first points again; with a database storage several processes share the study, so
        each mixes in its process id (they would otherwise propose the same points)."""
        seed = self.tune.seed + len(self.study.get_trials(deepcopy=False))
        if not self.database:
            return seed
        mixed = hashlib.sha256(f"{seed} {os.getpid()}".encode()).digest()  # not seed + pid: neighbours collide
        return int.from_bytes(mixed[:4], "big")

    def trial(self, options: Options, point: dict[str, Any] | None = None) -> None:
        self.study.sampler = make_sampler(self.tune, self._seed(), point)
        trial = self.study.ask()
        branch = self.git.git("symbolic-ref", "-q", "--short", "HEAD", check=False).strip()
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "start": started(os.getpid()), "branch": branch}
        trial.set_user_attr("owner", owner)
        values = {d.key: d.suggest(trial) for d in self.dims}
        name = self.name(trial.number)
        overrides = [d.override(values[d.key]) for d in self.dims]
        self.say(f"trial {trial.number}: {' '.join(overrides)} -> dvc exp run --temp -n {name}")
        spec = pruning.TrialSpec(self.storage_spec, self.tune.study, trial._trial_id, trial.number, self.tune.pruner)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        start = time.monotonic()
        try:
            with heartbeat(self.storage, trial._trial_id):
                rc = self._dvc_exp_run(name, overrides, spec, options, log, owner, trial)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the trial's dvc exp run was stopped too
            self.study.tell(trial, state=self.states.FAIL, skip_if_finished=True)
            self.requeue(trial)
            self.say(f"trial {trial.number}: interrupted; its params are queued again (rerun loravc tune to go on)")
            raise
        took = _minutes(time.monotonic() - start)
        found = experiment(self.git, name) if rc == 0 else None
        value = found[1].get(self.tune.objective) if found else None
        if found and value is not None:
            self.settle(trial, found, value, options, took)
            return
        pruned = self.storage.get_trial(trial._trial_id).user_attrs.get("pruned")
        if pruned:
            self.study.tell(trial, state=self.states.PRUNED)
            self.say(f"trial {trial.number}: pruned at evaluation {pruned['evaluation']} (step {pruned['step']}): "
                     f"not a version ({took}; log {log.relative_to(self.repo)})")  # fmt: skip
            return
        self.study.tell(trial, state=self.states.FAIL)
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise UserError(
            f"trial {trial.number} failed (dvc exp run exited {rc}; log {log.relative_to(self.repo)}):\n{tail}\n"
            "fix the cause and rerun `loravc tune`: the finished trials are kept"
        )

    def _dvc_exp_run(self, name: str, overrides: list[str], spec: Any, options: Options, log: Path,
                     owner: dict[str, Any], trial: Any) -> int:  # fmt: skip
        args = ["exp", "run", "--temp", "-n", name]
        for override in overrides:
            args += ["-S", override]
        for path in options.copy_paths:
            args += ["--copy-paths", path]
        env = tool_env({pruning.ENV: spec.dumps()})
        with log.open("w", encoding="utf-8") as out:
            child = subprocess.Popen(dvc_cmd(*args), cwd=self.repo, env=env, stdout=out, stderr=subprocess.STDOUT)
            trial.set_user_attr("owner", {**owner, "child": child.pid, "child_start": started(child.pid)})
            try:
                return child.wait()
            except BaseException:  # Ctrl-C or SIGTERM (see `tune`): stop the trial's run too
                child.send_signal(signal.SIGINT)
                child.wait()
                raise

    def best(self) -> Any | None:
        return self.study.best_trial if self.trials(self.states.COMPLETE) else None


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def tune(repo: Path, options: Options, say: Callable[[str], None] = print) -> Study:
    """Check everything, then run the study until it holds the trials asked for; print the summary. With
    `options.clean`, only settle the trials whose processes ended and remove what they left."""
    params = load_params(repo / "params.yaml")
    tune_params, dims = check(repo / "params.yaml", params)
    if options.clean:
        study = Study(repo, tune_params, dims, say)
        study.recover(options)
        if not study.remove_leftovers():
            say(f"study {tune_params.study}: no killed trial left a DVC run behind")
        return study
    check_data_committed(repo, params.data.train, list(options.copy_paths))
    if options.push and not GitRepo(repo).git("remote", "get-url", options.push, check=False).strip():
        raise UserError(f"--push {options.push}: no such git remote (`git remote -v` lists them)")
    study = Study(repo, tune_params, dims, say)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a plain `kill` stops the running trial as Ctrl-C does
    try:
        study.run(options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    trials = study.study.get_trials(deepcopy=False)
    for line in summary(tune_params, study.shown_storage, trials, study.best(), dims):
        say(line)
    return study
