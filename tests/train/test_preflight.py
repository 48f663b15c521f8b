"""The train params checked before any model loads: one line naming the key, nothing loaded or written."""

import json
import re
import sys
import typing
from pathlib import Path

import pytest

from loravc.core.errors import UserError
from loravc.params import Params, load_params
from loravc.train import preflight
from loravc.train.lora import LoraParams, check_target_modules
from loravc.train.params import PROFILES, RECIPE_KEYS, Profile, TrainParams
from loravc.train.preflight import check_steps, check_trainer_types, planned_steps, run_settings
from tests.conftest import ROOT, run

NUMERIC = ("learning_rate", "num_train_epochs", "weight_decay", "warmup_steps")  # floats in trl.SFTConfig
INTEGER = ("per_device_train_batch_size", "max_steps")
LLAMA_HAS = (
    "(LlamaForCausalLM has: down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj)"
)


@pytest.mark.parametrize("value", ["fast", True, [1]])
@pytest.mark.parametrize("key", [*NUMERIC, *INTEGER, "logging_steps"])
def test_a_non_number_for_a_number_is_named_with_the_type_expected(key: str, value: object) -> None:
    expected = "an integer" if key in INTEGER else "a number"  # logging_steps is a float (a fraction of the steps)
    with pytest.raises(UserError, match=rf"^train\.trainer\.{key} must be {expected}, got {re.escape(repr(value))}$"):
        check_trainer_types({key: value})


def test_every_numeric_sft_config_key_is_checked() -> None:
    numeric = []
    for key, hint in preflight.sft_config_types().items():
        accepted = set(typing.get_args(hint) or (hint,))
        if accepted & {int, float} and str not in accepted:  # int | str (pad_to_multiple_of: "auto") takes "fast"
            numeric.append(key)
            with pytest.raises(UserError, match=rf"train\.trainer\.{key} must be"):
                check_trainer_types({key: "fast"})
    assert {*NUMERIC, *INTEGER, "logging_steps", "adam_beta1", "eval_steps", "save_total_limit"} <= set(numeric)


def test_right_types_pass_and_a_yaml_int_is_a_float() -> None:
    check_trainer_types(
        {
            "learning_rate": 1,
            "num_train_epochs": 2,
            "warmup_steps": 0.1,
            "eval_steps": None,
            "lr_scheduler_type": "cosine",
            "eval_strategy": "epoch",
            "report_to": ["none"],
            "bf16": False,
            "gradient_checkpointing": True,
            "activation_checkpointing": True,
        }
    )


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"lr_scheduler_type": "fast"}, r"lr_scheduler_type must be one of linear, cosine, .*, got 'fast'$"),
        ({"eval_strategy": "sometimes"}, r"eval_strategy must be one of no, steps, epoch, got 'sometimes'$"),
        ({"per_device_train_batch_size": 4.0}, r"per_device_train_batch_size must be an integer, got 4\.0$"),
        ({"bf16": "yes"}, r"bf16 must be true or false or null, got 'yes'$"),
        ({"learning_rate": "1e-4"}, r"learning_rate must be a number, got '1e-4': remove the quotes$"),
        ({"run_name": 2024}, r"run_name must be a string or null, got 2024: put it in quotes$"),
        ({"learnin_rate": 1e-4}, r"learnin_rate is not a trl\.SFTConfig setting \(did you mean learning_rate\?\)"),
    ],
    ids=["scheduler", "eval strategy", "float for int", "string for bool", "quoted number", "number for str", "typo"],
)
def test_enums_bools_strings_and_unknown_keys(trainer: dict, message: str) -> None:
    with pytest.raises(UserError, match=r"^train\.trainer\." + message):
        check_trainer_types(trainer)


@pytest.mark.parametrize(
    ("args", "steps"),
    [
        ((16, 4, 1, 1, 2, -1, False), 8),
        ((16, 4, 3, 1, 1, -1, False), 2),  # 4 batches, an update every 3 (the last one shorter)
        ((16, 4, 1, 2, 1, -1, False), 2),  # two processes, each its own batch of 4
        ((10, 4, 1, 1, 0.5, -1, False), 2),  # half of 3 batches, rounded up
        ((10, 4, 1, 1, 1, 7, False), 7),  # max_steps wins over the epochs
        ((10, 4, 1, 1, 1, -1, True), 2),  # the last, partial batch dropped
        ((3, 4, 1, 1, 1, 5, True), 0),  # no full batch at all
        ((0, 4, 1, 1, 1, -1, False), 0),
    ],
)
def test_planned_steps_follow_the_trainer(args: tuple, steps: int) -> None:
    assert planned_steps(*args) == steps


