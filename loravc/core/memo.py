"""A small record of checks that passed, so that a stage run on every `dvc repro` repeats none of them.

Each entry is the sha256 of what the check read (params, library versions, the project's code, a file): the
same key passes again. It lives in DVC's git-ignored scratch folder; deleting it only makes the next run slower.
"""

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import loravc

KEEP = 64  # the newest keys kept: a sweep alternating between a few params sets finds each of them


def key_of(what: Any) -> str:
    """The sha256 of `what` as canonical JSON (values JSON lacks, e.g. paths, as their str)."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def code_sha256() -> str:
    """The sha256 of every module of the loravc package: an edit to any check changes it."""
    digest = hashlib.sha256()
    root = Path(loravc.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def holds(memo: Path, key: str) -> bool:
    """Whether `key` passed before (an unreadable memo holds nothing)."""
    try:
        return key in json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def add(memo: Path, key: str) -> None:
    """Remember that `key` passed: the newest KEEP keys, written whole or not at all (not at all where it cannot be)."""
    try:
        known = [k for k in json.loads(memo.read_text(encoding="utf-8")) if k != key]
    except (OSError, ValueError, TypeError):
        known = []
    partial = memo.with_name(memo.name + ".partial")
    with contextlib.suppress(OSError):  # a read-only or full disk: the check passed all the same, and runs next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps([*known[-(KEEP - 1) :], key]), encoding="utf-8")
        partial.replace(memo)
