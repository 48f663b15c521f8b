import dataclasses
from pathlib import Path

import pytest

from loravc.core.errors import UserError
from loravc.core.schema import flatten, read_yaml
from loravc.params import Params, load_params
from loravc.train.params import TRAINER_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_params_load_with_yaml_12_floats() -> None:
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.base.source == "smollm2" and params.base.trust_remote_code is False
    assert isinstance(params.train.trainer["learning_rate"], float)


def test_exponent_without_dot_is_a_float_as_dvc_reads_it(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, "train:\n  trainer:\n    learning_rate: 2e-4\n"))
    assert params.train.trainer["learning_rate"] == pytest.approx(2e-4)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train:\n  lora:\n    r: 0\n", "train.lora.r"),
        ("train:\n  lora:\n    r: eight\n", "train.lora.r"),
        ("train:\n  lora:\n    lora_alpha: 8\n", "train.lora.lora_alpha is PEFT's name for train.lora.alpha"),
        ("train:\n  lora:\n    init_lora_weights: eva\n", "train.lora.init_lora_weights 'eva': the pipeline runs"),
        (
            "train:\n  lora:\n    target_modules: [1, 2]\n",
            "train.lora.target_modules must be a list of strings or a string, got [1, 2]",
        ),
        ("train:\n  quantization:\n    bits: 3\n", "train.quantization.bits must be 4, 8 or null, got 3"),
        (
            "train:\n  lora:\n    init_lora_weights: pissa\n    use_dora: true\n",
            "train.lora.init_lora_weights 'pissa' is saved converted to plain LoRA pairs for the unchanged base, which "
            "cannot hold use_dora",
        ),
        (
            "train:\n  lora:\n    init_lora_weights: olora\n    modules_to_save: [lm_head]\n",
            "cannot hold modules_to_save",
        ),
        ("train:\n  lora:\n    init_lora_weights: pissa\n    bias: all\n", "cannot hold bias: all"),
        ("train:\n  lora:\n    init_lora_weights: PISSA\n", "train.lora.init_lora_weights 'PISSA': the pipeline runs"),
        (
            "train:\n  lora:\n    init_lora_weights: pissa\n  quantization:\n    bits: 4\n",
            "train.lora.init_lora_weights moves part of the base into the adapter, which a quantized base",
        ),
        ("train:\n  quantization:\n    quant_type: int4\n", "train.quantization.quant_type must be nf4 or fp4"),
        ("train:\n  early_stopping:\n    metric: bleu\n", "train.early_stopping.metric must be one of eval_loss"),
        ("train:\n  early_stopping:\n    patience: -1\n", "train.early_stopping.patience must be 0 (off) or more"),
        (
            "train:\n  early_stopping:\n    patience: 2\n  trainer:\n    eval_steps: 5\n",
            "train.trainer.eval_steps is set by train.early_stopping while it is on",
        ),
        ("train:\n  lora:\n    dropout: 1.5\n", "train.lora.dropout"),
        ("train:\n  lora:\n    dtype: float16\n", "train.lora.dtype"),
        ("train:\n  device: tpu\n", "train.device"),
        ("train:\n  trainer:\n    seed: 1\n", "train.trainer.seed"),
        ("train:\n  trainer:\n    assistant_only_loss: false\n", "train.trainer.assistant_only_loss"),
        ("data:\n  loss_on: assistant\n", "data.loss_on"),
        ("prepare:\n  test_records: true\n", "prepare.test_records"),
        ("evaluate:\n  prompts: hello\n", "evaluate.prompts"),
        ("bogus: 1\n", "bogus"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_params(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_other_lora_keys_are_peft_options(tmp_path: Path) -> None:
    text = "train:\n  lora:\n    target_modules: all-linear\n    use_dora: true\n    modules_to_save: [lm_head]\n"
    lora = load_params(write(tmp_path, text)).train.lora
    assert lora.target_modules == "all-linear" and lora.r == 4
    assert lora.options == {"use_dora": True, "modules_to_save": ["lm_head"]}
    from loravc.train.lora import lora_config

    config = lora_config(lora)
    assert config.use_dora and config.modules_to_save == ["lm_head"] and config.target_modules == "all-linear"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lora:\n    rank: 8\n", "train.lora.rank is not a peft.LoraConfig option (did you mean r?)"),
        (
            "train:\n  lora:\n    use_dorra: true\n",
            "train.lora.use_dorra is not a peft.LoraConfig option (did you mean use_dora?)",
        ),
        ("train:\n  lora:\n    use_dora: yes please\n", "train.lora.use_dora must be true or false, got 'yes please'"),
        (
            "train:\n  lora:\n    layers_pattern: layers\n",
            "peft.LoraConfig rejects these options: When `layers_pattern`",
        ),
        (
            "train:\n  lora:\n    rank_pattern: {q_proj: x}\n",
            "train.lora.rank_pattern.q_proj must be a positive integer",
        ),
        (
            "train:\n  lora:\n    alpha_pattern: {q_proj: 0}\n",
            "train.lora.alpha_pattern.q_proj must be a positive number",
        ),
        ("train:\n  lora:\n    megatron_config: {a: 1}\n", "train.lora.megatron_config: Megatron-LM layers"),
    ],
)
def test_peft_options_are_checked_against_peft_before_any_model_loads(tmp_path: Path, text: str, message: str) -> None:
    """Keys and types against peft.LoraConfig: preflight (train) and `loravc tune` run it; loading params does not
    import PEFT."""
    from loravc.train.lora import check_lora_keys

    lora = load_params(write(tmp_path, text)).train.lora
    with pytest.raises(UserError) as err:
        check_lora_keys(lora)
    assert message in str(err.value)


