"""What a trial killed during DVC's set-up leaves in the workspace, undone.

`dvc exp run --temp` detaches HEAD and writes the trial's overrides into params.yaml (staged) before it stashes
them, and restores both after; a kill -9 in between leaves them, and possibly git's lock files. Each is undone
only when it is exactly that state, never a change of the user's.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from loravc.tune.liveness import stale_lock
from loravc.versions.gitrepo import GitRepo


def stale_git_locks(repo: Path, git: GitRepo) -> list[Path]:
    """The lock files of the index, the packed refs and DVC's experiment refs (refs/exps) that a process killed
    with a trial left: no process has them open, and they stay unchanged (loravc.tune.liveness.stale_lock)."""
    args = [arg for name in ("index.lock", "packed-refs.lock", "refs/exps") for arg in ("--git-path", name)]
    *locks, refs = (repo / line for line in git.git("rev-parse", *args).splitlines())
    return [lock for lock in [*locks, *sorted(refs.rglob("*.lock"))] if stale_lock(lock)]


def repair_workspace(repo: Path, git: GitRepo, number: int, branch: str | None, overrides: list[str],
                     say: Callable[[str], None]) -> None:  # fmt: skip
    """Undo what DVC's set-up of trial `number` left: stale git lock files, HEAD detached from `branch` (the branch
    the trial started on) at its tip, params.yaml holding exactly the committed file with `overrides` applied."""
    for lock in stale_git_locks(repo, git):  # git refuses to run, and DVC to save an experiment, while one exists
        lock.unlink(missing_ok=True)
        say(f"trial {number}: removed {os.path.relpath(lock, repo)}, left by a git process killed with the trial")
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
