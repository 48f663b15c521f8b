"""What a killed `dvc exp run --temp` leaves under .dvc/tmp/exps, found and removed through DVC's own API.

DVC records each `dvc exp run --temp` in executor info files (`<stash rev>.run`, under .dvc/tmp/exps/standalone/run/
and, from its set-up, .dvc/tmp/exps/run/) naming the experiment and its temporary copy of the repository
(.dvc/tmp/exps/standalone/tmp*). A run that ends marks its record finished and removes its copy; a kill -9 leaves
both, and `dvc exp show` lists the run as Running for ever (`dvc exp remove` and `dvc exp clean` do not know it).
Whether the process of a run has ended is for the caller to judge (loravc.tune.study: the trial's owner).
"""

import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Run:
    key: str  # DVC's stash revision, the name of the run's records
    name: str  # the experiment's name
    copy: Path  # its temporary copy of the repository


def unfinished(repo: Path) -> list[Run]:
    """The `dvc exp run --temp` runs DVC records as preparing or running, by the record DVC keeps up to date (the
    standalone one; the set-up's record stays "preparing" after every run). Only copies inside .dvc/tmp/exps."""
    runs: list[Run] = []
    if not (repo / ".dvc" / "tmp" / "exps").is_dir():  # DVC has run no experiment here
        return runs
    from dvc.repo import Repo
    from dvc.repo.experiments.executor.base import TaskStatus

    with Repo(str(repo)) as dvc:
        exps, inside = dvc.experiments, Path(dvc.tmp_dir, "exps").resolve()
        keys = dict.fromkeys([*exps.tempdir_queue.proc, *exps.celery_queue.proc])
        for key in keys:
            info = _info(exps.tempdir_queue, key) or _info(exps.celery_queue, key)
            if info is None or info.location != "tempdir" or info.status > TaskStatus.RUNNING or not info.name:
                continue
            copy = Path(info.root_dir).resolve()
            if copy.is_relative_to(inside) and copy != inside:
                runs.append(Run(key, info.name, copy))
    return runs


def remove(repo: Path, run: Run) -> int:
    """Remove a run's temporary copy (DVC's executor clean-up) and its records; returns the bytes the copy held.
    A run another process removed at the same moment is no error."""
    from dvc.repo import Repo
    from dvc.repo.experiments.executor.local import TempDirExecutor
    from dvc.utils.fs import remove as remove_path

    size = _size(run.copy)
    with Repo(str(repo)) as dvc:
        for queue in (dvc.experiments.tempdir_queue, dvc.experiments.celery_queue):
            info = _info(queue, run.key)
            if info is not None and run.copy.is_dir():
                try:
                    TempDirExecutor.from_info(info).cleanup(queue.get_infofile_path(run.key))
                except Exception:  # a copy killed before its git repository was whole: DVC cannot open it
                    remove_path(str(run.copy))
            with suppress(OSError):
                del queue.proc[run.key]
    return size


def _info(queue: Any, key: str) -> Any | None:
    """The executor info DVC recorded for run `key` in `queue`, or None (none, or unreadable)."""
    from dvc.repo.experiments.executor.base import ExecutorInfo

    try:
        return ExecutorInfo.load_json(queue.get_infofile_path(key))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
