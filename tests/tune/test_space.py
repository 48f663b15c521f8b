"""loravc.tune.space: the tune section's knobs and objective checked against the pipeline before any trial."""

import enum
import typing
from pathlib import Path
from typing import Any

import pytest

from loravc.core.errors import UserError
from loravc.tune.params import Knob
from loravc.tune.space import Dimension, check, check_objective, declared_type, hydra, number_kind, type_name
from tests.tune.scratch import LR, params_with


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"space": {"train.lora.rank": {"choices": [4]}}},
         r"tune\.space\.train\.lora\.rank: train\.lora\.rank is not a peft\.LoraConfig option \(did you mean r\?"),
        ({"space": {LR: {"low": 1.0e-3, "high": 1.0e-4}}},
         r"tune\.space\.train\.trainer\.learning_rate is an empty range: low 0\.001 is not below high 0\.0001$"),
        ({"space": {"train.lora.r": {"choices": []}}}, r"tune\.space\.train\.lora\.r has an empty list of choices$"),
        ({"space": {LR: {"low": 0.0, "high": 1.0e-3, "log": True}}}, r"is on a log scale, so low must be above 0"),
        ({"space": {"train.lora.r": {"low": 0, "high": 8}}},
         r"tune\.space\.train\.lora\.r: 0 is not a valid value: train\.lora\.r must be a positive integer$"),
        ({"space": {"train.lora.r": {"low": 2, "high": 8.5}}}, r"train\.lora\.r is an integer, so high must be one"),
        ({"space": {"train.lora": {"choices": [4]}}}, r"train\.lora is a section of params\.yaml; name one of its"),
        ({"space": {"data.loss_on": {"low": 0, "high": 1}}}, r"data\.loss_on is not a number \(str\): give a list of"),
        ({"space": {"train.trainer.learnin_rate": {"low": 1.0e-4, "high": 1.0e-3}}},
         r"learnin_rate is not a trl\.SFTConfig setting \(did you mean learning_rate\?\)"),
        ({"space": {"tune.seed": {"choices": [1, 2]}}}, r"the tune section is not a knob of the pipeline"),
        ({"objective": "accuracy"}, r"params\.yaml: tune\.objective: the pipeline writes no metric 'accuracy'"),
        ({"objective": "tuned_exact_match"},
         r"tune\.objective: tuned_exact_match is a test metric \(dvclive/evaluate/metrics\.json\): tuning on"),
        ({"objective": "train_loss"}, r"tune\.objective: train_loss is measured on the training data"),
        ({"sampler": "grid"}, r"learning_rate: the grid sampler needs choices, or a range with a step$"),
        ({"sampler": "bayes"}, r"tune\.sampler must be one of tpe, random, grid$"),
        ({"space": {"train.lora.r": {"low": 2, "high": float("inf")}}}, r"train\.lora\.r: high must be a finite"),
        ({"direction": "maximize"}, r"tune\.direction: validation_loss is better when lower: set tune\.direction"),
        ({"space": {"train.trainer.bf16": {"low": 0, "high": 1}}}, r"bf16 is not a number \(bool\): give a list"),
        ({"study": "my study"}, r"tune\.study must be a letter, then letters, digits, _ or -$"),
        ({"space": {"train.lora.use_dorra": {"choices": [True]}}},
         r"train\.lora\.use_dorra is not a peft\.LoraConfig option"),
        ({"space": {"train.lora.use_dora": {"choices": ["yes"]}}}, r"train\.lora\.use_dora must be true or false"),
    ],
)  # fmt: skip
def test_a_bad_tune_section_is_one_error_naming_the_key(tmp_path: Path, tune: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        check(params_with(tmp_path, tune))


def test_knobs_become_overrides_dvc_accepts(tmp_path: Path) -> None:
    space = {
        "train.lora.r": {"choices": [4, 8]},
        LR: {"low": 1.0e-4, "high": 1.0e-3, "log": True},
        "train.trainer.weight_decay": {"low": 0.0, "high": 0.1},  # not in params.yaml: `-S +key=value`
        "train.lora.target_modules": {"choices": [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"]]},
        "train.trainer.num_train_epochs": {"low": 1, "high": 3, "step": 1},  # a float in trl.SFTConfig
        "train.trainer.gradient_accumulation_steps": {"low": 1, "high": 4},  # an int there: integers
        "data.loss_on": {"choices": ["auto", "all"]},
        "train.lora.use_dora": {"choices": [False, True]},  # a peft.LoraConfig option: `-S +key=value` too
    }
    _, dims = check(params_with(tmp_path, {"space": space}))
    by_key = {d.key: d for d in dims}
    kinds = ["choice", "float", "float", "choice", "float", "int", "choice", "choice"]
    assert [by_key[k].kind for k in space] == kinds
    assert by_key["train.lora.use_dora"].override(True) == "+train.lora.use_dora=true"
    assert by_key["train.lora.r"].override(8) == "train.lora.r=8"
    assert by_key[LR].override(0.00041) == "train.trainer.learning_rate=0.00041"
    assert by_key["train.trainer.weight_decay"].override(0.05) == "+train.trainer.weight_decay=0.05"
    accumulation = by_key["train.trainer.gradient_accumulation_steps"]
    assert accumulation.override(2) == "+train.trainer.gradient_accumulation_steps=2"
    modules = by_key["train.lora.target_modules"]  # list choices are JSON labels to Optuna
    assert modules.labels == ['["q_proj", "v_proj"]', '["q_proj", "k_proj", "v_proj", "o_proj"]']
    assert modules.override('["q_proj", "v_proj"]') == "train.lora.target_modules=['q_proj','v_proj']"
    assert by_key["data.loss_on"].override("all") == "data.loss_on='all'"  # a string stays one (not 'true', 8)
    assert by_key["train.trainer.num_train_epochs"].grid() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("hint", "kind"),
    [
        (float, "float"),
        (float | None, "float"),  # trl.SFTConfig's eval_steps
        (int, "int"),
        (int | None, "int"),  # evaluate.harness_limit
        (typing.Optional[int], "int"),  # noqa: UP045 (how older libraries spell it)
        (bool, None),  # a bool is no number
        (bool | None, None),
        (str, None),
        (int | str | None, None),  # takes a string too: choices
        (typing.Union[list[int], int, None], None),  # noqa: UP007 (peft's layers_to_transform: a list too)
        (dict, None),
        (Any, None),  # anything YAML holds: choices
        (Knob | None, None),  # a config class YAML cannot spell
        (None, None),  # no field declares the key
    ],
)  # fmt: skip
def test_a_range_needs_a_key_declared_as_a_number_and_nothing_else(hint: Any, kind: str | None) -> None:
    assert number_kind(hint) == kind


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize(
    ("hint", "shown"),
    [
        (str, "str"),
        (bool | None, "bool"),  # a class or null: by the class's name, as the message always read
        (typing.Optional[dict], "dict"),  # noqa: UP045
        (list[str], "a list of strings"),  # any other type in loravc.core.schema's words
        (Colour | str, "one of red, blue"),
        (typing.Union[list[int], int, None], "a list, an integer or null"),  # noqa: UP007
    ],
)  # fmt: skip
def test_a_type_that_is_no_number_is_named_in_the_error(hint: Any, shown: str) -> None:
    assert type_name(hint) == shown


def test_the_declared_type_is_the_field_of_params_sft_config_or_lora_config() -> None:
    assert declared_type("train.lora.r") is int  # LoraParams
    assert declared_type("data.loss_on") is str
    assert declared_type(LR) is float  # trl.SFTConfig
    assert declared_type("train.trainer.bf16") == bool | None
    assert declared_type("train.lora.use_dora") is bool  # peft.LoraConfig
    assert declared_type("evaluate.harness_limit") == int | None
    assert declared_type("train.trainer.no_such_setting") is None
    assert declared_type("train.no_such_key") is None


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lora.target_modules": {"low": 1, "high": 2}},
         r"train\.lora\.target_modules is not a number \(a list of strings or a string\): give a list of choices$"),
        ({"train.lora.layers_to_transform": {"low": 0, "high": 2}},
         r"layers_to_transform is not a number \(a list, an integer or null\): give a list of choices$"),
        ({"train.trainer.lr_scheduler_type": {"low": 0, "high": 1}},
         r"lr_scheduler_type is not a number \(one of linear, cosine, .*\): give a list of choices$"),
    ],
)  # fmt: skip
def test_a_range_over_a_key_that_takes_more_than_numbers_is_refused(
    tmp_path: Path, space: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        check(params_with(tmp_path, {"space": space}))


def test_an_optional_number_is_searched_as_that_number(tmp_path: Path) -> None:
    space = {
        "evaluate.harness_limit": {"low": 10, "high": 50, "step": 10},  # int | None: integers
        "train.trainer.eval_steps": {"low": 2, "high": 8},  # float | None in trl.SFTConfig: numbers
    }
    _, dims = check(params_with(tmp_path, {"space": space}))
    assert [(d.key, d.kind, d.in_params) for d in dims] == [
        ("evaluate.harness_limit", "int", True),
        ("train.trainer.eval_steps", "float", False),
    ]
    assert dims[0].grid() == [10, 20, 30, 40, 50]
    with pytest.raises(UserError, match=r"harness_limit is an integer, so step must be one, got 2\.5$"):
        check(params_with(tmp_path, {"space": {"evaluate.harness_limit": {"low": 10, "high": 50, "step": 2.5}}}))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (0.0005, "0.0005"),
        (None, "null"),
        ("8", "'8'"),  # a string stays one
        ("it's", '"it\'s"'),  # no single quotes inside single quotes: JSON's double quotes
        (["q_proj", 2], "['q_proj',2]"),
        ({"a": 1, "b": [True]}, "{a:1,b:[true]}"),
    ],
)  # fmt: skip
def test_values_are_written_in_hydras_override_syntax(value: Any, text: str) -> None:
    assert hydra(value) == text