def test_loading_params_with_peft_options_imports_no_ml_library(tmp_path: Path) -> None:
    """Every stage loads params (source on every repro): train.lora's options must not pull in torch or PEFT."""
    import subprocess
    import sys

    path = write(tmp_path, "train:\n  lora:\n    use_dora: true\n    init_lora_weights: gaussian\n")
    probe = (
        "import sys; from loravc.params import load_params; "
        f"assert load_params({str(path)!r}).train.lora.options['use_dora']; "
        "print(sorted(m for m in ('torch', 'peft', 'transformers', 'bitsandbytes') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(write(tmp_path, "train: [unclosed\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_int_accepted_for_float(tmp_path: Path) -> None:
    assert load_params(write(tmp_path, "train:\n  lora:\n    dropout: 0\n")).train.lora.dropout == 0.0


def test_params_yaml_ships_the_dataclass_defaults() -> None:
    """One home for every default: params.yaml holds exactly the dataclasses' defaults, every knob listed."""
    assert load_params(ROOT / "params.yaml") == Params()
    raw = read_yaml(ROOT / "params.yaml")

    def fields_of(cls: type, prefix: str) -> set[str]:
        names = set()
        for f in dataclasses.fields(cls):
            if f.name == getattr(cls, "EXTRA_KEYS", None):  # the keys left over (train.lora's PEFT options)
                continue
            if dataclasses.is_dataclass(f.type):
                names |= fields_of(f.type, f"{prefix}{f.name}.")
            else:
                names.add(f"{prefix}{f.name}")
        return names

    mappings = ("train.trainer.", "tune.space.")  # free-form blocks: their keys are not fields
    documented = {key for key in flatten(raw) if not key.startswith(mappings)} | {"train.trainer", "tune.space"}
    assert documented == fields_of(Params, "")
    for key, value in raw["train"]["trainer"].items():  # the block users edit repeats the trainer defaults
        assert TRAINER_DEFAULTS[key] == value, key


def test_every_knob_says_what_it_does() -> None:
    def knobs(cls: type) -> list[dataclasses.Field]:
        found = []
        for f in dataclasses.fields(cls):
            found += knobs(f.type) if dataclasses.is_dataclass(f.type) else [f]
        return found

    assert all(f.metadata.get("help") for f in knobs(Params))


def test_a_profile_is_chosen_by_name(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"train\.profile must be one of auto, cpu, gpu"):
        load_params(write(tmp_path, "train:\n  profile: tpu\n"))
