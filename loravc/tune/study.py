"""`loravc tune`: a hyperparameter search with Optuna in which every trial is a DVC experiment.

The search space, objective, sampler and pruner are params.yaml's `tune` section (loravc.params.
TuneParams), which no stage reads. Everything is checked before the first trial: each knob names a
params.yaml key (or a trl.SFTConfig setting under train.trainer) and each of its bounds and choices
is a valid value there; the objective is a validation metric the pipeline writes, never a test metric.

Each trial is `dvc exp run --temp -n <study>-<number> -S key=value ...`: DVC runs the pipeline in a
temporary copy of the repository (git-tracked files and DVC-tracked data; the workspace is left
alone) and saves the experiment, so every finished trial is a version that `dvc exp show`, `loravc
list/compare` and `dvc exp apply` understand. The study lives in Optuna's storage (a journal file
under .dvc/tmp/tune/, or a database several machines share): rerunning `loravc tune` continues it,
and a trial cut off by a kill is read back from its experiment when that was saved, else run again
with the same params. The train stage of a trial reports each evaluation to the study
(loravc.train.pruning), which may prune it: DVC then saves nothing for it.
"""

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.schema import build, flatten, read_yaml
from loravc.core.tools import dvc_cmd, tool_env
from loravc.params import Params, load_params
from loravc.train import pruning
from loravc.train.lora import LoraParams
from loravc.tune.params import Knob, TuneParams
from loravc.versions.gitrepo import GitRepo

TRAIN_METRICS = "dvclive/train/metrics.json"
TEST_METRICS = "dvclive/evaluate/metrics.json"
# What the train stage writes to TRAIN_METRICS, and on which data; only validation metrics can be objectives.
VALIDATION_METRICS = {"validation_loss": "minimize"}  # and the direction each is better in
TRAIN_ONLY = {"train_loss", "train_tokens", "train_seconds", "steps", "epochs"}


PRIMITIVE = (bool, int, float, str, type(None))  # what Optuna stores as a categorical choice
STARTUP_TRIALS = 4  # TPE's random trials before it models the results (Optuna's default 10 exceeds small studies)