def test_a_grid_over_a_stepped_range_holds_both_ends() -> None:
    floats = Dimension("train.lora.dropout", "float", Knob(low=0.0, high=0.3, step=0.1), True)
    assert floats.grid() == [0.0, 0.1, 0.2, 0.3]  # not 0.30000000000000004, nor without the last point
    ints = Dimension("train.lora.r", "int", Knob(low=2, high=9, step=3), True)
    assert ints.grid() == [2, 5, 8]
    choices = Dimension("train.lora.target_modules", "choice", Knob(choices=[["q_proj"], ["v_proj"]]), True)
    assert choices.grid() == ['["q_proj"]', '["v_proj"]']
    assert choices.value('["v_proj"]') == ["v_proj"]


def test_only_a_validation_metric_in_its_better_direction_is_an_objective() -> None:
    check_objective("validation_loss", "minimize")
    with pytest.raises(UserError, match=r"^tune\.direction: validation_loss is better when lower"):
        check_objective("validation_loss", "maximize")
    for metric in ("base_perplexity", "tuned_chrf", "f1_gain", "task_records"):
        with pytest.raises(UserError, match=rf"^tune\.objective: {metric} is a test metric"):
            check_objective(metric, "minimize")
    with pytest.raises(UserError, match=r"^tune\.objective: epochs is measured on the training data"):
        check_objective("epochs", "minimize")
