"""The search space and the objective of `loravc tune`, checked against the pipeline before any trial.

Each knob of params.yaml's `tune.space` names a params.yaml key (or a trl.SFTConfig setting under train.trainer,
a peft.LoraConfig option under train.lora) and each of its bounds and choices is a valid value there; the kind
of a range (integers or numbers) is the type the key is declared with, as loravc.core.schema reads types. The
objective is a validation metric the pipeline writes, never a test metric.
"""

import copy
import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.schema import accepts, build, describe, flatten, read_yaml
from loravc.params import Params, load_params
from loravc.train.lora import LoraParams
from loravc.tune.params import Knob, TuneParams
from loravc.tune.trials import TEST_METRICS

# What the train stage writes to its metrics file, and on which data; only validation metrics can be objectives.
VALIDATION_METRICS = {"validation_loss": "minimize"}  # and the direction each is better in
TRAIN_ONLY = {"train_loss", "train_tokens", "train_seconds", "steps", "epochs"}

PRIMITIVE = (bool, int, float, str, type(None))  # what Optuna stores as a categorical choice
NOT_NUMBERS = ("0", True, [], {})  # a key whose type takes any of these is searched over choices, not a range
NAMED = (str, bool, dict, list)  # the types the error for a range over such a key names as Python does


@dataclass(frozen=True)
class Dimension:
    """One knob of the search: a params.yaml key, its kind (int, float or choice) and its range."""

    key: str
    kind: str  # "int", "float" or "choice"
    knob: Knob
    in_params: bool  # False: a train.trainer key params.yaml does not list (`-S +key=value`)

    @property
    def labels(self) -> list[Any] | None:
        """The choices as Optuna stores them: as they are, or as JSON text when one is a list or a mapping."""
        choices = self.knob.choices
        if choices is None or all(isinstance(c, PRIMITIVE) for c in choices):
            return choices
        return [json.dumps(c) for c in choices]

    def suggest(self, trial: Any) -> Any:
        """This knob's value for `trial`, as Optuna records it (a JSON label for a list or mapping choice)."""
        k = self.knob
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.labels)
        assert k.low is not None and k.high is not None  # Knob.check: a range has both
        if self.kind == "int":
            return trial.suggest_int(self.key, int(k.low), int(k.high), step=int(k.step or 1), log=k.log)
        return trial.suggest_float(self.key, k.low, k.high, step=k.step, log=k.log)

    def value(self, recorded: Any) -> Any:
        """The params.yaml value of a value Optuna recorded for this knob."""
        choices, labels = self.knob.choices, self.labels
        if choices is None or labels is None or labels is choices:
            return recorded
        return choices[labels.index(recorded)]

    def grid(self) -> list[Any]:
        """Every value of the knob as Optuna records it, for the grid sampler."""
        k = self.knob
        if k.choices is not None:
            return list(self.labels or [])
        if k.step is None:
            raise UserError(f"tune.space.{self.key}: the grid sampler needs choices, or a range with a step")
        assert k.low is not None and k.high is not None
        count = int((k.high - k.low) / k.step + 1e-9) + 1
        values = [k.low + i * k.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def override(self, recorded: Any) -> str:
        """The `dvc exp run -S` override setting this knob (Hydra's syntax; `+` for a key params.yaml lacks)."""
        return f"{'' if self.in_params else '+'}{self.key}={hydra(self.value(recorded))}"


def hydra(value: Any) -> str:
    """A value in Hydra's override syntax, read back by DVC as the same YAML type (strings always quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return f"'{text}'" if "'" not in text and "\\" not in text else json.dumps(text)


def check(params_path: Path, params: Params | None = None) -> tuple[TuneParams, list[Dimension]]:
    """Check params.yaml's tune section (`params`: the file already loaded) against the pipeline; a
    UserError names the key."""
    params = params or load_params(params_path)
    tune = params.tune
    raw = read_yaml(params_path)
    raw.pop("tune", None)
    flat = flatten(raw)
    try:
        dims = [_dimension(key, knob, raw, flat) for key, knob in tune.space.items()]
        check_objective(tune.objective, tune.direction)
        if tune.pruner != "none" and params.train.processes > 1:
            raise UserError(
                f"tune.pruner: {tune.pruner} needs each evaluation's validation loss, which train reports from "
                "one process only: set tune.pruner: none, or train.processes: 1"
            )
        if tune.sampler == "grid":
            for dim in dims:
                dim.grid()
    except UserError as err:
        raise UserError(f"{params_path}: {err}") from None
    return tune, dims


def _dimension(key: str, knob: Knob, raw: dict[str, Any], flat: dict[str, Any]) -> Dimension:
    where = f"tune.space.{key}"
    if key.startswith("tune.") or key == "tune":
        raise UserError(f"{where}: the tune section is not a knob of the pipeline")
    # keys of the free-form blocks: any trl.SFTConfig setting, any peft.LoraConfig option (a `+` override)
    trainer_key = key.startswith("train.trainer.") and key.count(".") == 2
    lora_key = key.startswith("train.lora.") and key.count(".") == 2
    if key not in flat and not (trainer_key or lora_key):
        if any(k.startswith(key + ".") for k in flat):
            raise UserError(f"{where}: {key} is a section of params.yaml; name one of its keys")
        close = difflib.get_close_matches(key, list(flat), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"{where}: {key} is not a params.yaml key{hint}")
    declared = declared_type(key)
    if trainer_key and declared is None:
        from loravc.train.preflight import check_trainer_types

        check_trainer_types({key.split(".")[2]: None})  # not a trl.SFTConfig setting: an error naming it
    if lora_key and declared is None:
        from loravc.train.lora import check_lora_keys

        try:
            check_lora_keys(LoraParams(options={key.split(".")[2]: None}))  # not a LoraConfig option: naming it
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    for name in ("low", "high", "step"):
        value = getattr(knob, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: {name} must be a finite number, got {value}")
    kind = "choice" if knob.choices is not None else number_kind(declared)
    if kind is None:
        raise UserError(f"{where}: {key} is not a number ({type_name(declared)}): give a list of choices")
    if kind == "int":
        for name in ("low", "high", "step"):
            value = getattr(knob, name)
            if value is not None and value != int(value):
                raise UserError(f"{where}: {key} is an integer, so {name} must be one, got {value}")
    values = knob.choices if knob.choices is not None else [knob.low, knob.high]
    for value in values:
        _check_value(raw, key, int(value) if kind == "int" else value, where)
    return Dimension(key, kind, knob, key in flat)


def declared_type(key: str) -> Any:
    """The type annotation of a params.yaml key (None: no field declares it): its Params field's; for
    train.trainer.* trl.SFTConfig's, and for train.lora.* beyond LoraParams' own fields peft.LoraConfig's."""
    parts = key.split(".")
    if key.startswith("train.trainer."):
        from loravc.train.preflight import sft_config_types

        return sft_config_types().get(parts[2])
    if key.startswith("train.lora.") and parts[2] not in typing.get_type_hints(LoraParams):
        from peft import LoraConfig

        return typing.get_type_hints(LoraConfig).get(parts[2])
    hint: Any = Params
    for part in parts:  # down the sections' dataclasses, a field at a time
        hint = typing.get_type_hints(hint).get(part) if dataclasses.is_dataclass(hint) else None
    return hint


def number_kind(hint: Any) -> str | None:
    """What a range over a key declared `hint` holds, as loravc.core.schema.accepts reads the type: "float"
    when it takes any number, "int" when integers only; None when it takes no number, or takes something else
    too (a string, a bool, a list, a mapping, any value of a type YAML cannot spell): that key needs choices.
    Null may be allowed besides."""
    if hint is None or any(accepts(hint, other) for other in NOT_NUMBERS):
        return None
    if accepts(hint, 0.5):
        return "float"
    return "int" if accepts(hint, 1) else None


def type_name(hint: Any) -> str:
    """A declared type as the knob's error names it: a class, or what loravc.core.schema describes as one of
    NAMED or null, by the class's name (str, bool); any other type in loravc.core.schema's words."""
    if isinstance(hint, type):
        return hint.__name__
    said = describe(hint)
    return next((named.__name__ for named in NAMED if said in (describe(named), describe(named | None))), said)


def _check_value(raw: dict[str, Any], key: str, value: Any, where: str) -> None:
    """`value` at `key` makes a valid params.yaml (as loravc.params checks it), else a UserError."""
    doc = copy.deepcopy(raw)
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    try:
        params = build(Params, doc, "")
        if key.startswith("train.trainer."):
            from loravc.train.preflight import check_trainer_types

            check_trainer_types(params.train.trainer)
        if key.startswith("train.lora."):
            from loravc.train.lora import check_lora_keys

            check_lora_keys(params.train.lora)
    except UserError as err:
        raise UserError(f"{where}: {value!r} is not a valid value: {err}") from None


def check_objective(metric: str, direction: str) -> None:
    """A UserError unless `metric` is a validation metric the pipeline writes (not a train or test one),
    optimized in the direction it is better in."""
    if metric in VALIDATION_METRICS:
        best = VALIDATION_METRICS[metric]
        if direction != best:
            lower = "lower" if best == "minimize" else "higher"
            raise UserError(f"tune.direction: {metric} is better when {lower}: set tune.direction: {best}")
        return
    if metric in TRAIN_ONLY:
        raise UserError(f"tune.objective: {metric} is measured on the training data, not a validation split; "
                        "the validation metric is validation_loss")  # fmt: skip
    test = ("base_", "tuned_", "perplexity", "_gain", "task_records")
    if any(part in metric for part in test):
        raise UserError(f"tune.objective: {metric} is a test metric ({TEST_METRICS}): tuning on the test split "
                        "would overstate every result; the validation metric is validation_loss")  # fmt: skip
    raise UserError(f"tune.objective: the pipeline writes no metric {metric!r}; the validation metric is "
                    "validation_loss")  # fmt: skip
