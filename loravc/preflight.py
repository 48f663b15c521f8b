"""The train params checked before any model loads: train.trainer's types, the step count, the LoRA targets.

Each of these would otherwise surface only after the base is loaded and the data tokenized (a string
learning rate crashes in torch's optimizer, an unknown target module in PEFT) or not at all (zero
epochs "train" a version identical to the base). `check_train_params` runs first in loravc.training.train
and raises a UserError naming the params key.
"""

import dataclasses
import difflib
import enum
import functools
import math
import re
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from loravc import data
from loravc.errors import UserError
from loravc.params import PROFILES, TRAINER_DEFAULTS, Params, run_batch
from loravc.schema import parse_yaml

ALL_LINEAR = "all-linear"  # PEFT's shorthand for every linear layer but the output head
# sft_config accepts either name of the activation checkpointing switch (transformers 5 renamed it)
ALIASES = {"gradient_checkpointing": "activation_checkpointing", "activation_checkpointing": "gradient_checkpointing"}


def check_train_params(params: Params, base_dir: Path, prepared_dir: Path, profile: str, world_size: int) -> int:
    """UserError for a train.trainer value of the wrong type, a run of 0 training steps, or a train.lora
    target module the base lacks; reads no weights. `profile` is the PROFILES entry in use, `world_size`
    the number of training processes. Returns the optimizer steps the Trainer will run (with packing, an
    upper bound: packed rows are at most the records)."""
    trainer = params.train.trainer
    check_trainer_types(trainer)
    records = train_records(prepared_dir)
    steps = check_steps(trainer_settings(trainer, profile), records, world_size, prepared_dir / "train.jsonl")
    check_target_modules(params.train.lora.target_modules, base_dir)
    check_lora_keys(params.train.lora)
    check_lora_options(params.train.lora, base_dir)
    check_early_stopping(params.train.early_stopping, prepared_dir, steps)
    return steps


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
        if not _accepts(hint, value):
            raise UserError(f"train.trainer.{key} must be {_describe(hint)}, got {value!r}{_fix(hint, value)}")


def _accepts(hint: Any, value: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if _is_enum(a)]
        if enums and isinstance(value, str):  # SchedulerType | str: the string must name a member
            return any(value in _values(e) for e in enums)
        return any(_accepts(a, value) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        number = int if hint is int else int | float
        return isinstance(value, number) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if _is_enum(hint):
        return isinstance(value, str) and value in _values(hint)
    if (origin or hint) is list:
        return isinstance(value, list) and (not args or all(_accepts(args[0], v) for v in value))
    if (origin or hint) is dict:
        return isinstance(value, dict)
    return True  # Any, or a type YAML cannot spell (ParallelismConfig): SFTConfig decides


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        enums = any(_is_enum(a) for a in args)
        parts = [_describe(a) for a in args if not (enums and a is str)]  # the enum says which strings
        return _or(list(dict.fromkeys(parts)))
    if origin is typing.Literal:
        return "one of " + ", ".join(_yaml(a) for a in args)
    if _is_enum(hint):
        return "one of " + ", ".join(_values(hint))
    if (origin or hint) is list:
        return "a list of strings" if args == (str,) else "a list"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint) or ("a mapping" if (origin or hint) is dict else getattr(hint, "__name__", str(hint)))


def _fix(hint: Any, value: Any) -> str:
    """What to do, where the value is right but written as the wrong YAML type."""
    if isinstance(value, str):
        try:
            parsed = parse_yaml(value)
        except Exception:  # not YAML on its own: no hint
            return ""
        return ": remove the quotes" if not isinstance(parsed, str) and _accepts(hint, parsed) else ""
    scalar = isinstance(value, int | float)  # a bool too
    return ": put it in quotes" if scalar and _accepts(hint, str(value)) else ""


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _values(enum_type: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_type]


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _or(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def trainer_settings(trainer: dict[str, Any], profile: str) -> dict[str, Any]:
    """The SFTConfig arguments sft_config will pass: TRL's defaults, TRAINER_DEFAULTS, the profile, train.trainer,
    with params' examples per step split into the profile's micro-batches."""
    from trl import SFTConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig) if f.default is not dataclasses.MISSING}
    return run_batch(defaults | TRAINER_DEFAULTS | PROFILES[profile].trainer | trainer, PROFILES[profile])


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


def check_steps(settings: dict[str, Any], records: int, world_size: int, train_file: Path) -> int:
    """The run's planned optimizer steps; a UserError naming the keys where they are 0 or a count is negative."""
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


