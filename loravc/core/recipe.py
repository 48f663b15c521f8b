"""A version's recipe in words, from its metadata.json: what it adds to plain LoRA on a full-precision base (PEFT
variants, a quantized base) and how early stopping ended it. The run summary and `loravc list` say it alike."""

from typing import Any

VARIANTS = {"use_dora": "DoRA", "use_rslora": "rsLoRA"}
INITS = {"pissa": "PiSSA", "olora": "OLoRA", "gaussian": "Gaussian", "orthogonal": "orthogonal"}
NAMED = {*VARIANTS, "init_lora_weights", "modules_to_save"}


def lora_variants(options: dict[str, Any], quantization: dict[str, Any] | None) -> list[str]:
    """The PEFT variants of train.lora's options (metadata lora.options) and the quantized base (metadata
    training.quantization), each a few words; [] for plain LoRA on a full-precision base."""
    words = [name for key, name in VARIANTS.items() if options.get(key)]
    init = options.get("init_lora_weights")
    if isinstance(init, str):
        niter = init.removeprefix("pissa_niter_")
        words.append(f"PiSSA init ({niter} iterations)" if niter != init else f"{INITS.get(init, init)} init")
    elif init is False:
        words.append("random init (B not zero)")
    if saved := options.get("modules_to_save"):
        words.append(f"whole {', '.join(saved)} trained")
    if other := sorted(set(options) - NAMED):
        words.append(f"options {', '.join(other)}")
    if quantization:
        kind = f" {quantization['quant_type']}" if quantization.get("quant_type") else ""
        words.append(f"{quantization['bits']}-bit{kind} base (QLoRA)")
    return words


def steps_run(steps: int, early_stopping: dict[str, Any] | None) -> str:
    """The optimizer steps a version trained for, with early stopping's outcome (metadata training.early_stopping):
    where it stopped of the steps planned, and the best evaluation, whose weights the version holds."""
    if not early_stopping:
        return f"{steps} steps"
    best_value = early_stopping.get("best_value")
    value = f" {best_value:.4f}" if isinstance(best_value, int | float) else ""
    best = f"best {early_stopping['metric']}{value} at step {early_stopping['best_step']}, kept"
    planned = early_stopping["planned_steps"]
    if early_stopping.get("stopped_early"):
        return f"{early_stopping['stopped_at_step']} of {planned} planned steps (stopped early; {best})"
    return f"{steps} steps (early stopping on, did not stop; {best})"