@dataclass(frozen=True)
class Dimension:
    """One knob of the search: a params.yaml key, its kind (int, float or choice) and its range."""

    key: str
    kind: str  # "int", "float" or "choice"
    knob: Knob
    in_params: bool  # False: a train.trainer key params.yaml does not list (`-S +key=value`)

    @property
    def labels(self) -> list[Any] | None:
        """The choices as Optuna stores them: as they are, or as JSON text when one is a list or a mapping."""
        choices = self.knob.choices
        if choices is None or all(isinstance(c, PRIMITIVE) for c in choices):
            return choices
        return [json.dumps(c) for c in choices]

    def suggest(self, trial: Any) -> Any:
        """This knob's value for `trial`, as Optuna records it (a JSON label for a list or mapping choice)."""
        k = self.knob
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.labels)
        assert k.low is not None and k.high is not None  # Knob.check: a range has both
        if self.kind == "int":
            return trial.suggest_int(self.key, int(k.low), int(k.high), step=int(k.step or 1), log=k.log)
        return trial.suggest_float(self.key, k.low, k.high, step=k.step, log=k.log)

    def value(self, recorded: Any) -> Any:
        """The params.yaml value of a value Optuna recorded for this knob."""
        choices, labels = self.knob.choices, self.labels
        if choices is None or labels is None or labels is choices:
            return recorded
        return choices[labels.index(recorded)]

    def grid(self) -> list[Any]:
        """Every value of the knob as Optuna records it, for the grid sampler."""
        k = self.knob
        if k.choices is not None:
            return list(self.labels or [])
        if k.step is None:
            raise UserError(f"tune.space.{self.key}: the grid sampler needs choices, or a range with a step")
        assert k.low is not None and k.high is not None
        count = int((k.high - k.low) / k.step + 1e-9) + 1
        values = [k.low + i * k.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def override(self, recorded: Any) -> str:
        """The `dvc exp run -S` override setting this knob (Hydra's syntax; `+` for a key params.yaml lacks)."""
        return f"{'' if self.in_params else '+'}{self.key}={_hydra(self.value(recorded))}"


def _hydra(value: Any) -> str:
    """A value in Hydra's override syntax, read back by DVC as the same YAML type (strings always quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return f"'{text}'" if "'" not in text and "\\" not in text else json.dumps(text)


# --- checks before any trial -----------------------------------------------------------------------
def check(params_path: Path, params: Params | None = None) -> tuple[TuneParams, list[Dimension]]:
    """Check params.yaml's tune section (`params`: the file already loaded) against the pipeline; a
    UserError names the key."""
    params = params or load_params(params_path)
    tune = params.tune
    raw = read_yaml(params_path)
    raw.pop("tune", None)
    flat = flatten(raw)
    try:
        dims = [_dimension(key, knob, raw, flat) for key, knob in tune.space.items()]
        check_objective(tune.objective, tune.direction)
        if tune.pruner != "none" and params.train.processes > 1:
            raise UserError(
                f"tune.pruner: {tune.pruner} needs each evaluation's validation loss, which train reports from "
                "one process only: set tune.pruner: none, or train.processes: 1"
            )
        if tune.sampler == "grid":
            for dim in dims:
                dim.grid()
    except UserError as err:
        raise UserError(f"{params_path}: {err}") from None
    return tune, dims


def _dimension(key: str, knob: Knob, raw: dict[str, Any], flat: dict[str, Any]) -> Dimension:
    where = f"tune.space.{key}"
    if key.startswith("tune.") or key == "tune":
        raise UserError(f"{where}: the tune section is not a knob of the pipeline")
    # keys of the free-form blocks: any trl.SFTConfig setting, any peft.LoraConfig option (a `+` override)
    trainer_key = key.startswith("train.trainer.") and key.count(".") == 2
    lora_key = key.startswith("train.lora.") and key.count(".") == 2
    if key not in flat and not (trainer_key or lora_key):
        if any(k.startswith(key + ".") for k in flat):
            raise UserError(f"{where}: {key} is a section of params.yaml; name one of its keys")
        close = difflib.get_close_matches(key, list(flat), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"{where}: {key} is not a params.yaml key{hint}")
    declared = _declared_type(key)
    if trainer_key and declared is None:
        from loravc.train.preflight import check_trainer_types

        check_trainer_types({key.split(".")[2]: None})  # not a trl.SFTConfig setting: an error naming it
    if lora_key and declared is None:
        from loravc.train.lora import check_lora_keys

        try:
            check_lora_keys(LoraParams(options={key.split(".")[2]: None}))  # not a LoraConfig option: naming it
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    for name in ("low", "high", "step"):
        value = getattr(knob, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: {name} must be a finite number, got {value}")
    if knob.choices is not None:
        kind = "choice"
    elif declared is int:
        kind = "int"
        for name in ("low", "high", "step"):
            value = getattr(knob, name)
            if value is not None and value != int(value):
                raise UserError(f"{where}: {key} is an integer, so {name} must be one, got {value}")
    elif declared is float:
        kind = "float"
    else:
        shown = getattr(declared, "__name__", str(declared))
        raise UserError(f"{where}: {key} is not a number ({shown}): give a list of choices")
    values = knob.choices if knob.choices is not None else [knob.low, knob.high]
    for value in values:
        _check_value(raw, key, int(value) if kind == "int" else value, where)
    return Dimension(key, kind, knob, key in flat)


def _declared_type(key: str) -> Any:
    """The type a params.yaml key is declared with: its Params field's, or trl.SFTConfig's for train.trainer.*
    (Optional[X] is X; a bool is no number)."""
    if key.startswith("train.trainer."):
        from loravc.train.preflight import sft_config_types

        hint = sft_config_types().get(key.split(".")[2])
    elif key.startswith("train.lora.") and key.split(".")[2] not in typing.get_type_hints(LoraParams):
        from peft import LoraConfig

        hint = typing.get_type_hints(LoraConfig).get(key.split(".")[2])
    else:
        hint: Any = Params
        for part in key.split("."):
            hint = typing.get_type_hints(hint).get(part) if dataclasses.is_dataclass(hint) else None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    return hint


def _check_value(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    """`value` at `key` makes a valid params.yaml (as loravc.params checks it), else a UserError."""
    doc = copy.deepcopy(raw)
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    try:
        params = build(Params, doc, "")
        if key.startswith("train.trainer."):
            from loravc.train.preflight import check_trainer_types

            check_trainer_types(params.train.trainer)
        if key.startswith("train.lora."):
            from loravc.train.lora import check_lora_keys

            check_lora_keys(params.train.lora)
    except UserError as err:
        raise UserError(f"{where}: {value!r} is not a valid value: {err}") from None


def check_objective(metric: str, direction: str) -> None:
    """A UserError unless `metric` is a validation metric the pipeline writes (not a train or test one),
    optimized in the direction it is better in."""
    if metric in VALIDATION_METRICS:
        best = VALIDATION_METRICS[metric]
        if direction != best:
            lower = "lower" if best == "minimize" else "higher"
            raise UserError(f"tune.direction: {metric} is better when {lower}: set tune.direction: {best}")
        return
    if metric in TRAIN_ONLY:
        raise UserError(f"tune.objective: {metric} is measured on the training data, not a validation split; "
                        "the validation metric is validation_loss")  # fmt: skip
    test = ("base_", "tuned_", "perplexity", "_gain", "task_records")
    if any(part in metric for part in test):
        raise UserError(f"tune.objective: {metric} is a test metric ({TEST_METRICS}): tuning on the test split "
                        "would overstate every result; the validation metric is validation_loss")  # fmt: skip
    raise UserError(f"tune.objective: the pipeline writes no metric {metric!r}; the validation metric is "
                    "validation_loss")  # fmt: skip


def storage_of(tune: TuneParams, repo: Path) -> str:
    """The study's storage: a journal file's absolute path or a database URL."""
    if tune.storage is None:
        return str((repo / ".dvc" / "tmp" / "tune" / f"{tune.study}.journal").resolve())
    if "://" in tune.storage:
        scheme = tune.storage.split("://", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "mysql"):
            raise UserError(f"tune.storage: {scheme}:// is not a database Optuna supports (sqlite, postgresql, mysql)")
        relative = tune.storage.split(":///", 1)[1] if scheme == "sqlite" and ":///" in tune.storage else None
        if relative and not relative.startswith("/"):  # the trials' train stages run in other directories
            return f"{tune.storage.split(':///', 1)[0]}:///{(repo / relative).resolve()}"
        return tune.storage
    return str((repo / tune.storage).resolve())


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


# --- the study --------------------------------------------------------------------------------------
@dataclass
class Options:
    trials: int | None = None  # finished trials the study is to hold (None: tune.trials)
    timeout: float | None = None
    push: str | None = None  # a git remote to `dvc exp push` each finished trial to
    copy_paths: tuple[str, ...] = ()


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("loravc tune needs Optuna: pip install -e '.[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats with ask-and-tell (this module records them itself) are marked experimental: not news to a user
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def open_study_storage(storage: str) -> Any:
    """The storage `loravc tune` works on. A database records a heartbeat for each running trial: one
    silent for 3 minutes (its process or machine died) is failed and its params run again, once, by the
    next process that asks for a trial. Two processes creating a new database's tables at once: the
    loser retries."""
    import optuna

    if "://" not in storage:
        return pruning.open_storage(storage)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    attempt = 0
    while True:
        try:
            return optuna.storages.RDBStorage(
                storage, heartbeat_interval=60, grace_period=180, heartbeat_stale_trial_callback=retry
            )
        except Exception as err:
            attempt += 1
            racing = "IntegrityError" in type(err).__name__ or "already exists" in str(err)
            if not racing or attempt == 5:
                raise
            time.sleep(attempt)


def make_sampler(tune: TuneParams, seed: int, point: dict[str, Any] | None = None) -> Any:
    """The sampler of one trial; for the grid, a sampler fixed to `point` (the next untried one)."""
    import optuna

    if tune.sampler == "grid":
        return optuna.samplers.PartialFixedSampler(point or {}, optuna.samplers.RandomSampler(seed=seed))
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS)


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


class Study:
    """One `loravc tune` process working on a study (alone, or beside others sharing its storage)."""

    def __init__(self, repo: Path, tune: TuneParams, dims: list[Dimension], say: Callable[[str], None] = print):
        optuna = self._optuna = require_optuna()
        self.repo, self.tune, self.dims, self.say = repo, tune, dims, say
        self.git = GitRepo(repo)
        self.storage_spec = storage_of(tune, repo)
        self.database = "://" in self.storage_spec
        self.shown_storage = re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", self.storage_spec)  # no password
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
        return f"{self.tune.study}-{number}"

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
                started = trial.datetime_start
                if started is None or (datetime.now() - started).total_seconds() < 60 or self.database:
                    continue
            elif owner.get("host") != socket.gethostname() or _alive(owner.get("pid"), owner.get("start")):
                continue
            elif owner.get("child") and _alive(owner["child"], owner.get("child_start")):
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

    def repair_workspace(self, trial: Any) -> None:
        """Undo what a kill -9 during DVC's set-up of a trial leaves behind: DVC detaches HEAD and writes the
        trial's overrides into params.yaml (staged) before it stashes them, and restores both after. Each is
        restored only when it is exactly that state, never a change of the user's."""
        git, number = self.git, trial.number
        lock = self.repo / git.git("rev-parse", "--git-path", "index.lock").strip()
        if stale_lock(lock):  # the killed git of DVC's set-up held it; git refuses to run while it exists
            lock.unlink(missing_ok=True)
            self.say(f"trial {number}: removed .git/index.lock, left by a git process killed with the trial")
        branch = trial.user_attrs.get("owner", {}).get("branch")
        detached = git.git("symbolic-ref", "-q", "HEAD", check=False).strip() == ""
        if branch and detached and git.commit_of(f"refs/heads/{branch}") == git.head():
            git.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            self.say(f"trial {number}: HEAD was left detached by DVC's set-up of the trial: back on {branch}")
        head, params = git.head(), self.repo / "params.yaml"
        committed = git.read_blob(head, "params.yaml") if head else None
        if committed is None or not params.exists() or params.read_bytes() == committed:
            return
        from dvc.utils.hydra import apply_overrides

        with tempfile.TemporaryDirectory() as scratch:
            expected = Path(scratch) / "params.yaml"
            expected.write_bytes(committed)
            apply_overrides(expected, [d.override(trial.params[d.key]) for d in self.dims if d.key in trial.params])
            left_by_dvc = params.read_bytes() == expected.read_bytes()
        if left_by_dvc:
            git.git("reset", "-q", "--", "params.yaml")
            params.write_bytes(committed)
            self.say(f"trial {number}: params.yaml held the trial's overrides, left by DVC's set-up: restored")

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
        self.check_names()
        wanted = options.trials or self.tune.trials
        started = time.monotonic()
        while True:
            self.fail_stale()
            done = len(self.trials(self.states.COMPLETE, self.states.PRUNED))
            running = len(self.trials(self.states.RUNNING))
            if done + running >= wanted:  # trials other processes run count: no more than asked for
                also = f", {running} still running in other processes" if running else ""
                self.say(f"study {self.tune.study}: {done} finished trials (asked for {wanted}){also}")
                return
            if options.timeout is not None and time.monotonic() - started > options.timeout:
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
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "start": _started(os.getpid()), "branch": branch}
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
            trial.set_user_attr("owner", {**owner, "child": child.pid, "child_start": _started(child.pid)})
            try:
                return child.wait()
            except BaseException:  # Ctrl-C or SIGTERM (see `tune`): stop the trial's run too
                child.send_signal(signal.SIGINT)
                child.wait()
                raise

    def best(self) -> Any | None:
        return self.study.best_trial if self.trials(self.states.COMPLETE) else None