def check_target_modules(targets: list[str] | str, base_dir: Path) -> None:
    """Every train.lora.target_modules entry names modules of the base that LoRA can adapt (PEFT's matching:
    the whole module name, or its end after a dot), or is all-linear alone; a string other than all-linear is
    PEFT's regular expression over whole module names, and must match a module LoRA can adapt."""
    if isinstance(targets, str) and targets.lower() != ALL_LINEAR:
        check_target_pattern(targets, base_dir)
        return
    targets = [targets] if isinstance(targets, str) else targets
    if ALL_LINEAR in (t.lower() for t in targets):
        if len(targets) > 1:
            raise UserError(f"train.lora.target_modules: {ALL_LINEAR} adapts every linear layer: list it alone")
        return
    found = base_modules(base_dir)
    if found is None:
        return  # transformers cannot build it from its config: loading it will say why
    architecture, modules, adaptable = found
    has = f"({architecture} has: {', '.join(sorted({name.rsplit('.', 1)[-1] for name in adaptable}))})"
    unknown = []
    for target in targets:
        hits = [name for name in modules if name == target or name.endswith(f".{target}")]
        if not hits:
            unknown.append(target)
        elif other := sorted({modules[name] for name in hits if name not in adaptable}):
            kind = " / ".join(other)
            raise UserError(
                f"train.lora.target_modules: {target} is a {kind} in the base, which LoRA cannot adapt {has}"
            )
    if unknown:
        what = "is not a module" if len(unknown) == 1 else "are not modules"
        raise UserError(f"train.lora.target_modules: {', '.join(unknown)} {what} of the base {has}")


def base_modules(base_dir: Path) -> tuple[str, dict[str, str], set[str]] | None:
    """The base's model class, its modules (full name -> class name) and the names of those LoRA can adapt,
    from a skeleton built from config.json on the meta device (no weights read, no memory); None if
    transformers cannot build it."""
    import torch
    from transformers.pytorch_utils import Conv1D

    model = meta_model(base_dir)
    if model is None:
        return None
    # What PEFT's LoRA layers wrap (peft.tuners.lora.model: any other module is "not supported")
    nn = torch.nn
    lora_layers = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention, Conv1D)
    named = [(name, module) for name, module in model.named_modules() if name]
    adaptable = {name for name, module in named if isinstance(module, lora_layers)}
    return type(model).__name__, {name: type(module).__name__ for name, module in named}, adaptable


@functools.cache  # target modules, a pattern and modules_to_save are each checked against it
def meta_model(base_dir: Path) -> Any:
    """The base built from its config.json on the meta device (no weights read); None if transformers cannot."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_dir)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, ImportError):
        return None


def check_target_pattern(pattern: str, base_dir: Path) -> None:
    """train.lora.target_modules as a string: PEFT's regular expression, matched against whole module names."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise UserError(f"train.lora.target_modules {pattern!r} is not a regular expression: {err}") from None
    found = base_modules(base_dir)
    if found is not None and not any(compiled.fullmatch(name) for name in found[2]):
        raise UserError(
            f"train.lora.target_modules {pattern!r} (a regular expression over whole module names, as PEFT reads a "
            f"string) matches no module of the base LoRA can adapt, e.g. {min(found[2])}"
        )


# init_lora_weights values the pipeline runs: PEFT's others need a calibration pass or a quantized base it does
# not make (eva, corda, lora_ga, loftq) or change the base's weights in ways no conversion undoes (mica).
INITS = ("gaussian", "pissa", "olora", "orthogonal")  # besides true and false (YAML booleans) and pissa_niter_N


def check_lora_options(lora: Any, base_dir: Path) -> None:
    """train.lora's options against the base: modules_to_save names its modules (and costs bytes: a warning
    says how many). check_lora_keys checked their keys, types and values."""
    if saved := lora.options.get("modules_to_save"):
        check_modules_to_save(saved, base_dir)


def check_lora_values(lora: Any) -> None:
    """What params can check of train.lora's options without importing PEFT (LoraParams calls it when params
    load): PEFT's names for the project's keys, the initialisations the pipeline runs, what PiSSA/OLoRA carry."""
    from loravc.params import LORA_OWNED

    for key, why in LORA_OWNED.items():
        if key in lora.options:
            raise UserError(f"train.lora.{key} {why}")
    if "init_lora_weights" in lora.options:
        _check_init(lora.options["init_lora_weights"])
    check_conversion(lora)


