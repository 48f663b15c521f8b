"""params.yaml `train`: fine-tuning's typed settings, the project's SFTConfig defaults and the speed profiles.

train.lora (loravc.train.lora) and train.quantization (loravc.core.quantization) have their own modules;
train.trainer goes to trl.SFTConfig on top of TRAINER_DEFAULTS and the profile (`trainer_settings`).
"""

from dataclasses import dataclass
from typing import Any

from loravc.core.errors import UserError
from loravc.core.params import MAX_LENGTH, check_device, check_max_length, knob, require, section
from loravc.core.quantization import QuantizationParams
from loravc.train.lora import LoraParams

# The project's defaults for trl.SFTConfig where they differ from TRL's own; train.trainer overrides them.
TRAINER_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 3,  # with learning_rate: what learns the shipped task (docs/evaluation.md)
    "per_device_train_batch_size": 4,  # rows a step: with packing, rows of up to max_length tokens
    "packing": True,  # examples packed into rows (padding-free, attention kept within each example)
    "per_device_eval_batch_size": 8,
    "learning_rate": 1.0e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,  # a fraction of the total steps
    "logging_steps": 5,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",  # a checkpoint after each epoch, to resume from after a kill
    "save_total_limit": 2,  # keep the newest two (loravc.train.checkpoints clears them after a finished run)
    "report_to": "none",
    "disable_tqdm": True,  # no progress bars: the loss lines (logging_steps) show progress; false draws them
}


@dataclass(frozen=True)
class Profile:
    """How to run on one kind of device: SFTConfig settings on top of TRAINER_DEFAULTS, and weight dtypes.

    Chosen by train.profile; train.trainer and train.lora.dtype override it. A profile chooses how to run
    the recipe, never the recipe: the examples per optimizer step, learning rate, epochs and steps come
    from params alone (`micro_batch` splits a step into forward passes, `run_batch`). Measured side by
    side with `python -m bench.throughput` (docs/performance.md).
    """

    trainer: dict[str, Any]
    base_dtype: str  # the frozen base weights (fp32 where the device lacks bf16)
    lora_dtype: str  # the trained LoRA weights when train.lora.dtype is "auto" (fp32 where the device lacks bf16)
    micro_batch: int | None = None  # most examples in one forward pass; None: as params split them
    attention: str | None = None  # transformers' attn_implementation; None: the model's default (sdpa)

    def __post_init__(self) -> None:
        if recipe := sorted(set(self.trainer) & set(RECIPE_KEYS)):
            raise ValueError(f"a profile sets how to run, not the recipe: {', '.join(recipe)} belong in params")


# The recipe: what a version depends on beyond floating-point noise. Params set it; a profile must not.
RECIPE_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "packing",  # what a row, and so a step, holds
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
)


