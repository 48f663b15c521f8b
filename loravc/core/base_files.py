"""The base model directory's own files, which every stage after `base` reads: its identity and tokenizer.

Stage `base` writes them (loravc.base.model); train records the identity in each version's metadata.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError

IDENTITY_FILE = "base.json"  # written next to the weights: which base this is, for metadata


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_tokenizer(tokenizer: Any, out_dir: Path) -> None:
    """save_pretrained without `local_files_only`, a loading option transformers records (True under
    HF_HUB_OFFLINE): the files, and so the version's hashes, must not depend on the environment."""
    tokenizer.init_kwargs.pop("local_files_only", None)
    tokenizer.save_pretrained(out_dir)


def read_identity(base_dir: Path) -> dict[str, Any]:
    path = base_dir / IDENTITY_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro base` (or `dvc pull`) to materialize the base model")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{path} is damaged ({err}): restore it with `dvc checkout` (or `dvc repro base`)") from None
