"""`loravc gc`: DVC's garbage collection that keeps every version.

Plain `dvc gc` keeps only what the workspace's commit uses, so it deletes every other version from the cache.
This runs it keeping what the workspace and every commit, branch, tag and experiment pin, says first what
that is (the versions among it), and touches the DVC remote only when asked (`--cloud`).
"""

import subprocess
from collections.abc import Callable
from typing import Any

from loravc.core.errors import UserError
from loravc.core.tools import dvc_cmd, tool_env
from loravc.versions.catalogue import Versions

KEEP = ("--workspace", "--all-commits", "--all-experiments", "--all-branches", "--all-tags")
UNRECORDED = "is missing version info. Cache for it will not be collected"  # DVC's warning for a lock-less commit


def gc_args(cloud: bool = False, dry: bool = False) -> list[str]:
    """`dvc gc`'s arguments: keep everything; `--cloud` deletes from the default remote too; `--dry` only says."""
    return ["gc", *KEEP, *(["--cloud"] if cloud else []), *(["--dry"] if dry else []), "--force"]


def kept(versions: Versions) -> dict[str, Any]:
    """What gc keeps: the commits (how many), branches, tags and experiments, and the versions they hold."""

    def names(kind: str) -> list[str]:
        return sorted({r.name for r in versions.refs if r.kind == kind})

    return {
        "commits": int(versions.repo.git("rev-list", "--all", "--count") or 0),
        "branches": names("branch"),
        "tags": sorted(versions.repo.git("tag", "--list").split()),  # registry tags too
        "experiments": names("experiment"),
        "versions": [{"label": v.label, "version_id": v.version_id} for v in versions.all],
    }


def collect(versions: Versions, cloud: bool, dry: bool, say: Callable[[str], None]) -> list[str]:
    """Run `dvc gc` keeping every version (after `kept`); what DVC prints goes to `say`, but for its warnings about
    outputs that a commit's dvc.lock does not record (the project's commits before its first run: nothing of
    theirs is cached), counted in one line. Returns the argv."""
    if cloud and not versions.cache.dvc.config["core"].get("remote"):
        raise UserError("--cloud collects in the default DVC remote, and none is set: see docs/remotes.md")
    argv = dvc_cmd(*gc_args(cloud, dry))
    say("$ dvc " + " ".join(argv[3:]))
    result = subprocess.run(
        argv, cwd=versions.root, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    unrecorded = [line for line in lines if UNRECORDED in line]
    for line in lines:
        if UNRECORDED not in line:
            say(line)
    if unrecorded:
        say(f"({len(unrecorded)} DVC warnings left out: on commits whose dvc.lock records no outputs, none cached)")
    if result.returncode != 0:
        last = next((line for line in reversed(lines) if UNRECORDED not in line), "no message")
        raise UserError(f"dvc gc failed ({last.strip()}); nothing else was done")
    return argv
