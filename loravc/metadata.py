"""metadata.json: what a version is, where it came from, and how well it did."""

import json
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from loravc.errors import UserError

METADATA_FILE = "metadata.json"
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "dvc", "dvclive", "safetensors")


def version_id(now: datetime) -> str:
    """The familiar versioned-directory name: v_<UTC timestamp>, sortable by time."""
    return "v_" + now.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def git_revision(cwd: Path | None = None) -> dict[str, Any]:
    """HEAD of the code that trained the version, and whether tracked files had local edits."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def write_metadata(version_dir: Path, metadata: dict[str, Any]) -> Path:
    path = version_dir / METADATA_FILE
    path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """Read a version's metadata; a missing or damaged file names itself and the fix."""
    path = version_dir / METADATA_FILE
    fix = "restore it with `dvc checkout` (or `dvc pull` if the cache lacks it)"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {fix}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is damaged ({err.msg} at line {err.lineno}): {fix}") from None
