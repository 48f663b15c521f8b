"""How a run is configured from params.yaml `train` on a device: the SFTConfig settings (merged in one place, for
the run and its preflight), the profile, the dtypes of the frozen base and of the trained adapter, early
stopping's settings and record, and how the run computed (for metadata)."""

import importlib.util
import warnings
from pathlib import Path
from typing import Any

from loravc.core.devices import bf16_supported, cpu_bf16
from loravc.core.errors import UserError
from loravc.data import labels
from loravc.train import attention
from loravc.train.params import (
    EARLY_STOPPING_METRICS,
    PROFILES,
    TRAINER_DEFAULTS,
    EarlyStoppingParams,
    TrainParams,
    run_batch,
)


def trainer_settings(params: TrainParams, device: str, tokens: str = labels.ALL) -> dict[str, Any]:
    """Every SFTConfig argument the pipeline sets (but output_dir), merged in one place for the run and its
    preflight: TRAINER_DEFAULTS, the profile's and the device's settings, the loss's tokens (`tokens`, from the
    data: labels.loss_plan), train.trainer on top, params' examples per step in the profile's micro-batches,
    early stopping's settings, seed and max_length.

    bf16 mixed precision is on where the device runs bf16 natively (a GPU with bf16, a CPU with AMX or
    AVX512-BF16: loravc.core.devices.bf16_supported) and off elsewhere (TRL turns it on everywhere).
    Activation checkpointing is off: a model this size fits easily, and recomputing halves CPU speed.
    """
    checkpointing = checkpointing_key()
    user = dict(params.trainer)
    for old in ("gradient_checkpointing", "activation_checkpointing"):  # transformers 5 renamed it; either works
        if old in user:
            user[checkpointing] = user.pop(old)
    profile = PROFILES[resolve_profile(params.profile, device)]
    kwargs = TRAINER_DEFAULTS | {checkpointing: False, "use_cpu": device == "cpu"} | profile.trainer
    kwargs |= {"assistant_only_loss": tokens == labels.ASSISTANT, "completion_only_loss": tokens == labels.COMPLETION}
    kwargs["bf16"] = kwargs.get("bf16", False) and bf16_supported(device)
    if kwargs.get("use_liger_kernel") and "use_liger_kernel" not in user and not liger_installed():
        kwargs["use_liger_kernel"] = False  # a profile default: fall back to PyTorch's kernels
    kwargs = run_batch(kwargs | user, profile)  # the recipe's examples per step, in the profile's micro-batches
    kwargs |= early_stopping_settings(params.early_stopping)
    return kwargs | {"seed": params.seed, "max_length": params.max_length}


def checkpointing_key() -> str:
    """SFTConfig's name for activation checkpointing: transformers 5 renamed gradient_checkpointing."""
    from trl import SFTConfig

    renamed = "activation_checkpointing" in SFTConfig.__dataclass_fields__
    return "activation_checkpointing" if renamed else "gradient_checkpointing"


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def sft_config(params: TrainParams, device: str, output_dir: Path, plan: labels.LossPlan | None = None) -> Any:
    """trl.SFTConfig from `trainer_settings` for the run in output_dir; the tokens the loss trains on come from
    the data (`plan`, loravc.data.labels.loss_plan; None: every token). TRL validates every key of train.trainer.
    """
    from trl import SFTConfig

    if ":" in device:
        raise UserError(f"train.device {device!r}: choose the GPU with CUDA_VISIBLE_DEVICES and set 'cuda'")
    kwargs = trainer_settings(params, device, plan.tokens if plan else labels.ALL)
    if kwargs.get("use_liger_kernel") and not liger_installed():
        raise UserError(
            "train.trainer.use_liger_kernel is true but liger-kernel is not installed: on a CUDA GPU, `GPU=1 bash "
            "scripts/setup.sh` installs it (locks/cuda.txt)"
        )
    profile_liger = PROFILES[resolve_profile(params.profile, device)].trainer.get("use_liger_kernel")
    if profile_liger and "use_liger_kernel" not in params.trainer and not liger_installed():
        message = "liger-kernel is not installed: training without its fused kernels (`GPU=1 bash scripts/setup.sh`)"
        warnings.warn(message, stacklevel=2)
    try:
        return SFTConfig(**kwargs, output_dir=str(output_dir))
    except TypeError as err:  # an unknown keyword
        raise UserError(f"train.trainer: {err} (see trl.SFTConfig for the keys it accepts)") from None
    except ValueError as err:
        raise UserError(f"train.trainer: {err}") from None


