"""Where a study lives and how its trials are sampled: Optuna's storage (a journal file, or a database several
processes and machines share) and the sampler of each trial."""

import re
import time
import warnings
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.train import pruning
from loravc.tune.params import TuneParams

STARTUP_TRIALS = 4  # TPE's random trials before it models the results (Optuna's default 10 exceeds small studies)
DATABASES = ("sqlite", "postgresql", "mysql")  # the URL schemes of the databases Optuna supports


def storage_of(tune: TuneParams, repo: Path) -> str:
    """The study's storage: a journal file's absolute path or a database URL."""
    if tune.storage is None:
        return str((repo / ".dvc" / "tmp" / "tune" / f"{tune.study}.journal").resolve())
    if "://" in tune.storage:
        scheme = tune.storage.split("://", 1)[0].split("+", 1)[0]
        if scheme not in DATABASES:
            raise UserError(f"tune.storage: {scheme}:// is not a database Optuna supports ({', '.join(DATABASES)})")
        relative = tune.storage.split(":///", 1)[1] if scheme == "sqlite" and ":///" in tune.storage else None
        if relative and not relative.startswith("/"):  # the trials' train stages run in other directories
            return f"{tune.storage.split(':///', 1)[0]}:///{(repo / relative).resolve()}"
        return tune.storage
    return str((repo / tune.storage).resolve())


def shown(storage: str) -> str:
    """The storage as messages show it: a database URL without its password."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", storage)


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError("loravc tune needs Optuna: run `bash scripts/setup.sh` (the locks hold it)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats with ask-and-tell (loravc.tune.liveness records them) are marked experimental: not news to a user
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
