"""loravc.tune.liveness: a running trial's heartbeat, processes told by pid and start time, stale git locks."""

import os
import subprocess
import threading
import time
from pathlib import Path

from loravc.tune.liveness import alive, heartbeat, stale_lock, started


class Storage:
    """A database storage's heartbeat API, recording each beat; `fail_first` beats raise as a database hiccup."""

    def __init__(self, interval: float | None, fail_first: int = 0) -> None:
        self.interval, self.fail_first = interval, fail_first
        self.beats: list[int] = []
        self.third = threading.Event()

    def get_heartbeat_interval(self) -> float | None:
        return self.interval

    def record_heartbeat(self, trial_id: int) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("database hiccup")
        self.beats.append(trial_id)
        if len(self.beats) == 3:
            self.third.set()


def test_a_running_trial_beats_until_it_ends() -> None:
    storage = Storage(interval=0.05, fail_first=2)
    with heartbeat(storage, 7):
        assert storage.third.wait(10)  # beats go on while the trial runs, past two that failed
    stopped = list(storage.beats)
    time.sleep(0.2)
    assert storage.beats == stopped == [7] * len(stopped)  # none after the trial ended


def test_a_storage_without_heartbeats_gets_none() -> None:
    storage = Storage(interval=None)
    threads = threading.active_count()
    with heartbeat(storage, 7):
        assert threading.active_count() == threads
        time.sleep(0.1)
    assert storage.beats == []
    with heartbeat(object(), 7):  # a journal file: no heartbeat API at all
        assert threading.active_count() == threads


def test_a_process_is_told_by_its_pid_and_start_time() -> None:
    me = started(os.getpid())
    assert me is not None and me.isdigit() and started(os.getpid()) == me
    assert alive(os.getpid(), me) and alive(os.getpid(), None)
    assert not alive(os.getpid(), str(int(me) + 1))  # the same pid, another process: the pid was reused
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert started(dead.pid) is None and not alive(dead.pid, None)
    assert not alive(None, None) and not alive(0, None)


def test_a_git_lock_is_stale_only_when_nobody_holds_it(tmp_path: Path) -> None:
    lock = tmp_path / "index.lock"
    assert not stale_lock(lock, wait=0.2)  # none there
    lock.write_text("")
    with lock.open("rb"):  # a live git has it open: not stale, however long it waits
        assert not stale_lock(lock, wait=0.3)
    assert stale_lock(lock, wait=0.3)  # left by a killed process
    replaced = threading.Timer(0.1, lambda: (lock.unlink(), lock.write_text("new")))
    replaced.start()  # a git that took the lock again meanwhile: a different file, not stale
    assert not stale_lock(lock, wait=0.4)
    replaced.join()