@contextmanager
def heartbeat(storage: Any, trial_id: int) -> Iterator[None]:
    """While a trial runs, record its heartbeat in a database storage every interval (as Optuna's own
    optimize loop does), so other processes can tell a running trial from one whose process died."""
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            with suppress(Exception):  # a database hiccup: the next beat tries again (3 missed ones fail the trial)
                storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _started(pid: int) -> str | None:
    """When process `pid` started (field 22 of /proc/<pid>/stat, in clock ticks since boot): with the pid,
    it names one process, even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, started: str | None) -> bool:
    """Whether the process that had `pid` and start time `started` still runs."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError, ValueError):
        return False
    return started is None or _started(pid) == started


def stale_lock(path: Path, wait: float = 2.0, old: float = 60.0) -> bool:
    """Whether a git lock file is left over: it exists, no process has it open, and the same file (inode and
    mtime) stays for `wait` seconds (a live git holds its lock moments at a time). Without /proc to look in,
    only a lock `old` seconds old."""
    try:
        first = path.stat()
    except OSError:
        return False
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return time.time() - first.st_mtime > old
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _opened(path, proc):
            return False
        time.sleep(0.1)
    try:
        last = path.stat()
    except OSError:
        return False
    return (last.st_ino, last.st_mtime_ns) == (first.st_ino, first.st_mtime_ns) and not _opened(path, proc)


