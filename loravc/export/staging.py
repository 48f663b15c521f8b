"""What every export format shares: its job, and the staging that makes a new directory appear whole or not at all.

A format checks what it can before anything is written, then hands `stage` a function that fills the staged
directory; `stage` refuses an existing target, stages next to it (same file system, so the rename is atomic),
writes the model card (README.md) and the provenance record, renames the directory into place and leaves
nothing behind when anything fails.
"""

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.versions.cache import scratch_dir
from loravc.versions.catalogue import Version, Versions

EXPORT_DIR = "model_versions"  # git-ignored home of exported versions
RECORD_FILE = "version.json"  # where an export records where it came from
CARD_FILE = "README.md"


@dataclass(frozen=True)
class Options:
    """`loravc export`'s options beyond REF and DIR (formats.FLAGS names them); a format reads those it takes."""

    type: str = "f16"  # GGUF tensor type
    base_only: bool = False  # GGUF: the version's base alone
    tokenizer_pre: str | None = None  # GGUF: llama.cpp's pre-tokenizer name


@dataclass(frozen=True)
class Job:
    """One export: the version, the new directory, the options; `device`: where a format that loads the model
    runs it (`loravc merge --device`)."""

    versions: Versions
    version: Version
    dest: Path
    options: Options = field(default_factory=Options)
    device: str = "cpu"


@dataclass(frozen=True)
class Staged:
    """What a format's fill function hands back: the card and the provenance record to write next to its files."""

    card: str
    record: dict[str, Any]
    record_file: str = RECORD_FILE


@dataclass(frozen=True)
class Exported:
    """A finished export: where it is, what its record says, and what `loravc` prints of it (None: nothing more
    than the `exported ... -> DIR` line)."""

    target: Path
    record: dict[str, Any]
    summary: str | None = None


def default_target(versions: Versions, name: str) -> Path:
    """Where an export goes when no directory is given: model_versions/NAME in the repository."""
    return versions.root / EXPORT_DIR / name


def refuse_existing(target: Path) -> None:
    if target.exists():
        raise UserError(f"{target} already exists: choose another directory (nothing was overwritten)")


def stage(target: Path, fill: Callable[[Path], Staged]) -> dict[str, Any]:
    """Make `target` with `fill` and return the record written into it.

    `fill` gets a directory that does not exist yet, next to `target`: it makes it (a copy, save_pretrained,
    mkdir) and writes its files there. Then README.md and the record are written, and the directory is renamed
    into place. An existing target (also one made meanwhile) is refused; an OSError is one UserError line;
    whatever fails, nothing is left behind.
    """
    refuse_existing(target)
    scratch = scratch_dir(target)
    try:
        staged = scratch / "staged"
        done = fill(staged)
        staged.mkdir(exist_ok=True)
        (staged / CARD_FILE).write_text(done.card, encoding="utf-8")
        (staged / done.record_file).write_text(json.dumps(done.record, indent=2) + "\n", encoding="utf-8")
        refuse_existing(target)  # made while this export ran
        staged.rename(target)
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror or err}; nothing was written") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return done.record
