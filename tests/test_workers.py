"""tests/workers.py: the suite's two workers share costly fixtures by group, and the last checks wait for the rest."""

import os
from pathlib import Path

import pytest
from workers import FOLDER_ENV, SHARED, WORKER, Gates, read_groups, write_groups

LAST = ("tests/test_last.py",)
IDS = ["tests/a.py::x", "tests/b.py::y@shared", "tests/test_last.py::first", "tests/test_last.py::second"]


def test_a_last_check_opens_only_once_every_test_before_it_finished(tmp_path: Path) -> None:
    gates = Gates(tmp_path, LAST)
    gates.collected(IDS)
    assert not any(gates.gate(nodeid).exists() for nodeid in IDS)
    gates.finished(IDS[1])  # out of order, as two workers finish
    assert not gates.gate(IDS[2]).exists()
    gates.finished(IDS[0])
    assert gates.gate(IDS[2]).exists() and not gates.gate(IDS[3]).exists()  # the second waits for the first
    gates.finished(IDS[2])
    assert gates.gate(IDS[3]).exists()
    gates.wait(IDS[3], timeout_s=1)


def test_a_gate_that_never_opens_fails_its_check_instead_of_hanging(tmp_path: Path) -> None:
    gates = Gates(tmp_path, LAST)
    gates.collected(IDS)
    with pytest.raises(pytest.fail.Exception, match="did not all finish"):
        gates.wait(IDS[2], timeout_s=0)


def test_the_tests_of_a_shared_fixture_are_one_group(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Each worker builds the versions or default repository (minutes each) for the tests it is sent: all the
    tests of each must be one group, and the tests of a module-scoped fixture one group per module."""
    items = request.session.items
    shared = {name: [item for item in items if name in item.fixturenames] for name in SHARED}
    per_module = [item for item in items if "exp_repo" in item.fixturenames]  # test_experiments.py's, module-scoped
    if not all(shared.values()) or not per_module:
        pytest.skip("runs with the whole suite, which collects the tests of those fixtures")
    write_groups(tmp_path, "gw9", items)
    groups = read_groups(tmp_path)
    for name, tests in shared.items():
        assert {groups[item.nodeid] for item in tests} == {name}
    assert not [item.nodeid for item in items if set(SHARED) <= set(item.fixturenames)]  # else one is built twice
    assert {groups[item.nodeid] for item in per_module} == {"tests/test_experiments.py"}
    assert request.node.nodeid not in groups  # a scope of its own
    if WORKER is not None:  # and this worker wrote the same for the controller's scheduler
        assert read_groups(Path(os.environ[FOLDER_ENV])) == groups