def _opened(path: Path, proc: Path) -> bool:
    """Whether any process we can see has `path` open."""
    target = str(path.resolve())
    for fd_dir in proc.glob("[0-9]*/fd"):
        with suppress(OSError):
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                return True
    return False


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def summary(study: Study) -> list[str]:
    """The closing lines: the trials' outcome, the best trial with its test metrics, how to promote it."""
    tune, states = study.tune, study.states
    trials = study.study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in (states.COMPLETE, states.PRUNED, states.FAIL)}
    lines = [f"study {tune.study} ({study.shown_storage}): " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    best = study.best()
    if best is None:
        return [*lines, "no finished trial yet"]
    name = best.user_attrs.get("experiment", study.name(best.number))
    dims = {d.key: d for d in study.dims}
    params = " ".join(f"{k}={_hydra(dims[k].value(v))}" for k, v in best.params.items())
    lines.append(f"best: trial {best.number} (experiment {name}): {tune.objective} {best.value:.4f}; {params}")
    test = best.user_attrs.get("test", {})
    shown = [k for k in ("tuned_perplexity", "tuned_exact_match", "tuned_f1", "tuned_chrf") if k in test]
    if shown:
        lines.append("  its test metrics, for information only (the study never saw them): "
                     + ", ".join(f"{k} {test[k]:.4g}" for k in shown))  # fmt: skip
    lines += [
        "promote it:",
        f"  dvc exp apply {name} && git add -A && git commit -m {shlex.quote('Tuned: ' + params)}",
        f"  or register it as it is: loravc register {name} --version vX.Y.Z",
    ]
    return lines


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def tune(repo: Path, options: Options, say: Callable[[str], None] = print) -> Study:
    """Check everything, then run the study until it holds the trials asked for; print the summary."""
    params = load_params(repo / "params.yaml")
    tune_params, dims = check(repo / "params.yaml", params)
    check_data_committed(repo, params.data.train, list(options.copy_paths))
    if options.push and not GitRepo(repo).git("remote", "get-url", options.push, check=False).strip():
        raise UserError(f"--push {options.push}: no such git remote (`git remote -v` lists them)")
    study = Study(repo, tune_params, dims, say)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a plain `kill` stops the running trial as Ctrl-C does
    try:
        study.run(options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    for line in summary(study):
        say(line)
    return study
