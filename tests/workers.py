"""The suite on two cores (pytest-xdist, `-n 2` in pyproject.toml): which tests share a worker, and the gates
that keep the last checks after every other test.

conftest.py calls these from its hooks. Without xdist (`pytest -n 0`) none of this acts. The groups are this
module's own scheduler rather than xdist's `xdist_group` marks, which pytest 9.2 no longer lets xdist 3.8 apply.
"""

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

SHARED = ("versions_repo", "default_repo")  # session fixtures built once, each on the worker that runs all its tests
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # set in a worker's process, absent in the controller
FOLDER_ENV = "LORAVC_TEST_WORKERS"  # a folder for groups and gates, made in the controller before its workers
if FOLDER_ENV not in os.environ:
    os.environ[FOLDER_ENV] = tempfile.mkdtemp(prefix="loravc-workers-")


def group_of(item: pytest.Item) -> str | None:
    """The group of a test: the tests of the versions repository on one worker (which builds it once), those of
    the default repository on one, those of a module-scoped fixture on one per module; any other test runs where
    there is room. (No test uses both repositories: each builds on a different worker, at the same time.)"""
    names = set(getattr(item, "fixturenames", ()))
    for shared in SHARED:
        if shared in names:
            return shared
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info else ()
    if any(d.scope == "module" for defs in definitions for d in defs):
        return item.nodeid.split("::")[0]
    return None


def once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """A session fixture's folder, built once per run: alone, in this process; under xdist by the first worker
    that needs it while the other waits on its lock, then reads it (such a folder is only ever copied or read)."""
    if WORKER is None:
        return build(factory.mktemp(name))
    root = factory.getbasetemp().parent / f"shared-{name}"  # the run's folder, above each worker's own
    with root.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root.with_suffix(".json")
        if done.exists():
            return Path(json.loads(done.read_text(encoding="utf-8")))
        root.mkdir()
        built = build(root)
        done.write_text(json.dumps(str(built)), encoding="utf-8")
        return built


def write_groups(folder: Path, worker: str, items: Iterable[pytest.Item]) -> None:
    """In a worker, once it has collected: each grouped test's group, for the controller's scheduler."""
    groups = {item.nodeid: group for item in items if (group := group_of(item))}
    path = folder / f"groups-{worker}.json"
    path.with_suffix(".partial").write_text(json.dumps(groups), encoding="utf-8")
    path.with_suffix(".partial").replace(path)


def read_groups(folder: Path) -> dict[str, str]:
    """What the workers wrote (they collect the same tests)."""
    groups: dict[str, str] = {}
    for path in sorted(folder.glob("groups-*.json")):
        groups.update(json.loads(path.read_text(encoding="utf-8")))
    return groups


def scheduler(config: pytest.Config, log: object, folder: Path) -> object:
    """xdist's scope scheduling with a test's group as its scope (a test without one is a scope of its own).
    The largest scopes go out first; the last checks, each a scope of one, go out after every other."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected, and written its groups
                self.groups = read_groups(folder)
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


class Gates:
    """The controller's view of the run: the tests in order (every worker collects the same list), those that
    finished on any worker, and for each last check a file, its gate, touched once every test before it finished.
    A last check's worker waits for its gate: the workers share no memory, but they share this folder."""

    def __init__(self, folder: Path, last: tuple[str, ...]) -> None:
        self.folder, self.last = folder, last
        self.ids: list[str] = []
        self.done: set[str] = set()

    def gate(self, nodeid: str) -> Path:
        return self.folder / hashlib.sha256(nodeid.encode()).hexdigest()[:16]

    def collected(self, ids: Iterable[str]) -> None:
        self.ids = list(ids)
        self._open()

    def finished(self, nodeid: str) -> None:
        self.done.add(nodeid)
        self._open()

    def _open(self) -> None:
        for index, nodeid in enumerate(self.ids):
            last = nodeid.startswith(self.last)
            if last and not self.gate(nodeid).exists() and self.done.issuperset(self.ids[:index]):
                self.gate(nodeid).touch()

    def wait(self, nodeid: str, timeout_s: float = 3600) -> None:
        """Hold a last check until every test before it has finished (a crashed worker never reports its tests)."""
        deadline = time.monotonic() + timeout_s
        while not self.gate(nodeid).exists():
            if time.monotonic() > deadline:
                pytest.fail(f"the tests before {nodeid} did not all finish in {timeout_s:.0f} s (a worker crashed?)")
            time.sleep(0.5)