def run_batch(settings: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The micro-batch and accumulation steps that run params' examples per optimizer step on this profile.

    The step keeps per_device_train_batch_size x gradient_accumulation_steps examples (params' recipe); a
    profile with a `micro_batch` runs them in the fewest forward passes of at most that many examples
    (the largest divisor of the step's examples that fits), so every profile trains the same steps.
    """
    per_step = int(settings.get("per_device_train_batch_size", 8)) * int(settings.get("gradient_accumulation_steps", 1))
    if profile.micro_batch is None or per_step < 1:  # nothing to split (preflight names a bad value)
        return settings
    micro = max(d for d in range(1, min(per_step, profile.micro_batch) + 1) if per_step % d == 0)
    return settings | {"per_device_train_batch_size": micro, "gradient_accumulation_steps": per_step // micro}


PROFILES: dict[str, Profile] = {
    # bf16 autocast where the CPU has AMX or AVX512-BF16 (loravc.core.devices.cpu_bf16), fp32 where bf16 would be
    # emulated (slower than fp32); base and LoRA weights stay fp32 (bf16 base weights: 1.04x, not worth the
    # rounding). Attention over each packed example's own span (loravc.train.attention), not the whole packed row.
    "cpu": Profile(trainer={"bf16": True}, base_dtype="float32", lora_dtype="float32", attention="sdpa_varlen"),
    # bf16 autocast, bf16 base and LoRA weights (nothing cast around each adapted projection); rows drawn
    # grouped by length; Liger's fused RMSNorm/SwiGLU/RoPE kernels where installed.
    "gpu": Profile(
        trainer={"bf16": True, "train_sampling_strategy": "group_by_length", "use_liger_kernel": True},
        base_dtype="bfloat16",
        lora_dtype="bfloat16",
        micro_batch=512,  # an H200 runs 512 rows of 512 tokens at once (docs/performance.md)
    ),
}
PROFILE_CHOICES = ("auto", *PROFILES)


# Validation metrics early stopping can watch (SFTTrainer's evaluation logs them) and which way is better
EARLY_STOPPING_METRICS = {"eval_loss": "minimize", "eval_mean_token_accuracy": "maximize"}
# SFTConfig settings early stopping sets: evaluation and checkpoints every eval_steps, the best restored at the end
EARLY_STOPPING_KEYS = (
    "eval_strategy",
    "eval_steps",
    "save_strategy",
    "save_steps",
    "load_best_model_at_end",
    "metric_for_best_model",
    "greater_is_better",
    "restore_callback_states_from_checkpoint",
)


@dataclass
class EarlyStoppingParams:
    """Stop when the validation metric stops improving (transformers' EarlyStoppingCallback); the weights of the
    best evaluation become the version."""

    patience: int = knob(0, "evaluations without improvement before training stops (0: off, every step trains)")
    eval_steps: int = knob(10, "optimizer steps between evaluations (and checkpoints) while it is on")
    metric: str = knob("eval_loss", "the validation metric watched: eval_loss or eval_mean_token_accuracy")
    min_delta: float = knob(0.0, "the least change of the metric that counts as an improvement")

    def __post_init__(self) -> None:
        require(self.patience >= 0, "train.early_stopping.patience", "must be 0 (off) or more")
        require(self.eval_steps >= 1, "train.early_stopping.eval_steps", "must be at least 1")
        metrics = ", ".join(EARLY_STOPPING_METRICS)
        require(self.metric in EARLY_STOPPING_METRICS, "train.early_stopping.metric", f"must be one of {metrics}")
        require(self.min_delta >= 0, "train.early_stopping.min_delta", "must be 0 or more")

    @property
    def on(self) -> bool:
        return self.patience > 0


@dataclass
class TrainParams:
    """Fine-tuning; `trainer` is passed through to trl.SFTConfig, which checks its own keys."""

    seed: int = knob(42, "adapter initialisation, dropout and data order")
    device: str = knob("auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    profile: str = knob(
        "auto", "speed settings per device: auto (gpu on CUDA, else cpu), cpu or gpu (docs/reference/params.md)"
    )
    max_length: int = knob(MAX_LENGTH, "tokens per example; longer ones are truncated")
    processes: int = knob(
        1, "data-parallel processes; above 1 train runs under `accelerate launch` (one per GPU; gloo on a CPU)"
    )
    lora: LoraParams = section(
        LoraParams,
        "the adapter; any other key is a peft.LoraConfig option: use_dora: true, use_rslora: true, "
        "init_lora_weights: pissa, modules_to_save: [lm_head], ... (docs/peft.md)",
    )
    quantization: QuantizationParams = section(
        QuantizationParams, "QLoRA: the frozen base in 4 or 8 bits (bitsandbytes; docs/peft.md)"
    )
    early_stopping: EarlyStoppingParams = section(
        EarlyStoppingParams, "stop when validation stops improving; the best evaluation's weights are the version"
    )
    trainer: dict[str, Any] = knob(
        {key: TRAINER_DEFAULTS[key] for key in ("num_train_epochs", "learning_rate", "logging_steps")},
        "passed to trl.SFTConfig, which checks the keys, on top of the project's defaults and the profile "
        "(docs/reference/params.md); add a key not listed here with `dvc exp run -S +train.trainer.KEY=VALUE`",
    )

    def __post_init__(self) -> None:
        check_device(self.device, "train.device")
        choices = ", ".join(PROFILE_CHOICES)
        require(self.profile in PROFILE_CHOICES, "train.profile", f"must be one of {choices}: {self.profile!r}")
        check_max_length(self.max_length)
        require(self.processes >= 1, "train.processes", "must be at least 1")
        for key, why in _OWNED_KEYS.items():
            require(key not in self.trainer, f"train.trainer.{key}", why)
        if self.quantization.bits and self.lora.mutates_base:
            raise UserError(
                "train.lora.init_lora_weights moves part of the base into the adapter, which a quantized base "
                "(train.quantization.bits) cannot give back exactly: use one or the other"
            )
        if self.early_stopping.on:
            for key in EARLY_STOPPING_KEYS:
                why = "is set by train.early_stopping while it is on (patience above 0): remove it here"
                require(key not in self.trainer, f"train.trainer.{key}", why)


_OWNED_KEYS = {
    "output_dir": "is set by the pipeline (dvc.yaml): remove it",
    "seed": "is set from train.seed: remove it here",
    "max_length": "is set from train.max_length: remove it here",
    "assistant_only_loss": "is set from the data's shape and data.loss_on: remove it here (data.loss_on: all "
    "trains on every token)",
    "completion_only_loss": "is set from the data's shape and data.loss_on: remove it here (data.loss_on: all "
    "trains on every token)",
}
