"""What a trial killed during DVC's set-up leaves in the workspace, undone.

`dvc exp run --temp` detaches HEAD and writes the trial's overrides into params.yaml (staged) before it stashes
them, and restores both after; a kill -9 in between leaves them, and possibly git's index.lock. Each is undone
only when it is exactly that state, never a change of the user's.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path

from loravc.tune.liveness import stale_lock
from loravc.versions.gitrepo import GitRepo


def repair_workspace(repo: Path, git: GitRepo, number: int, branch: str | None, overrides: list[str],
                     say: Callable[[str], None]) -> None:  # fmt: skip
    """Undo what DVC's set-up of trial `number` left: a stale index.lock, HEAD detached from `branch` (the branch
    the trial started on) at its tip, params.yaml holding exactly the committed file with `overrides` applied."""
    lock = repo / git.git("rev-parse", "--git-path", "index.lock").strip()
    if stale_lock(lock):  # the killed git of DVC's set-up held it; git refuses to run while it exists
        lock.unlink(missing_ok=True)
        say(f"trial {number}: removed .git/index.lock, left by a git process killed with the trial")
    detached = git.git("symbolic-ref", "-q", "HEAD", check=False).strip() == ""
    if branch and detached and git.commit_of(f"refs/heads/{branch}") == git.head():
        git.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
        say(f"trial {number}: HEAD was left detached by DVC's set-up of the trial: back on {branch}")
    head, params = git.head(), repo / "params.yaml"
    committed = git.read_blob(head, "params.yaml") if head else None
    if committed is None or not params.exists() or params.read_bytes() == committed:
        return
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as scratch:
        expected = Path(scratch) / "params.yaml"
        expected.write_bytes(committed)
        apply_overrides(expected, overrides)
        left_by_dvc = params.read_bytes() == expected.read_bytes()
    if left_by_dvc:
        git.git("reset", "-q", "--", "params.yaml")
        params.write_bytes(committed)
        say(f"trial {number}: params.yaml held the trial's overrides, left by DVC's set-up: restored")
