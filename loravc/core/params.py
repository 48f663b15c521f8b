"""What every section of params.yaml shares: fields with their help text, one error per rule, and the loader.

Each stage's folder declares its own sections as dataclasses (loravc.<stage>.params); a stage loads and
validates only the sections dvc.yaml lists under its `params:` (`load_sections`), and stage `source`
validates the whole file first (loravc.params). params.yaml is read the way DVC reads it (YAML 1.2).
"""

import copy
from dataclasses import field
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.schema import build, read_yaml

DEVICES = ("auto", "cpu", "cuda", "mps")
WEIGHT_DTYPES = ("auto", "float32", "bfloat16")  # train.lora.dtype, train.quantization.compute_dtype
MAX_LENGTH = 128  # train.max_length's default: prepare and evaluate read it too


def knob(default: Any, help: str) -> Any:
    """A dataclass field with its default and its meaning (params.yaml's comment: loravc.cli.reference)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def section(cls: type, help: str) -> Any:
    """A dataclass field holding a section of params.yaml (its keys: `cls`) and its meaning."""
    return field(default_factory=cls, metadata={"help": help})


def require(ok: bool, key: str, what: str) -> None:
    """A UserError naming the key and what it must be, unless `ok`."""
    if not ok:
        raise UserError(f"{key} {what}")


def check_device(device: str, key: str) -> None:
    kind = device.split(":", 1)[0]
    ok = kind in DEVICES and (":" not in device or (kind == "cuda" and device.split(":", 1)[1].isdigit()))
    require(ok, key, f"must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")


def check_max_length(value: int, key: str = "train.max_length") -> int:
    """train.max_length's rule, for TrainParams and for the stages that read only that key."""
    require(not isinstance(value, bool) and isinstance(value, int), key, f"must be an integer, got {value!r}")
    require(value >= 8, key, "must be at least 8")
    return value


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml as a mapping, read as DVC reads it; a missing file or a YAML error names the file."""
    path = Path(path)
    try:
        raw = read_yaml(path)
    except FileNotFoundError:
        raise UserError(f"{path} not found: run from the repository root") from None
    except Exception as err:  # a YAML syntax error: ruamel's message names line and column
        raise UserError(f"{path} is not valid YAML: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the file must be a mapping, got {type(raw).__name__}")
    return raw


def load_sections(path: str | Path, **sections: type) -> Any:
    """The sections a stage declares in dvc.yaml, each built and validated as its dataclass (a missing
    section takes the defaults); other sections are not read. Returns an object with one attribute per
    section: `load_sections(path, train=TrainParams).train`."""
    from types import SimpleNamespace

    raw = read_params(path)
    try:
        return SimpleNamespace(**{name: build(cls, raw.get(name, {}), name) for name, cls in sections.items()})
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def load_max_length(path: str | Path) -> int:
    """train.max_length alone, for the stages that declare only that key of `train` (prepare, evaluate)."""
    train = read_params(path).get("train") or {}
    try:
        return check_max_length(train.get("max_length", MAX_LENGTH) if isinstance(train, dict) else MAX_LENGTH)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def restore_hint(path: str | Path) -> str:
    """For an error in params: how to put back the committed file when it differs from git's HEAD (`dvc exp run -S`
    writes its values into it before any stage runs); "" when it does not, or git cannot say."""
    import subprocess

    path = Path(path)
    try:
        diff = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", path.name], cwd=path.parent, capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    if diff.returncode != 1:
        return ""
    return (
        f"{path} differs from the last commit (your edit, or `dvc exp run -S` wrote it); no output was removed. "
        f"`git checkout HEAD -- {path.name}` puts the committed params back"
    )
