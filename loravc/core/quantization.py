"""QLoRA: the frozen base loaded in 4 or 8 bits through bitsandbytes (train.quantization), and loaded the same
way wherever the version is used again (evaluate, verify, generate); `merge` uses the full-precision base.

bitsandbytes is an optional dependency (the `qlora` extra); asking for quantization without it, or on a device
it does not run on, is a UserError before any model loads.
"""

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.params import WEIGHT_DTYPES, knob, require
from loravc.core.schema import build


@dataclass
class QuantizationParams:
    """QLoRA: the frozen base in 4 or 8 bits (bitsandbytes, the `qlora` extra); the adapter trains in full precision."""

    bits: int | None = knob(None, "4 or 8: load the frozen base quantized (QLoRA); null: full precision")
    quant_type: str = knob("nf4", "4-bit data type: nf4 or fp4")
    double_quant: bool = knob(True, "4-bit: quantize the quantization constants too (about 0.4 bits a weight less)")
    compute_dtype: str = knob(
        "auto", "4-bit matrix products in: auto (bfloat16 where native, else float32), float32 or bfloat16"
    )

    def __post_init__(self) -> None:
        require(self.bits in (None, 4, 8), "train.quantization.bits", f"must be 4, 8 or null, got {self.bits!r}")
        require(self.quant_type in ("nf4", "fp4"), "train.quantization.quant_type", "must be nf4 or fp4")
        require(
            self.compute_dtype in WEIGHT_DTYPES,
            "train.quantization.compute_dtype",
            f"must be one of {', '.join(WEIGHT_DTYPES)}",
        )


BITSANDBYTES = "bitsandbytes==0.50.2"  # the version the CPU workaround below is written for (pyproject's qlora extra)


def check_available(q: QuantizationParams, device: str, key: str = "train.quantization.bits") -> None:
    """UserError where train.quantization cannot run: bitsandbytes missing, or a device it does not support."""
    if q.bits is None:
        return
    own = key.startswith("train.")  # params the user can change (not a version's record)
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            f"{key} is {q.bits}: {q.bits}-bit bases need bitsandbytes, which is not installed: "
            f"run `QLORA=1 bash scripts/setup.sh` (it adds locks/qlora.txt: {BITSANDBYTES})"
            + (f", or set {key}: null" if own else "")
        )
    if device == "mps" or device.startswith("mps:"):
        raise UserError(f"{key} is {q.bits}: bitsandbytes does not run on mps: use cpu or cuda")


def bnb_config(q: QuantizationParams, device: str) -> Any:
    """transformers' BitsAndBytesConfig for train.quantization (compute dtype "auto": bf16 where native)."""
    import torch
    from transformers import BitsAndBytesConfig

    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype(q, device)),
    )


def compute_dtype(q: QuantizationParams, device: str) -> str:
    """The 4-bit matrix products' dtype: train.quantization.compute_dtype, for "auto" bf16 where native."""
    from loravc.core.devices import bf16_supported

    if q.compute_dtype != "auto":
        return q.compute_dtype
    return "bfloat16" if bf16_supported(device) else "float32"


def load_options(q: QuantizationParams, device: str) -> dict[str, Any]:
    """from_pretrained options of a k-bit base on `device` ({} when train.quantization is off)."""
    if q.bits is None:
        return {}
    import os

    place = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device == "cuda" else device  # cuda:N as given
    return {"quantization_config": bnb_config(q, device), "device_map": {"": place}}


def prepare(model: Any, checkpointing: bool) -> Any:
    """A base just loaded k-bit, made ready for LoRA training: after_load, then PEFT's k-bit preparation (norms
    and embeddings in fp32, input gradients; `checkpointing`: activation checkpointing as SFTConfig has it)."""
    from peft import prepare_model_for_kbit_training

    after_load(model)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)


def after_load(model: Any) -> None:
    """bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a 4-bit layer's weights the first time it runs without
    gradients (an evaluation); backward then no longer reaches through them and training silently stops learning
    (and layers whose width is not a multiple of 32 fail). Keep the layout that trains."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def record(q: QuantizationParams, device: str) -> dict[str, Any] | None:
    """For metadata: how the base was quantized, with the bitsandbytes version (None when off)."""
    if q.bits is None:
        return None
    fields = {"bits": q.bits, "bitsandbytes": importlib.metadata.version("bitsandbytes")}
    if q.bits == 4:
        fields |= {
            "quant_type": q.quant_type,
            "double_quant": q.double_quant,
            "compute_dtype": compute_dtype(q, device),
        }
    return fields


def recorded(adapter_dir: Path) -> QuantizationParams | None:
    """The quantization a version trained with, from its metadata.json (None: a full-precision base, or no
    metadata.json); a damaged file or record is a UserError naming the file."""
    from loravc.core.metadata import METADATA_FILE, read_metadata

    if not (adapter_dir / METADATA_FILE).is_file():
        return None
    found = read_metadata(adapter_dir).training.quantization
    if not found:
        return None
    keys = ("bits", "quant_type", "double_quant", "compute_dtype")
    fix = "restore it with `dvc checkout` (or `dvc pull` if the cache lacks it)"
    try:
        q = build(QuantizationParams, {key: found[key] for key in keys if key in found}, "training.quantization")
    except UserError as err:
        raise UserError(f"{adapter_dir / METADATA_FILE}: {err}: {fix}") from None
    if q.bits is None:
        raise UserError(f"{adapter_dir / METADATA_FILE}: training.quantization names no bits: {fix}")
    return q