def resolve_profile(profile: str, device: str) -> str:
    """The PROFILES entry for train.profile on `device` ("auto": gpu on CUDA, cpu elsewhere)."""
    if profile == "auto":
        return "gpu" if device.startswith("cuda") else "cpu"
    return profile


def early_stopping_settings(es: EarlyStoppingParams) -> dict[str, Any]:
    """SFTConfig settings early stopping needs: evaluation and a checkpoint every es.eval_steps steps (per-epoch
    evaluation would give a one-epoch run a single look), the best checkpoint restored at the end; {} when off."""
    if not es.on:
        return {}
    return {
        "eval_strategy": "steps",
        "eval_steps": es.eval_steps,
        "save_strategy": "steps",
        "save_steps": es.eval_steps,
        "load_best_model_at_end": True,
        "metric_for_best_model": es.metric,
        "greater_is_better": EARLY_STOPPING_METRICS[es.metric] == "maximize",
        "restore_callback_states_from_checkpoint": True,  # a resumed run keeps counting evaluations without gain
    }


def early_stopping_record(es: EarlyStoppingParams, state: Any) -> dict[str, Any] | None:
    """For metadata: what early stopping watched, the best evaluation (whose weights are the version), where
    training stopped and why; None when it was off."""
    if not es.on:
        return None
    stopped_early = state.global_step < state.max_steps
    best = state.best_global_step
    if stopped_early:
        reason = (
            f"{es.metric} did not improve by more than {es.min_delta} in {es.patience} evaluation(s) after step {best}"
        )
    else:
        reason = f"ran all {state.max_steps} planned steps; the best {es.metric} was at step {best}"
    return {
        "metric": es.metric,
        "patience": es.patience,
        "eval_steps": es.eval_steps,
        "min_delta": es.min_delta,
        "best_step": best,
        "best_value": state.best_metric,
        "stopped_at_step": state.global_step,
        "planned_steps": state.max_steps,
        "stopped_early": stopped_early,
        "reason": reason,
    }


def base_dtype(profile: str, device: str) -> str:
    """The dtype to load the frozen base in: the profile's, but fp32 where the device lacks bf16."""
    return _bf16_or_fp32(PROFILES[resolve_profile(profile, device)].base_dtype, device)


def model_options(profile: str, device: str) -> dict[str, Any]:
    """from_pretrained options of the frozen base for the profile on `device`: its dtype and attention."""
    import torch

    options: dict[str, Any] = {"dtype": getattr(torch, base_dtype(profile, device))}
    name = PROFILES[resolve_profile(profile, device)].attention
    if name == attention.NAME:  # a CPU's kernels; on a GPU the model's default (sdpa)
        name = attention.register() if device == "cpu" else None
    if name:
        options["attn_implementation"] = name
    return options


def keeps_freed_memory(args: Any, device: str) -> bool:
    """Whether training with these SFTConfig args has glibc keep freed memory: fp32 on a CPU (keep_freed_memory)."""
    return device == "cpu" and precision(args, device) == "fp32"  # an accelerate config's bf16 counts too


def precision(args: Any, device: str) -> str:
    """How the run computed, for metadata: "fp32", or "bf16 autocast (X)" with X the device's native bf16
    (avx512_bf16, amx, cuda), "emulated" on a CPU without it (train.trainer.bf16 asked for), or the device.
    An accelerate config's mixed_precision counts too: accelerate autocasts with it when train.trainer does not."""
    mixed = getattr(args, "mixed_precision", "no")  # TrainingArguments: fp16/bf16, else ACCELERATE_MIXED_PRECISION
    if args.fp16 or mixed == "fp16":
        return f"fp16 autocast ({device})"
    if not (args.bf16 or mixed == "bf16"):
        return "fp32"
    if device == "cpu":
        return f"bf16 autocast ({cpu_bf16() or 'emulated'})"
    return f"bf16 autocast ({'cuda' if device.startswith('cuda') else device})"


def adapter_dtype(params: TrainParams, device: str) -> str:
    """The dtype of the trained LoRA weights: train.lora.dtype, or for "auto" the profile's (fp32 without bf16)."""
    if params.lora.dtype != "auto":
        return params.lora.dtype
    return _bf16_or_fp32(PROFILES[resolve_profile(params.profile, device)].lora_dtype, device)


def _bf16_or_fp32(dtype: str, device: str) -> str:
    return dtype if dtype != "bfloat16" or bf16_supported(device) else "float32"


def cast_adapter(model: Any, dtype: str) -> None:
    """Put the trainable (LoRA) weights in `dtype`; call before the optimizer is made (trainer.train)."""
    import torch

    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(getattr(torch, dtype))
