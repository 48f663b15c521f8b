"""The train params checked before any model loads: train.trainer's types, the step count, the LoRA targets.

Each of these would otherwise surface only after the base is loaded and the data tokenized (a string
learning rate crashes in torch's optimizer, an unknown target module in PEFT) or not at all (zero
epochs "train" a version identical to the base). What needs no data (`check_train_settings`) runs in stage
`source` too, before any stage has removed its outputs (`check_before_outputs`, remembered per params, code and
libraries so that a no-op `dvc repro` stays quick); `check_train_params`, with the data's checks, runs first in
loravc.train.training.train. Each raises a UserError naming the params key.
"""

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any

from loravc.core import memo
from loravc.core.base_files import sha256_file
from loravc.core.errors import UserError
from loravc.core.metadata import library_versions
from loravc.core.schema import check_type
from loravc.data import records as data
from loravc.train.config import trainer_settings
from loravc.train.lora import check_lora
from loravc.train.params import TrainParams

# sft_config accepts either name of the activation checkpointing switch (transformers 5 renamed it)
ALIASES = {"gradient_checkpointing": "activation_checkpointing", "activation_checkpointing": "gradient_checkpointing"}


def check_train_params(train: TrainParams, base_dir: Path, prepared_dir: Path, device: str, world_size: int) -> int:
    """UserError for a train.trainer value of the wrong type, a run of 0 training steps, or a train.lora
    target module the base lacks; reads no weights. `device` is the resolved train.device, `world_size`
    the number of training processes. Returns the optimizer steps the Trainer will run (with packing, an
    upper bound: packed rows are at most the records)."""
    settings = check_train_settings(train, base_dir, device)
    records = train_records(prepared_dir)
    steps = check_steps(settings, records, world_size, prepared_dir / "train.jsonl")
    check_early_stopping(train.early_stopping, prepared_dir, steps)
    return steps


def check_train_settings(train: TrainParams, base_dir: Path | None, device: str) -> dict[str, Any]:
    """Everything about params.yaml `train` that needs no data: train.trainer's keys and types, a step count of 0,
    train.lora's PEFT options, and its modules against the base in base_dir (None: the base is not built yet, and
    only the train stage checks them). Returns the run's SFTConfig settings."""
    check_trainer_types(train.trainer)
    settings = run_settings(train, device)
    check_step_settings(settings)
    check_lora(train.lora, base_dir)
    return settings


def check_before_outputs(train: TrainParams, base_dir: Path | None, checked: Path) -> None:
    """check_train_settings for stage `source`, which runs first on every `dvc repro`: skipped when these params
    passed it with the same code, libraries and base config (the file `checked` remembers), so that a no-op repro
    imports neither torch nor TRL."""
    from loravc.core.devices import resolve_device

    config = base_dir / "config.json" if base_dir else None
    key = memo.key_of(
        {
            "train": dataclasses.asdict(train),
            "base_config": sha256_file(config) if config and config.is_file() else None,
            "libraries": library_versions(("torch", "transformers", "trl", "peft")),
            "code": memo.code_sha256(),
        }
    )
    if memo.holds(checked, key):
        return
    check_train_settings(train, base_dir, resolve_device(train.device, "train.device"))
    memo.add(checked, key)


def sft_config_types() -> dict[str, Any]:
    """Each trl.SFTConfig argument and its annotated type."""
    from trl import SFTConfig

    fields = [f for f in dataclasses.fields(SFTConfig) if f.init]
    try:
        hints = typing.get_type_hints(SFTConfig)
    except (NameError, TypeError):  # an annotation that does not resolve: those that do are checked
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in fields}


def check_trainer_types(trainer: dict[str, Any]) -> None:
    """Every train.trainer key is a trl.SFTConfig argument and its value has that argument's type (a YAML
    int for a float is fine; a bool is no number; a string for an enum must name one of its values)."""
    types_ = sft_config_types()
    for key, value in trainer.items():
        hint = types_.get(key, types_.get(ALIASES.get(key, ""), dataclasses.MISSING))
        if hint is dataclasses.MISSING:
            close = difflib.get_close_matches(key, types_, n=1)
            mean = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"train.trainer.{key} is not a trl.SFTConfig setting{mean}: see trl.SFTConfig for the keys")
        check_type(f"train.trainer.{key}", hint, value)


