"""Running dvc and git as this interpreter's tools, offline and quiet (what `loravc tune` runs its trials with)."""

import os
import sys
from collections.abc import Mapping
from pathlib import Path

QUIET_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVCLIVE_OPEN": "false",
}
"""Environment for scripted runs: no network, no analytics, no browser, no tokenizer fork warnings."""


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ with QUIET_ENV, this interpreter's bin first on PATH (dvc stages call `python`), then `extra`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **QUIET_ENV, "PATH": path, **(extra or {})}


def dvc_cmd(*args: str) -> list[str]:
    """argv of `dvc ARGS` with this interpreter's DVC (whatever `dvc` is on PATH)."""
    return [sys.executable, "-m", "dvc", *args]
