"""LoRA fine-tuning with TRL's SFTTrainer and PEFT, configured from params.yaml."""

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loravc.core import quantization
from loravc.core.base_files import read_identity, save_tokenizer
from loravc.core.devices import keep_freed_memory, resolve_device
from loravc.core.errors import UserError
from loravc.core.metadata import (
    DataRecord,
    LoraRecord,
    TrainingRecord,
    TrainMetrics,
    VersionMetadata,
    environment_lock,
    git_revision,
    library_versions,
    utc_now,
    version_id,
    write_metadata,
)
from loravc.core.quiet import without_warning
from loravc.core.tracking import live_callback, open_live
from loravc.data import labels
from loravc.data import records as data
from loravc.train import checkpoints, preflight, pruning
from loravc.train.card import card_text
from loravc.train.config import (
    adapter_dtype,
    cast_adapter,
    early_stopping_record,
    keeps_freed_memory,
    model_options,
    precision,
    sft_config,
)
from loravc.train.launch import check_world_size, engine, is_main_process
from loravc.train.lora import lora_config
from loravc.train.params import (
    TrainParams,
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
    # No state_dict: PEFT loads the initial adapter into the model and subtracts it (this process holds it all).
    # Loading it as a second adapter, PEFT warns to convert the PiSSA/OLoRA adapter: what this call does.
    with without_warning(r"(PiSSA|OLoRA) changes the base weights of the model", UserWarning):
        model.save_pretrained(out_dir, safe_serialization=True, path_initial_model_for_weight_conversion=str(initial))


def _dataset(records: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(records)


@dataclass
class Inputs:
    """What a run reads before any model loads: the device, the base's identity, the prepared splits and the
    tokens the loss trains on (what prepare counted), and the fingerprint its checkpoints must match."""

    device: str
    identity: dict[str, Any]
    info: dict[str, Any]
    tokenizer: Any
    plan: labels.LossPlan
    plain_template: str | None  # the base's chat template, which the version keeps for inference
    train_records: list[data.Record]
    validation_records: list[data.Record]
    data_sha256: str
    fingerprint: dict[str, Any]


def read_inputs(tp: TrainParams, base_dir: Path, prepared_dir: Path) -> Inputs:
    """Every check that can fail on params or data (a wrong type, zero steps, an unknown target module, a
    missing bitsandbytes): a UserError now, not after loading and tokenizing; then the run's inputs."""
    from transformers import AutoTokenizer

    device = resolve_device(tp.device, "train.device")
    preflight.check_train_params(tp, base_dir, prepared_dir, device, tp.processes)
    quantization.check_available(tp.quantization, device)
    identity = read_identity(base_dir)
    info = data.read_info(prepared_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    plan = labels.loss_plan(info["shape"], tokenizer, info["loss_on"])  # what prepare counted; before any model
    data_sha256 = data.files_sha256(prepared_dir / f"{name}.jsonl" for name in ("train", "validation"))
    splits = [data.read_split(prepared_dir, name) for name in ("train", "validation")]
    fingerprint = checkpoints.fingerprint(tp, data_sha256, identity, plan.tokens)
    template = tokenizer.chat_template
    return Inputs(device, identity, info, tokenizer, plan, template, *splits, data_sha256, fingerprint)


def build_trainer(tp: TrainParams, inputs: Inputs, base_dir: Path, config: Any) -> Any:
    """The base loaded as the profile and train.quantization say, and TRL's SFTTrainer with the LoRA adapter in
    its dtype; seeded first, so that a run and its resume initialise alike."""
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTTrainer

    set_seed(tp.seed)
    inputs.tokenizer.chat_template = inputs.plan.chat_template or inputs.plain_template  # marked: training only
    options = model_options(tp.profile, inputs.device) | quantization.load_options(tp.quantization, inputs.device)
    model = AutoModelForCausalLM.from_pretrained(base_dir, **options)
    if tp.quantization.bits:  # QLoRA
        model = quantization.prepare(model, config.gradient_checkpointing)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=_dataset(inputs.train_records),
        eval_dataset=_dataset(inputs.validation_records),
        processing_class=inputs.tokenizer,
        peft_config=lora_config(tp.lora),
    )
    cast_adapter(trainer.model, adapter_dtype(tp, inputs.device))
    return trainer


def initial_adapter(tp: TrainParams, trainer: Any, scratch: Path, main: bool) -> Path | None:
    """PiSSA/OLoRA: the adapter as initialised, saved to convert the trained one against; None otherwise."""
    if not tp.lora.mutates_base:
        return None
    distributed = engine(trainer.accelerator)
    if distributed in ("FSDP", "DEEPSPEED"):  # the conversion needs the whole model in one process
        raise UserError(
            f"train.lora.init_lora_weights {tp.lora.options['init_lora_weights']!r} is converted for the unchanged "
            f"base in the main process, which under {distributed} holds a shard: train it with DDP (no accelerate "
            "config) or in one process"
        )
    initial = scratch / "initial_adapter"
    if main:
        save_initial_adapter(trainer.model, initial)
    return initial


def add_callbacks(
    trainer: Any, tp: TrainParams, live: Any, fingerprint: dict[str, Any], live_dir: Path, resume: Any
) -> Any:
    """dvclive, per-epoch checkpoints with their fingerprint, a tune trial's pruning, early stopping. Returns the
    pruning callback (None outside a `loravc tune` trial)."""
    from transformers import EarlyStoppingCallback

    trainer.add_callback(live_callback(live))
    trainer.add_callback(checkpoints.callback(fingerprint, live_dir, resume.train_seconds if resume else 0.0))
    if resume and hasattr(trainer, "_total_train_tokens"):
        trainer._total_train_tokens = resume.num_tokens  # SFTTrainer counts from 0 on a resume
    trial = pruning.trial_spec()  # a `loravc tune` trial: report each evaluation, stop if pruned
    report = pruning.callback(trial) if trial and tp.processes == 1 else None
    if report:
        trainer.add_callback(report)
    if tp.early_stopping.on:  # stateful: its count of evaluations without improvement resumes with a checkpoint
        es = tp.early_stopping
        stopping = EarlyStoppingCallback(early_stopping_patience=es.patience, early_stopping_threshold=es.min_delta)
        trainer.add_callback(stopping)
    return report


def validation_loss(trainer: Any, tp: TrainParams) -> float:
    """The version's validation loss: the last evaluation's, the best one's under early stopping (its weights
    were restored), or one evaluation now where the run evaluated never."""
    history = trainer.state.log_history
    loss = _last_logged(history, "eval_loss")
    if tp.early_stopping.on:
        loss = _last_logged(history, "eval_loss", trainer.state.best_global_step)
    return trainer.evaluate()["eval_loss"] if loss is None else loss


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
    inputs = read_inputs(tp, base_dir, prepared_dir)
    started = utc_now()
    with tempfile.TemporaryDirectory(prefix="loravc-train-") as scratch:
        run_dir = checkpoints_dir or Path(scratch)
        config = sft_config(tp, inputs.device, run_dir, inputs.plan)
        if keeps_freed_memory(config, inputs.device):
            keep_freed_memory()  # fp32: no page faults for each step's activations (see its docstring on bf16)
        check_world_size(tp.processes, config.world_size)  # before any checkpoint is discarded or model loaded
        main = is_main_process()  # under DDP every process trains; one writes
        resume = checkpoints.select_resume(run_dir, inputs.fingerprint, discard=main)
        if resume and main:
            checkpoints.restore_live(resume, live_dir)
        trainer = build_trainer(tp, inputs, base_dir, config)
        initial = initial_adapter(tp, trainer, Path(scratch), main)
        # A second Live would clear the directory: only the main process opens one.
        live = open_live(live_dir, resume=resume is not None) if main else None
        report = add_callbacks(trainer, tp, live, inputs.fingerprint, live_dir, resume)
        result = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        if report and report.pruned:
            raise pruning.TrialPruned(report.pruned)
        loss = validation_loss(trainer, tp)
        finished = utc_now()
        # Every process takes part: FSDP and DeepSpeed ZeRO-3 gather their shards here (DDP holds whole copies).
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_adapter(trainer.accelerator.unwrap_model(trainer.model), out_dir, state_dict, initial)
            inputs.tokenizer.chat_template = inputs.plain_template  # the version keeps the base's for inference
            save_tokenizer(inputs.tokenizer, out_dir)
    run = Run(trainer, result, loss, resume, started, finished, state_dict)
    metrics = run_metrics(run)
    metadata = version_metadata(tp, inputs, run, metrics)
    if main:
        write_version(metadata, metrics, out_dir, live, checkpoints_dir)
    return metadata


@dataclass
class Run:
    """What the finished run gives the version's metadata."""

    trainer: Any
    result: Any  # Trainer.train's TrainOutput
    validation_loss: float
    resume: Any  # the checkpoint resumed from, or None
    started: datetime
    finished: datetime
    state_dict: dict[str, Any]


def run_metrics(run: Run) -> dict[str, Any]:
    """The run's figures (metadata's metrics and dvclive's summary), over the whole run also when it resumed."""
    state, resume = run.trainer.state, run.resume
    seconds_before = resume.train_seconds if resume else 0.0  # the training time up to the checkpoint
    return {
        "train_loss": round(_run_train_loss(run.result.training_loss, state.log_history, resume), 6),
        "validation_loss": round(run.validation_loss, 6),
        "train_tokens": int(_last_logged(state.log_history, "num_tokens") or 0),
        "train_seconds": round(seconds_before + run.result.metrics["train_runtime"], 2),
        "steps": state.global_step,
        "epochs": round(state.epoch or 0.0, 4),
    }


def version_metadata(tp: TrainParams, inputs: Inputs, run: Run, metrics: dict[str, Any]) -> VersionMetadata:
    """metadata.json of the version: its id, base, LoRA (with the saved weights' dtype), data, training, metrics."""
    trainer = run.trainer
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    saved = {str(value.dtype).removeprefix("torch.") for key, value in run.state_dict.items() if "lora_" in key}
    lora, info, device = tp.lora, inputs.info, inputs.device
    return VersionMetadata(
        version_id=version_id(run.finished),
        created=run.finished.isoformat(),
        started=run.started.isoformat(),
        base_model=inputs.identity,
        lora=LoraRecord(
            r=lora.r,
            alpha=lora.alpha,
            dropout=lora.dropout,
            bias=lora.bias,
            target_modules=[lora.target_modules] if isinstance(lora.target_modules, str) else list(lora.target_modules),
            options=dict(lora.options),
            dtype="/".join(sorted(saved)) or adapter_dtype(tp, device),
            trainable_parameters=trainable,
        ),
        data=DataRecord(
            sha256=inputs.data_sha256,
            train_records=len(inputs.train_records),
            validation_records=len(inputs.validation_records),
            source=info["source"],
            shape=info["shape"],
            fixed_test=info["fixed_test"],
            files=info["files"],
        ),
        training=training_record(tp, inputs, run),
        metrics=TrainMetrics(**metrics),
        code=git_revision(),
        libraries=library_versions(),
        lock=environment_lock(),
        world_size=trainer.args.world_size,
    )


def training_record(tp: TrainParams, inputs: Inputs, run: Run) -> TrainingRecord:
    trainer, device = run.trainer, inputs.device
    return TrainingRecord(
        seed=tp.seed,
        device=device,
        max_length=tp.max_length,
        trainer=_trainer_args(trainer.args),
        resumed_from_step=run.resume.step if run.resume else None,
        loss_on=inputs.plan.tokens,
        chat_template=inputs.plan.template_name,
        precision=precision(trainer.args, device),
        attention=trainer.model.config._attn_implementation,
        early_stopping=early_stopping_record(tp.early_stopping, trainer.state),
        quantization=quantization.record(tp.quantization, device),
        distributed=engine(trainer.accelerator),
    )


def write_version(
    metadata: VersionMetadata, metrics: dict[str, Any], out_dir: Path, live: Any, checkpoints_dir: Path | None
) -> None:
    """metadata.json and the model card beside the adapter, the run's figures to dvclive, checkpoints cleared."""
    write_metadata(out_dir, metadata)
    (out_dir / "README.md").write_text(card_text(metadata), encoding="utf-8")  # the card, not PEFT's template
    live.summary = dict(metrics)  # the run's figures; the per-step values are in the plots
    live.make_summary()
    if checkpoints_dir is not None and checkpoints.clear(checkpoints_dir):
        print(f"train: finished, removed the checkpoints in {checkpoints_dir}")


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