def run_settings(train: TrainParams, device: str) -> dict[str, Any]:
    """Every SFTConfig argument of the run: TRL's defaults under what the pipeline sets (config.trainer_settings,
    the same merge sft_config makes)."""
    from trl import SFTConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig) if f.default is not dataclasses.MISSING}
    return defaults | trainer_settings(train, device)


def train_records(prepared_dir: Path, split: str = "train") -> int:
    """The records of a prepared split: its non-blank lines (train() reads and validates them)."""
    path = prepared_dir / f"{split}.jsonl"
    if not path.is_file():
        return len(data.read_split(prepared_dir, split))  # raises: not found, run `dvc repro prepare`
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def planned_steps(
    records: int, batch_size: int, accumulation: int, world_size: int, epochs: float, max_steps: int, drop_last: bool
) -> int:
    """The optimizer steps transformers' Trainer runs (Trainer.set_initial_training_values): max_steps when
    positive, else epochs x updates per epoch; 0 when the records fill no batch."""
    per_batch = batch_size * world_size  # each process takes its own batch of every step
    batches = records // per_batch if drop_last else math.ceil(records / per_batch)
    if batches == 0:
        return 0
    if max_steps > 0:
        return max_steps
    return math.ceil(epochs * math.ceil(batches / accumulation))


def check_step_settings(settings: dict[str, Any]) -> None:
    """A UserError naming the train.trainer keys that make a run of 0 steps whatever the data, or a negative count."""
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        if settings[key] < 1:
            raise UserError(f"train.trainer.{key} is {settings[key]}: set it to 1 or more")
    epochs, max_steps = settings["num_train_epochs"], settings["max_steps"]
    by_epochs = "-1 to train for train.trainer.num_train_epochs"
    if max_steps == 0:
        raise UserError(f"train.trainer.max_steps is 0: no training step would run; set a step count, or {by_epochs}")
    if max_steps < -1:
        raise UserError(f"train.trainer.max_steps is {max_steps}: set a positive step count, or {by_epochs}")
    if epochs < 0:
        raise UserError(f"train.trainer.num_train_epochs is {epochs}: set a positive number (0.5 is half an epoch)")
    if epochs == 0 and max_steps < 0:
        raise UserError(
            f"train.trainer.num_train_epochs is {epochs} and train.trainer.max_steps is {max_steps} (train for the "
            "epochs): no training step would run; set num_train_epochs above 0, or max_steps to a step count"
        )


def check_steps(settings: dict[str, Any], records: int, world_size: int, train_file: Path) -> int:
    """The run's planned optimizer steps; a UserError naming the keys where they are 0 or a count is negative."""
    check_step_settings(settings)
    epochs, max_steps = settings["num_train_epochs"], settings["max_steps"]
    if records == 0:
        raise UserError(
            f"{train_file} holds no record: no training step would run; check data.train and prepare.train_records, "
            "then run `dvc repro prepare`"
        )
    batch, drop_last = settings["per_device_train_batch_size"], settings["dataloader_drop_last"]
    accumulation = settings["gradient_accumulation_steps"]
    steps = planned_steps(records, batch, accumulation, world_size, epochs, max_steps, drop_last)
    if steps == 0:
        raise UserError(
            f"train.trainer.dataloader_drop_last is true and the {records} training records fill no batch of "
            f"train.trainer.per_device_train_batch_size {batch} x {world_size} process(es): no training step would "
            "run; lower per_device_train_batch_size, or set dataloader_drop_last: false"
        )
    return steps


def check_early_stopping(es: Any, prepared_dir: Path, steps: int) -> None:
    """Early stopping needs validation records to evaluate, and at least one evaluation within the run."""
    if not es.on:
        return
    path = prepared_dir / "validation.jsonl"
    if not train_records(prepared_dir, "validation"):
        raise UserError(
            f"train.early_stopping is on (patience {es.patience}) but {path} holds no record to evaluate: set "
            "prepare.validation_records, or train.early_stopping.patience: 0"
        )
    if es.eval_steps >= steps:
        raise UserError(
            f"train.early_stopping.eval_steps is {es.eval_steps} but the run has at most {steps} optimizer steps "
            f"(fewer where packing joins records): it would evaluate once, at the end, with nothing to compare; set "
            f"eval_steps well below {steps} (a few evaluations per run, e.g. {max(1, steps // 6)})"
        )