def trainer_settings(trainer: dict, profile: str) -> dict:
    """The run's SFTConfig settings for train.trainer under a profile, on a CPU (the one merge sft_config makes)."""
    return run_settings(TrainParams(trainer=trainer, profile=profile), "cpu")


def settings(**trainer: object) -> dict:
    return trainer_settings(trainer, "cpu")


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ({"num_train_epochs": 0}, r"train\.trainer\.num_train_epochs is 0 and train\.trainer\.max_steps is -1 "),
        ({"max_steps": 0}, r"train\.trainer\.max_steps is 0: no training step would run; set a step count, or -1 "),
        ({"max_steps": -3}, r"train\.trainer\.max_steps is -3: set a positive step count, or -1 to train for "),
        ({"num_train_epochs": -1.5}, r"train\.trainer\.num_train_epochs is -1\.5: set a positive number"),
        ({"per_device_train_batch_size": 0}, r"train\.trainer\.per_device_train_batch_size is 0: set it to 1 or more"),
        ({"gradient_accumulation_steps": -2}, r"train\.trainer\.gradient_accumulation_steps is -2: set it to 1 or"),
        (
            {"dataloader_drop_last": True, "per_device_train_batch_size": 32},
            r"train\.trainer\.dataloader_drop_last is true and the 16 training records fill no batch of "
            r"train\.trainer\.per_device_train_batch_size 32 x 1 process\(es\)",
        ),
    ],
    ids=["zero epochs", "zero max_steps", "negative max_steps", "negative epochs", "batch 0", "accumulation", "drop"],
)
def test_zero_steps_or_a_negative_count_is_refused(trainer: dict, message: str) -> None:
    with pytest.raises(UserError, match="^" + message):
        check_steps(settings(**trainer), 16, 1, Path("train.jsonl"))


def test_max_steps_trains_even_with_zero_epochs() -> None:
    assert check_steps(settings(num_train_epochs=0, max_steps=5), 16, 1, Path("train.jsonl")) == 5
    assert check_steps(settings(num_train_epochs=2), 16, 1, Path("train.jsonl")) == 8  # TRAINER_DEFAULTS' batch 4


@pytest.mark.parametrize(
    "trainer",
    [{}, {"per_device_train_batch_size": 512}, {"per_device_train_batch_size": 64, "gradient_accumulation_steps": 16}],
    ids=["defaults", "512 a step", "1024 a step"],
)
def test_every_profile_trains_the_recipes_steps(trainer: dict) -> None:
    """One recipe on every device: the profile splits params' examples per step, it never changes them."""
    cpu, gpu = trainer_settings(trainer, "cpu"), trainer_settings(trainer, "gpu")
    per_step = {
        name: s["per_device_train_batch_size"] * s["gradient_accumulation_steps"]
        for name, s in (("cpu", cpu), ("gpu", gpu))
    }
    assert per_step["cpu"] == per_step["gpu"]
    assert check_steps(cpu, 5000, 1, Path("train.jsonl")) == check_steps(gpu, 5000, 1, Path("train.jsonl"))
    assert gpu["per_device_train_batch_size"] <= PROFILES["gpu"].micro_batch
    assert all(
        cpu[key] == gpu[key]
        for key in RECIPE_KEYS
        if key not in ("per_device_train_batch_size", "gradient_accumulation_steps")
    )


def test_the_default_params_are_one_recipe_on_the_gpu_and_the_cpu() -> None:
    """Every recipe setting (packing included: it decides what a step holds) is the same under both profiles."""
    shipped = load_params(ROOT / "params.yaml").train.trainer
    cpu, gpu = trainer_settings(shipped, "cpu"), trainer_settings(shipped, "gpu")
    assert {key: cpu[key] for key in RECIPE_KEYS} == {key: gpu[key] for key in RECIPE_KEYS}
    assert cpu["packing"] is True and cpu["per_device_train_batch_size"] == 4
    steps = {p: check_steps(trainer_settings(shipped, p), 160, 1, Path("train.jsonl")) for p in ("cpu", "gpu")}
    assert steps["cpu"] == steps["gpu"]


def test_a_profile_cannot_set_the_recipe() -> None:
    with pytest.raises(ValueError, match="learning_rate, per_device_train_batch_size belong in params"):
        Profile(
            trainer={"per_device_train_batch_size": 512, "learning_rate": 1e-3, "bf16": True},
            base_dtype="x",
            lora_dtype="x",
        )


