"""A version's recipe beyond rank and data, in words, from its metadata.json: the PEFT variant, a quantized base and
an early stop. The evaluate stage's summary and `loravc list` say it alike (`loravc show` has the whole record).

Metadata written before these were recorded (no `lora.options`, `training.quantization` or
`training.early_stopping`) reads as plain LoRA on a full-precision base without early stopping.
"""

import json
from typing import Any

FLAGS = {"use_dora": "DoRA", "use_rslora": "rsLoRA"}  # peft.LoraConfig switches that name a variant
INITS = {"pissa": "PiSSA", "olora": "OLoRA"}  # init_lora_weights prefixes (pissa_niter_16 is PiSSA too)
STOP_KEYS = ("best_step", "stopped_at_step", "planned_steps", "stopped_early")


def record(meta: Any) -> dict[str, Any]:
    """{"variants": names, "quantization": metadata's record or None, "early_stopping": its steps or None}, from a
    loravc.core.metadata.VersionMetadata."""
    stop = meta.training.early_stopping
    return {
        "variants": variants(meta.lora.options),
        "quantization": meta.training.quantization or None,
        "early_stopping": {key: stop.get(key) for key in STOP_KEYS} if stop else None,
    }


def variants(options: dict[str, Any]) -> list[str]:
    """The PEFT options of train.lora as names: DoRA, rsLoRA, PiSSA, OLoRA, `<init> init` for another
    initialisation, and any other option by its key (modules_to_save, rank_pattern, ...)."""
    names = []
    for key, value in options.items():
        if key in FLAGS:
            names += [FLAGS[key]] if value else []
        elif key == "init_lora_weights":
            if isinstance(value, str):
                named = (name for prefix, name in INITS.items() if value.startswith(prefix))
                names.append(next(named, f"{value} init"))
            elif value is not True:
                names.append(f"init_lora_weights {json.dumps(value)}")
        else:
            names.append(key)
    return names


def quantized_base(quantization: dict[str, Any] | None) -> str | None:
    """`4-bit nf4 base` or `8-bit base` (metadata training.quantization); None for a full-precision base."""
    if not quantization:
        return None
    kind = f" {quantization['quant_type']}" if quantization.get("quant_type") else ""
    return f"{quantization['bits']}-bit{kind} base"


def early_stop(stop: dict[str, Any] | None) -> str | None:
    """`stopped at step 20 of 60 (best 15)`, or `all 60 steps (best 50)` when it ran to the end: where training
    stopped of the steps planned, and the best evaluation's step, whose weights are the version. None: it was off."""
    if not stop:
        return None
    planned = stop["planned_steps"]
    ran = f"stopped at step {stop['stopped_at_step']} of {planned}" if stop["stopped_early"] else f"all {planned} steps"
    return f"{ran} (best {stop['best_step']})"


def text(recipe: dict[str, Any] | None) -> str:
    """`DoRA, 4-bit nf4 base, stopped at step 20 of 60 (best 15)` from `record`'s dict; "-" for plain LoRA on a
    full-precision base (and for versions from before these were recorded)."""
    if not recipe:
        return "-"
    parts = [*recipe["variants"], quantized_base(recipe["quantization"]), early_stop(recipe["early_stopping"])]
    return ", ".join(part for part in parts if part) or "-"
