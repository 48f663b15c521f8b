"""LoRA fine-tuning with TRL's SFTTrainer and PEFT, configured from params.yaml."""

import importlib.util
import tempfile
import warnings
from pathlib import Path
from typing import Any

from loravc.core import quantization
from loravc.core.base_files import read_identity, save_tokenizer
from loravc.core.devices import bf16_supported, cpu_bf16, keep_freed_memory, resolve_device
from loravc.core.errors import UserError
from loravc.core.metadata import (
    DataRecord,
    LoraRecord,
    TrainingRecord,
    TrainMetrics,
    VersionMetadata,
    git_revision,
    library_versions,
    utc_now,
    version_id,
    write_metadata,
)
from loravc.core.tracking import live_callback, open_live
from loravc.data import labels
from loravc.data import records as data
from loravc.train import attention, checkpoints, preflight, pruning
from loravc.train.card import card_text
from loravc.train.launch import check_world_size, engine, is_main_process
from loravc.train.lora import lora_config
from loravc.train.params import (
    EARLY_STOPPING_METRICS,
    PROFILES,
    TRAINER_DEFAULTS,
    EarlyStoppingParams,
    TrainParams,
    run_batch,
)


def save_initial_adapter(model: Any, directory: Path) -> None:
    """Before training with PiSSA/OLoRA: the adapter as initialised, saved so that `save_adapter` can convert.

    Saved with init_lora_weights true (PEFT's recipe): loading it back must not decompose the base again.
    """
    config = model.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True
    try:
        model.save_pretrained(directory, safe_serialization=True)
    finally:
        config.init_lora_weights = init


def save_adapter(model: Any, out_dir: Path, state_dict: dict[str, Any] | None, initial: Path | None) -> None:
    """The trained adapter as safetensors. With `initial` (PiSSA/OLoRA, whose training changed the base's
    weights) it is converted to a plain LoRA of twice the rank that applies to the unchanged base."""
    if initial is None:
        model.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
        return
    # No state_dict: PEFT loads the initial adapter into the model and subtracts it (this process holds it all)
    model.save_pretrained(out_dir, safe_serialization=True, path_initial_model_for_weight_conversion=str(initial))


def sft_config(params: TrainParams, device: str, output_dir: Path, plan: labels.LossPlan | None = None) -> Any:
    """SFTConfig from TRAINER_DEFAULTS, the profile, the user's train.trainer block, and the device.

    bf16 mixed precision is on where the device runs bf16 natively (a GPU with bf16, a CPU with AMX or
    AVX512-BF16: loravc.core.devices.bf16_supported) and off elsewhere (TRL turns it on everywhere). The tokens
    the loss trains on come from the data (`plan`, loravc.data.labels.loss_plan; None: every token). TRL
    validates every key of train.trainer.
    """
    from trl import SFTConfig

    if ":" in device:
        raise UserError(f"train.device {device!r}: choose the GPU with CUDA_VISIBLE_DEVICES and set 'cuda'")
    # Activation checkpointing off: a model this size fits easily, and recomputing halves CPU speed.
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing; accept either.
    checkpointing = "activation_checkpointing"
    if checkpointing not in SFTConfig.__dataclass_fields__:
        checkpointing = "gradient_checkpointing"
    user = dict(params.trainer)
    for old in ("gradient_checkpointing", "activation_checkpointing"):
        if old in user:
            user[checkpointing] = user.pop(old)
    profile = resolve_profile(params.profile, device)
    kwargs = TRAINER_DEFAULTS | {checkpointing: False, "use_cpu": device == "cpu"} | PROFILES[profile].trainer
    tokens = plan.tokens if plan else labels.ALL
    kwargs |= {"assistant_only_loss": tokens == labels.ASSISTANT, "completion_only_loss": tokens == labels.COMPLETION}
    kwargs["bf16"] = kwargs.get("bf16", False) and bf16_supported(device)
    liger_missing = importlib.util.find_spec("liger_kernel") is None
    if kwargs.get("use_liger_kernel") and "use_liger_kernel" not in user and liger_missing:
        kwargs["use_liger_kernel"] = False  # a profile default: fall back to PyTorch's kernels
        message = "liger-kernel is not installed: training without its fused kernels (pip install liger-kernel)"
        warnings.warn(message, stacklevel=2)
    kwargs |= user
    if kwargs.get("use_liger_kernel") and liger_missing:
        raise UserError(
            "train.trainer.use_liger_kernel is true but liger-kernel is not installed: pip install liger-kernel"
        )
    kwargs = run_batch(kwargs, PROFILES[profile])  # the recipe's examples per step, in the profile's micro-batches
    kwargs |= early_stopping_settings(params.early_stopping)
    kwargs |= {"output_dir": str(output_dir), "seed": params.seed, "max_length": params.max_length}
    try:
        return SFTConfig(**kwargs)
    except TypeError as err:  # an unknown keyword
        raise UserError(f"train.trainer: {err} (see trl.SFTConfig for the keys it accepts)") from None
    except ValueError as err:
        raise UserError(f"train.trainer: {err}") from None


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