def check_lora_keys(lora: Any) -> None:
    """train.lora's other keys are peft.LoraConfig options of the right type, with values PEFT accepts (imports
    PEFT: run by check_train_params before any model loads, and by `loravc tune` for its knobs)."""
    if not lora.options:
        return
    from peft import LoraConfig

    from loravc.params import LORA_OWNED

    hints = typing.get_type_hints(LoraConfig)
    ours = {"r", "bias", "target_modules", "peft_type", "auto_mapping", "peft_version", "revision"}
    fields = {f.name for f in dataclasses.fields(LoraConfig) if f.init} - set(LORA_OWNED) - ours - set(UNRUN)
    for key, value in lora.options.items():
        if key in UNRUN:
            raise UserError(f"train.lora.{key}: {UNRUN[key]}")
        if key not in fields:
            close = difflib.get_close_matches(key, [*fields, "alpha", "dropout", "bias", "target_modules"], n=1)
            close = ["r"] if key in ("rank", "lora_r", "lora_rank") else close
            mean = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"train.lora.{key} is not a peft.LoraConfig option{mean}: see peft.LoraConfig for the keys")
        if key != "init_lora_weights" and not _accepts(hints[key], value):
            raise UserError(f"train.lora.{key} must be {_describe(hints[key])}, got {value!r}{_fix(hints[key], value)}")
        for name, item in value.items() if key in PATTERNS and isinstance(value, dict) else []:
            number = int if key == "rank_pattern" else int | float
            if isinstance(item, bool) or not isinstance(item, number) or item <= 0:
                raise UserError(f"train.lora.{key}.{name} must be a positive {PATTERNS[key]}, got {item!r}")
    try:
        LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules, **lora.options)
    except (TypeError, ValueError) as err:
        raise UserError(f"train.lora: peft.LoraConfig rejects these options: {err}") from None


PATTERNS = {"rank_pattern": "integer (a rank)", "alpha_pattern": "number (an alpha)"}  # per-module overrides
# LoraConfig options whose initialisation or engine the pipeline does not run
UNRUN = {
    "megatron_config": "Megatron-LM layers are not something the pipeline trains: remove it",
    "megatron_core": "Megatron-LM layers are not something the pipeline trains: remove it",
    "eva_config": "goes with init_lora_weights eva, which needs a calibration pass the pipeline does not run",
    "corda_config": "goes with init_lora_weights corda, which needs a calibration pass the pipeline does not run",
    "loftq_config": "goes with init_lora_weights loftq, which needs a quantized base the pipeline does not make",
}


def check_conversion(lora: Any) -> None:
    """PiSSA/OLoRA versions are saved converted to plain LoRA pairs (loravc.training.save_adapter); PEFT's
    conversion keeps only those pairs, so what else the adapter would hold cannot go with them."""
    if not lora.mutates_base:
        return
    options = lora.options
    other = [
        what
        for what, present in (
            ("use_dora (its magnitudes do not convert)", options.get("use_dora")),
            ("modules_to_save (dropped by the conversion)", options.get("modules_to_save")),
            (f"bias: {lora.bias} (dropped by the conversion)", lora.bias != "none"),
            (
                "use_rslora with rank_pattern or alpha_pattern (PEFT cannot convert them)",
                options.get("use_rslora") and (options.get("rank_pattern") or options.get("alpha_pattern")),
            ),
        )
        if present
    ]
    if other:
        raise UserError(
            f"train.lora.init_lora_weights {options['init_lora_weights']!r} is saved converted to plain LoRA pairs for "
            f"the unchanged base, which cannot hold {'; '.join(other)}: drop one or the other"
        )


def _check_init(value: Any) -> None:
    ok = isinstance(value, bool) or (
        isinstance(value, str) and (value in INITS or re.fullmatch(r"pissa_niter_[1-9][0-9]*", value))
    )
    if not ok:
        raise UserError(
            f"train.lora.init_lora_weights {value!r}: the pipeline runs true, false (unquoted), {', '.join(INITS)} "
            "or pissa_niter_N (eva, corda, lora_ga and loftq need a calibration pass or a quantized base the "
            "pipeline does not make)"
        )


def check_modules_to_save(names: list[str], base_dir: Path) -> None:
    """Every train.lora.modules_to_save entry names a module of the base; warn how many bytes each version
    then stores (a whole trained copy of each, e.g. the embeddings)."""
    model = meta_model(base_dir)
    if model is None:
        return  # loading it will say why
    modules = dict(model.named_modules())
    total = 0
    for name in names:
        hits = [m for n, m in modules.items() if n == name or n.endswith(f".{name}")]
        if not hits:
            raise UserError(f"train.lora.modules_to_save: {name} is not a module of the base ({type(model).__name__})")
        total += sum(p.numel() * 4 for m in hits for p in m.parameters())  # trained in fp32 unless lora.dtype says
    warnings.warn(
        f"train.lora.modules_to_save stores a whole trained copy of {', '.join(names)} in every version: about "
        f"{total / 1e6:,.0f} MB in fp32, against a few MB for the LoRA pairs (python -m bench.storage --lora ...)",
        stacklevel=2,
    )


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
