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
(loravc.pruning), which may prune it: DVC then saves nothing for it.
"""

import difflib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc import pruning
from loravc.errors import UserError
from loravc.gitrepo import GitRepo
from loravc.params import TRAINER_DEFAULTS, Knob, Params, TuneParams, load_params
from loravc.project import dvc_cmd, tool_env
from loravc.refs import EXP_REF_RE
from loravc.schema import build, flatten, read_yaml

TRAIN_METRICS = "dvclive/train/metrics.json"
TEST_METRICS = "dvclive/evaluate/metrics.json"
# What the train stage writes to TRAIN_METRICS, and on which data; only validation metrics can be objectives.
VALIDATION_METRICS = ("validation_loss",)
TRAIN_ONLY = {"train_loss", "train_tokens", "train_seconds", "steps", "epochs"}
TEST_HINT = "tuning on the test split would overstate every result; the validation metric is validation_loss"


@dataclass(frozen=True)
class Dimension:
    """One knob of the search: a params.yaml key, its kind (int, float or choice) and its range."""

    key: str
    kind: str  # "int", "float" or "choice"
    knob: Knob
    in_params: bool  # False: a train.trainer key params.yaml does not list (`-S +key=value`)

    def suggest(self, trial: Any) -> Any:
        k = self.knob
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, k.choices)
        assert k.low is not None and k.high is not None  # Knob.check: a range has both
        if self.kind == "int":
            return trial.suggest_int(self.key, int(k.low), int(k.high), step=int(k.step or 1), log=k.log)
        return trial.suggest_float(self.key, k.low, k.high, step=k.step, log=k.log)

    def grid(self) -> list[Any]:
        """Every value of the knob, for the grid sampler."""
        k = self.knob
        if k.choices is not None:
            return list(k.choices)
        if k.step is None:
            raise UserError(f"tune.space.{self.key}: the grid sampler needs choices, or a range with a step")
        assert k.low is not None and k.high is not None
        count = int((k.high - k.low) / k.step + 1e-9) + 1
        values = [k.low + i * k.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def override(self, value: Any) -> str:
        """The `dvc exp run -S` override setting this knob (Hydra's syntax; `+` for a key params.yaml lacks)."""
        return f"{'' if self.in_params else '+'}{self.key}={_hydra(value)}"


def _hydra(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if value is None:
        return "null"
    return json.dumps(str(value)) if not str(value).replace("_", "").replace("-", "").isalnum() else str(value)


# --- checks before any trial -----------------------------------------------------------------------
def check(params_path: Path) -> tuple[TuneParams, list[Dimension]]:
    """Load params.yaml and check the tune section against the pipeline; UserError names the key."""
    params = load_params(params_path)
    tune = params.tune
    raw = read_yaml(params_path)
    raw.pop("tune", None)
    flat = flatten(raw)
    try:
        dims = [_dimension(key, knob, raw, flat) for key, knob in tune.space.items()]
        check_objective(tune.objective)
        if tune.sampler == "grid":
            for dim in dims:
                dim.grid()
    except UserError as err:
        raise UserError(f"{params_path}: {err}") from None
    return tune, dims


def _dimension(key: str, knob: Knob, raw: dict[str, Any], flat: dict[str, Any]) -> Dimension:
    where = f"tune.space.{key}"
    in_params = key in flat
    if key.startswith("tune.") or key == "tune":
        raise UserError(f"{where}: the tune section is not a knob of the pipeline")
    if in_params:
        current = flat[key]
    elif key.startswith("train.trainer.") and key.count(".") == 2:
        from loravc.preflight import check_trainer_types

        name = key.rsplit(".", 1)[1]
        check_trainer_types({name: (knob.choices or [knob.low])[0]})  # an unknown setting: a UserError
        current = TRAINER_DEFAULTS.get(name, knob.low if knob.choices is None else knob.choices[0])
    else:
        if any(k.startswith(key + ".") for k in flat):
            raise UserError(f"{where}: {key} is a section of params.yaml; name one of its keys")
        close = difflib.get_close_matches(key, list(flat), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"{where}: {key} is not a params.yaml key{hint}")
    if isinstance(current, bool) or not isinstance(current, int | float):
        kind = "choice"
        if knob.choices is None:
            raise UserError(f"{where}: {key} is not a number ({current!r}): give a list of choices")
    elif knob.choices is not None:
        kind = "choice"
    elif isinstance(current, int) and not isinstance(current, bool):
        kind = "int"
        for name in ("low", "high", "step"):
            value = getattr(knob, name)
            if value is not None and value != int(value):
                raise UserError(f"{where}: {key} is an integer, so {name} must be one, got {value}")
    else:
        kind = "float"
    dim = Dimension(key, kind, knob, in_params)
    values = knob.choices if knob.choices is not None else [knob.low, knob.high]
    for value in values:
        if kind == "int":
            value = int(value)
        _check_value(raw, key, value, where)
    return dim


def _check_value(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    """`value` at `key` makes a valid params.yaml (as loravc.params checks it), else a UserError."""
    doc = json.loads(json.dumps(raw))
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    try:
        params = build(Params, doc, "")
        if key.startswith("train.trainer."):
            from loravc.preflight import check_trainer_types

            check_trainer_types(params.train.trainer)
    except UserError as err:
        raise UserError(f"{where}: {value!r} is not a valid value: {err}") from None


def check_objective(metric: str) -> None:
    """A UserError unless `metric` is a validation metric the pipeline writes (not a train or test one)."""
    if metric in VALIDATION_METRICS:
        return
    if metric in TRAIN_ONLY:
        raise UserError(f"tune.objective: {metric} is measured on the training data, not a validation split; "
                        "the validation metric is validation_loss")  # fmt: skip
    test = ("base_", "tuned_", "perplexity", "_gain", "task_records")
    if any(part in metric for part in test):
        raise UserError(f"tune.objective: {metric} is a test metric ({TEST_METRICS}): {TEST_HINT}")
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
            if "IntegrityError" not in type(err).__name__ or attempt == 5:
                raise
            time.sleep(attempt)


def make_sampler(tune: TuneParams, dims: list[Dimension], seed: int) -> Any:
    import optuna

    if tune.sampler == "grid":
        return optuna.samplers.GridSampler({d.key: d.grid() for d in dims}, seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def experiments(repo: Path) -> dict[str, str]:
    """Every DVC experiment of the repository: name -> commit."""
    found = {}
    out = GitRepo(repo).git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
    for line in out.splitlines():
        commit, ref = line.split(" ", 1)
        if EXP_REF_RE.fullmatch(ref):
            found[ref.rsplit("/", 1)[1]] = commit
    return found


def experiment(repo: Path, name: str) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(commit, train metrics, test metrics) of experiment `name`, or None if DVC saved none by that name."""
    commit = experiments(repo).get(name)
    if commit is None:
        return None
    blobs = GitRepo(repo).read_blobs([f"{commit}:{TRAIN_METRICS}", f"{commit}:{TEST_METRICS}"])
    train, test = (json.loads(b) if b else {} for b in blobs.values())
    return commit, train, test


class Study:
    """One `loravc tune` process working on a study (alone, or beside others sharing its storage)."""

    def __init__(self, repo: Path, tune: TuneParams, dims: list[Dimension], say: Callable[[str], None] = print):
        optuna = self._optuna = require_optuna()
        self.repo, self.tune, self.dims, self.say = repo, tune, dims, say
        self.storage_spec = storage_of(tune, repo)
        if "://" not in self.storage_spec:
            Path(self.storage_spec).parent.mkdir(parents=True, exist_ok=True)
        self.logs = repo / ".dvc" / "tmp" / "tune" / tune.study
        self.logs.mkdir(parents=True, exist_ok=True)
        self.shown_storage = re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", self.storage_spec)  # no password
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

    # trials
    def name(self, number: int) -> str:
        return f"{self.tune.study}-{number}"

    def finished(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=(self.states.COMPLETE, self.states.PRUNED))

    def check_names(self) -> None:
        """Every experiment named <study>-<n> belongs to a trial of this study (else a new storage would
        overwrite nothing but fail on the name: say so before any trial)."""
        numbers = {t.number for t in self.study.get_trials(deepcopy=False)}
        prefix = f"{self.tune.study}-"
        for name in experiments(self.repo):
            rest = name[len(prefix) :]
            if name.startswith(prefix) and rest.isdigit() and int(rest) not in numbers:
                raise UserError(
                    f"experiment {name} exists but study {self.tune.study!r} ({self.shown_storage}) has no trial "
                    f"{rest}: name a new study in tune.study, or remove the old trials (dvc exp remove {name} ...)"
                )

    def recover(self) -> None:
        """Trials left running by a process of this machine that has died: read back from the experiment
        DVC saved for them, else failed and their params queued again. (A database storage's heartbeat
        fails those of any machine; Optuna does that when this process asks for a trial.)"""
        for trial in self.study.get_trials(deepcopy=False, states=(self.states.RUNNING,)):
            owner = trial.user_attrs.get("owner", {})
            if owner.get("host") != socket.gethostname() or _alive(owner.get("pid", -1)):
                continue
            found = experiment(self.repo, self.name(trial.number))
            value = found[1].get(self.tune.objective) if found else None
            if found and value is not None:
                self._complete(trial, found, value)
                self.say(f"trial {trial.number}: its process ended after DVC saved experiment "
                         f"{self.name(trial.number)}: read back, {self.tune.objective} {value:.4f}")  # fmt: skip
                continue
            self.study.tell(trial.number, state=self.states.FAIL)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            self.say(f"trial {trial.number}: cut off before DVC saved it; its params are queued again")

    def _complete(self, trial: Any, found: tuple[str, dict[str, Any], dict[str, Any]], value: float) -> None:
        commit, _, test = found
        for key, attr in (("experiment", self.name(trial.number)), ("commit", commit), ("test", test)):
            self.storage.set_trial_user_attr(trial._trial_id, key, attr)
        self.study.tell(trial.number, value)

    def run(self, options: Options) -> None:
        self.recover()
        self.check_names()
        wanted = options.trials or self.tune.trials
        started = time.monotonic()
        while True:
            done = len(self.finished())
            running = len(self.study.get_trials(deepcopy=False, states=(self.states.RUNNING,)))
            if done + running >= wanted:  # trials other processes run count: no more than asked for
                also = f", {running} still running in other processes" if running else ""
                self.say(f"study {self.tune.study}: {done} finished trials (asked for {wanted}){also}")
                return
            if options.timeout is not None and time.monotonic() - started > options.timeout:
                self.say(f"study {self.tune.study}: --timeout {options.timeout:g} s reached; {done} finished trials")
                return
            if self.tune.sampler == "grid" and done >= _grid_size(self.dims):
                self.say(f"study {self.tune.study}: every grid point has been tried ({done} trials)")
                return
            self.trial(options)

    def _seed(self) -> int:
        """The sampler's seed for the next trial: tune.seed plus the trials so far, so a resumed study does
        not propose its first points again; with a database storage several processes share the study, so
        each mixes in its process id (they would otherwise propose the same points)."""
        seed = self.tune.seed + len(self.study.get_trials(deepcopy=False))
        return seed + os.getpid() if "://" in self.storage_spec else seed

    def trial(self, options: Options) -> None:
        if "://" in self.storage_spec:  # a trial whose process stopped sending heartbeats, on any machine
            self._optuna.storages.fail_stale_trials(self.study)
        self.study.sampler = make_sampler(self.tune, self.dims, self._seed())
        trial = self.study.ask()
        values = {d.key: d.suggest(trial) for d in self.dims}
        trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
        name = self.name(trial.number)
        overrides = [d.override(values[d.key]) for d in self.dims]
        shown = " ".join(overrides)
        self.say(f"trial {trial.number}: {shown} -> dvc exp run --temp -n {name}")
        spec = pruning.TrialSpec(self.storage_spec, self.tune.study, trial._trial_id, trial.number, self.tune.pruner)
        log = self.logs / f"{name}.log"
        start = time.monotonic()
        with heartbeat(self.storage, trial._trial_id):
            rc = self._dvc_exp_run(name, overrides, spec, options, log)
        seconds = time.monotonic() - start
        found = experiment(self.repo, name) if rc == 0 else None
        value = found[1].get(self.tune.objective) if found else None
        if found and value is not None:
            self._complete(trial, found, value)
            self.say(
                f"trial {trial.number}: {self.tune.objective} {value:.4f} ({_minutes(seconds)}; experiment {name})"
            )
            if options.push:
                subprocess.run(dvc_cmd("exp", "push", options.push, name), cwd=self.repo, env=tool_env(), check=True)
            return
        pruned = self.storage.get_trial(trial._trial_id).user_attrs.get("pruned")
        if pruned:
            self.study.tell(trial, state=self.states.PRUNED)
            self.say(f"trial {trial.number}: pruned at evaluation {pruned['evaluation']} (step {pruned['step']}): "
                     f"not a version ({_minutes(seconds)}; log {log.relative_to(self.repo)})")  # fmt: skip
            return
        self.study.tell(trial, state=self.states.FAIL)
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise UserError(
            f"trial {trial.number} failed (dvc exp run exited {rc}; log {log.relative_to(self.repo)}):\n{tail}\n"
            "fix the cause and rerun `loravc tune`: the finished trials are kept"
        )

    def _dvc_exp_run(self, name: str, overrides: list[str], spec: Any, options: Options, log: Path) -> int:
        args = ["exp", "run", "--temp", "-n", name]
        for override in overrides:
            args += ["-S", override]
        for path in options.copy_paths:
            args += ["--copy-paths", path]
        env = tool_env({pruning.ENV: spec.dumps()})
        with log.open("w", encoding="utf-8") as out:
            child = subprocess.Popen(dvc_cmd(*args), cwd=self.repo, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                return child.wait()
            except BaseException:  # Ctrl-C or a kill of loravc tune ends the trial it runs too
                child.send_signal(signal.SIGINT)
                child.wait()
                raise

    def best(self) -> Any | None:
        complete = self.study.get_trials(deepcopy=False, states=(self.states.COMPLETE,))
        return self.study.best_trial if complete else None


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
            storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _grid_size(dims: list[Dimension]) -> int:
    size = 1
    for dim in dims:
        size *= len(dim.grid())
    return size


def _alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs `loravc tune` (a reused pid runs something else)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError, ValueError):
        return False
    try:
        return b"tune" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


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
    params = " ".join(f"{k}={_hydra(v)}" for k, v in best.params.items())
    lines.append(f"best: trial {best.number} (experiment {name}): {tune.objective} {best.value:.4f}; {params}")
    test = best.user_attrs.get("test", {})
    shown = [k for k in ("tuned_perplexity", "tuned_exact_match", "tuned_f1", "tuned_chrf") if k in test]
    if shown:
        lines.append("  its test metrics, for information only (the study never saw them): "
                     + ", ".join(f"{k} {test[k]:.4g}" for k in shown))  # fmt: skip
    lines += [
        "promote it:",
        f"  dvc exp apply {name} && git add -A && git commit -m 'Tuned: {params}'",
        f"  or register it as it is: loravc register {name} --version vX.Y.Z",
    ]
    return lines


def tune(repo: Path, options: Options, say: Callable[[str], None] = print) -> Study:
    """Check everything, then run the study until it holds the trials asked for; print the summary."""
    tune_params, dims = check(repo / "params.yaml")
    check_data_committed(repo, load_params(repo / "params.yaml").data.train, list(options.copy_paths))
    study = Study(repo, tune_params, dims, say)
    study.run(options)
    for line in summary(study):
        say(line)
    return study