def test_an_empty_train_split_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "train.jsonl").write_text("", encoding="utf-8")
    params = Params(train=TrainParams(trainer={"num_train_epochs": 1}))
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / 'train.jsonl'))} holds no record: no training"):
        preflight.check_train_params(params.train, tiny_model_dir, tmp_path, "cpu", 1)


def test_an_unknown_target_module_names_what_the_base_has(tiny_model_dir: Path) -> None:
    message = f"train.lora.target_modules: nonexistent_proj is not a module of the base {LLAMA_HAS}"
    with pytest.raises(UserError, match=f"^{re.escape(message)}$"):
        check_target_modules(["q_proj", "nonexistent_proj"], tiny_model_dir)
    with pytest.raises(UserError, match=r"^train\.lora\.target_modules: a_proj, b_proj are not modules of the base"):
        check_target_modules(["a_proj", "b_proj"], tiny_model_dir)
    with pytest.raises(UserError, match=r"input_layernorm is a LlamaRMSNorm in the base, which LoRA cannot adapt"):
        check_target_modules(["input_layernorm"], tiny_model_dir)
    with pytest.raises(UserError, match=r"^train\.lora\.target_modules: all-linear adapts every linear layer: list it"):
        check_target_modules(["all-linear", "q_proj"], tiny_model_dir)


def test_targets_the_check_accepts_peft_accepts_too(tiny_model_dir: Path) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from loravc.train.lora import LoraParams, lora_config

    for targets, adapted in [
        (["q_proj", "self_attn.v_proj", "lm_head"], {"q_proj", "v_proj", "lm_head"}),
        (["all-linear"], {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    ]:
        check_target_modules(targets, tiny_model_dir)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora_config(LoraParams(target_modules=targets))
        )
        names = {
            name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in model.named_parameters() if "lora_A" in name
        }
        assert names == adapted


def test_the_stage_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rows = [{"text": f"Record {i}."} for i in range(4)]
    (prepared / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    checkpoint = tmp_path / "checkpoints" / "checkpoint-4"  # of some other run: left alone
    checkpoint.mkdir(parents=True)
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  device: cpu\n  trainer:\n    learning_rate: fast\n", encoding="utf-8")
    paths = {"base": tiny_model_dir, "data": prepared, "out": tmp_path / "out", "live": tmp_path / "live"}
    args = [f"--{name}={path}" for name, path in paths.items()]
    args += [f"--checkpoints={tmp_path / 'checkpoints'}", f"--params={params}"]
    result = run([sys.executable, "-m", "stages.train", *args], ROOT, check=False)
    # the stage's own output is one error line; what a library prints besides (a warning on import) is not its own
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert (result.returncode, errors) == (2, ["error: train.trainer.learning_rate must be a number, got 'fast'"])
    assert not result.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "live").exists() and checkpoint.is_dir()


def test_stage_source_checks_once_per_params_code_and_base(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked, calls = tmp_path / "checked.json", []
    real = preflight.check_train_settings
    monkeypatch.setattr(preflight, "check_train_settings", lambda *args: calls.append(args) or real(*args))
    train = TrainParams(device="cpu", lora=LoraParams(r=4, target_modules=["q_proj"]))
    preflight.check_before_outputs(train, tiny_model_dir, checked)
    preflight.check_before_outputs(train, tiny_model_dir, checked)
    assert len(calls) == 1  # the same params, code, libraries and base: remembered
    preflight.check_before_outputs(TrainParams(device="cpu", lora=LoraParams(r=8)), tiny_model_dir, checked)
    assert len(calls) == 2
    monkeypatch.setattr(preflight.memo, "code_sha256", lambda: "edited")
    preflight.check_before_outputs(train, tiny_model_dir, checked)
    assert len(calls) == 3
    bad = TrainParams(device="cpu", lora=LoraParams(target_modules=["query"]))
    for _ in range(2):  # a failure is not remembered: it fails again
        with pytest.raises(UserError, match=r"^train\.lora\.target_modules: query is not a module of the base"):
            preflight.check_before_outputs(bad, tiny_model_dir, checked)
    preflight.check_before_outputs(bad, None, checked)  # the base not built yet: only the train stage checks it
    assert len(calls) == 6


def test_without_the_base_every_lora_option_is_still_checked() -> None:
    with pytest.raises(UserError, match=r"^train\.lora\.use_dorra is not a peft\.LoraConfig option"):
        preflight.check_train_settings(
            TrainParams(device="cpu", lora=LoraParams(options={"use_dorra": True})), None, "cpu"
        )