def resolve_profile(profile: str, device: str) -> str:
    """The PROFILES entry for train.profile on `device` ("auto": gpu on CUDA, cpu elsewhere)."""
    if profile == "auto":
        return "gpu" if device.startswith("cuda") else "cpu"
    return profile


def _dataset(records: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(records)


def train(
    tp: TrainParams,
    base_dir: Path,
    prepared_dir: Path,
    out_dir: Path,
    live_dir: Path,
    checkpoints_dir: Path | None = None,
) -> VersionMetadata:
    """Fine-tune, then write the version directory: adapter, tokenizer, metadata.json (no pickles).

    Per-step loss and learning rate and per-epoch validation loss go to dvclive in live_dir.
    Checkpoints go to checkpoints_dir (a temporary directory if None): a run resumes from the
    newest one made with the same train params, data and base, and clears them when it is done.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback, set_seed
    from trl import SFTTrainer

    device = resolve_device(tp.device, "train.device")
    # A wrong type, zero steps or an unknown target module: a UserError now, not after loading and tokenizing
    preflight.check_train_params(tp, base_dir, prepared_dir, resolve_profile(tp.profile, device), tp.processes)
    quantization.check_available(tp.quantization, device)
    identity = read_identity(base_dir)
    info = data.read_info(prepared_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    plan = labels.loss_plan(info["shape"], tokenizer, info["loss_on"])  # what prepare counted; before any model
    plain_template = tokenizer.chat_template
    train_records = data.read_split(prepared_dir, "train")
    validation_records = data.read_split(prepared_dir, "validation")
    data_sha256 = data.files_sha256(prepared_dir / f"{name}.jsonl" for name in ("train", "validation"))
    expected = checkpoints.fingerprint(tp, data_sha256, identity, plan.tokens)

    started = utc_now()
    with tempfile.TemporaryDirectory(prefix="loravc-train-") as scratch:
        run_dir = checkpoints_dir or Path(scratch)
        config = sft_config(tp, device, run_dir, plan)
        if keeps_freed_memory(config, device):
            keep_freed_memory()  # fp32: no page faults for each step's activations (see its docstring on bf16)
        check_world_size(tp.processes, config.world_size)  # before any checkpoint is discarded or model loaded
        main = is_main_process()  # under DDP every process trains; one writes
        resume = checkpoints.select_resume(run_dir, expected, discard=main)
        if resume and main:
            checkpoints.restore_live(resume, live_dir)
        seconds_before = resume.train_seconds if resume else 0.0  # the training time up to the checkpoint
        set_seed(tp.seed)
        tokenizer.chat_template = plan.chat_template or plain_template  # the marked one for training only
        options = model_options(tp.profile, device) | quantization.load_options(tp.quantization, device)
        model = AutoModelForCausalLM.from_pretrained(base_dir, **options)
        if tp.quantization.bits:  # QLoRA
            model = quantization.prepare(model, config.gradient_checkpointing)
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=_dataset(train_records),
            eval_dataset=_dataset(validation_records),
            processing_class=tokenizer,
            peft_config=lora_config(tp.lora),
        )
        distributed = engine(trainer.accelerator)  # FSDP, DDP, ...: what accelerate chose (not always the config's)
        lora_dtype = adapter_dtype(tp, device)
        cast_adapter(trainer.model, lora_dtype)
        initial = Path(scratch) / "initial_adapter" if tp.lora.mutates_base else None
        if initial and distributed in ("FSDP", "DEEPSPEED"):  # the conversion needs the whole model in one process
            raise UserError(
                f"train.lora.init_lora_weights {tp.lora.options['init_lora_weights']!r} is converted for the unchanged "
                f"base in the main process, which under {distributed} holds a shard: train it with DDP (no accelerate "
                "config) or in one process"
            )
        if initial and main:
            save_initial_adapter(trainer.model, initial)  # PiSSA/OLoRA: to convert the trained one against
        # A second Live would clear the directory: only the main process opens one.
        live = open_live(live_dir, resume=resume is not None) if main else None
        trainer.add_callback(live_callback(live))
        trainer.add_callback(checkpoints.callback(expected, live_dir, seconds_before))
        if resume and hasattr(trainer, "_total_train_tokens"):
            trainer._total_train_tokens = resume.num_tokens  # SFTTrainer counts from 0 on a resume
        trial = pruning.trial_spec()  # a `loravc tune` trial: report each evaluation, stop if pruned
        report = pruning.callback(trial) if trial and tp.processes == 1 else None
        if report:
            trainer.add_callback(report)
        if tp.early_stopping.on:  # stateful: its count of evaluations without improvement resumes with a checkpoint
            patience, threshold = tp.early_stopping.patience, tp.early_stopping.min_delta
            trainer.add_callback(
                EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
            )
        result = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        if report and report.pruned:
            raise pruning.TrialPruned(report.pruned)
        validation_loss = _last_logged(trainer.state.log_history, "eval_loss")
        if tp.early_stopping.on:  # the best evaluation's weights were restored: its loss is the version's
            validation_loss = _last_logged(trainer.state.log_history, "eval_loss", trainer.state.best_global_step)
        if validation_loss is None:  # eval_strategy "no": evaluate once at the end
            validation_loss = trainer.evaluate()["eval_loss"]
        finished = utc_now()

        # Every process takes part: FSDP and DeepSpeed ZeRO-3 gather their shards here (DDP holds whole copies).
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_adapter(trainer.accelerator.unwrap_model(trainer.model), out_dir, state_dict, initial)
            tokenizer.chat_template = plain_template  # the version keeps the base's template for inference
            save_tokenizer(tokenizer, out_dir)
    state = trainer.state
    metrics = {
        "train_loss": round(_run_train_loss(result.training_loss, state.log_history, resume), 6),
        "validation_loss": round(validation_loss, 6),
        "train_tokens": int(_last_logged(state.log_history, "num_tokens") or 0),
        "train_seconds": round(seconds_before + result.metrics["train_runtime"], 2),  # the whole run's
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
    }
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    saved = {str(value.dtype).removeprefix("torch.") for key, value in state_dict.items() if "lora_" in key}
    lora = tp.lora
    metadata = VersionMetadata(
        version_id=version_id(finished),
        created=finished.isoformat(),
        started=started.isoformat(),
        base_model=identity,
        lora=LoraRecord(
            r=lora.r,
            alpha=lora.alpha,
            dropout=lora.dropout,
            bias=lora.bias,
            target_modules=[lora.target_modules] if isinstance(lora.target_modules, str) else list(lora.target_modules),
            options=dict(lora.options),
            dtype="/".join(sorted(saved)) or lora_dtype,
            trainable_parameters=trainable,
        ),
        data=DataRecord(
            sha256=data_sha256,
            train_records=len(train_records),
            validation_records=len(validation_records),
            source=info["source"],
            shape=info["shape"],
            fixed_test=info["fixed_test"],
            files=info["files"],
        ),
        training=TrainingRecord(
            seed=tp.seed,
            device=device,
            max_length=tp.max_length,
            trainer=_trainer_args(trainer.args),
            resumed_from_step=resume.step if resume else None,
            loss_on=plan.tokens,
            chat_template=plan.template_name,
            precision=precision(trainer.args, device),
            attention=trainer.model.config._attn_implementation,
            early_stopping=early_stopping_record(tp.early_stopping, state),
            quantization=quantization.record(tp.quantization, device),
            distributed=distributed,
        ),
        metrics=TrainMetrics(**metrics),
        code=git_revision(),
        libraries=library_versions(),
        world_size=trainer.args.world_size,
    )
    if main:
        write_metadata(out_dir, metadata)
        (out_dir / "README.md").write_text(card_text(metadata), encoding="utf-8")  # the card, not PEFT's template
        live.summary = dict(metrics)  # the run's figures; the per-step values are in the plots
        live.make_summary()
        if checkpoints_dir is not None and checkpoints.clear(checkpoints_dir):
            print(f"train: finished, removed the checkpoints in {checkpoints_dir}")
    return metadata


def _run_train_loss(trainer_figure: float, history: list[dict[str, Any]], resume: Any) -> float:
    """Mean training loss of the whole run, also when it was resumed from a checkpoint."""
    if resume is None:
        return trainer_figure
    logged = checkpoints.mean_train_loss(history)
    return trainer_figure if logged is None else logged


def _last_logged(history: list[dict[str, Any]], key: str, step: int | None = None) -> float | None:
    """The last value of `key` the Trainer logged (at `step`, if given)."""
    values = [entry[key] for entry in history if key in entry and step in (None, entry.get("step"))]
    return values[-1] if values else None


def _trainer_args(args: Any) -> dict[str, Any]:
    """The effective training arguments worth keeping (TrainingArguments has ~150 fields)."""
    keys = (
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_steps",
        "weight_decay",
        "bf16",
        "fp16",
        "activation_checkpointing",
        "gradient_checkpointing",
        "packing",
        "optim",
        "eval_strategy",
        "eval_steps",
        "load_best_model_at_end",
        "metric_for_best_model",
    )
    found = args.to_dict()
    return {key: found[key] for key in keys if key in found}
