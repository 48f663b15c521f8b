"""Whether what ran a trial still runs: a running trial's heartbeat in a database storage, a process told by its
pid and start time (from /proc), and a git lock file that a killed process left behind."""

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


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


def started(pid: int) -> str | None:
    """When process `pid` started (field 22 of /proc/<pid>/stat, in clock ticks since boot): with the pid,
    it names one process, even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int | None, start: str | None) -> bool:
    """Whether the process that had `pid` and start time `start` (None: any start) still runs."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError, ValueError):
        return False
    return start is None or started(pid) == start


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
