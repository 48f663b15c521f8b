"""A version's recipe beyond rank and data, from its metadata.json: the PEFT variant, a quantized base and an
early stop, what `loravc list` names on each version's line (`loravc show` has the whole record).

Metadata written before these were recorded (no `lora.options`, `training.quantization` or
`training.early_stopping`) reads as plain LoRA on a full-precision base without early stopping.
"""

import json
from typing import Any

from loravc.core.metadata import VersionMetadata

FLAGS = {"use_dora": "DoRA", "use_rslora": "rsLoRA"}  # peft.LoraConfig switches that name a variant
INITS = {"pissa": "PiSSA", "olora": "OLoRA"}  # init_lora_weights prefixes (pissa_niter_16 is PiSSA too)
STOP_KEYS = ("best_step", "stopped_at_step", "planned_steps", "stopped_early")


def recipe(meta: VersionMetadata) -> dict[str, Any]:
    """{"variants": names, "quantization": metadata's record or None, "early_stopping": its steps or None}."""
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
