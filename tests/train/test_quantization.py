"""loravc.core.quantization: bitsandbytes settings from train.quantization, and the CPU layout that must stay off."""

from pathlib import Path

import pytest

from loravc.core import quantization
from loravc.core.quantization import QuantizationParams
from tests.conftest import build_tiny_model, needs_bitsandbytes


def test_an_evaluation_does_not_change_what_backward_reaches(tmp_path: Path) -> None:
    """bitsandbytes 0.50.2 repacks a 4-bit layer for inference the first time it runs in eval mode without
    gradients (on a CPU with AVX512-BF16); backward through it is then wrong. after_load keeps the training layout:
    the input gradient after an evaluation is the one before it."""
    import torch
    from transformers import AutoModelForCausalLM

    needs_bitsandbytes()
    base = build_tiny_model(
        tmp_path / "wide", ["The statement number is evaluated from left to right."] * 50, hidden=64
    )
    model = AutoModelForCausalLM.from_pretrained(base, **quantization.load_options(QuantizationParams(bits=4), "cpu"))
    quantization.after_load(model)
    ids = torch.tensor([[5, 17, 42, 99, 3, 7, 8]])

    def input_gradient() -> torch.Tensor:
        model.train()
        embedded = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        model(inputs_embeds=embedded).logits.float().pow(2).mean().backward()
        return embedded.grad

    before = input_gradient()
    model.eval()
    with torch.no_grad():
        model(ids)  # an evaluation
    assert before.abs().max() > 1e-3 and torch.equal(input_gradient(), before)


def test_settings_follow_train_quantization(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from loravc.core import devices

    monkeypatch.setattr(devices, "bf16_supported", lambda device: device == "cuda")
    four = quantization.bnb_config(QuantizationParams(bits=4, quant_type="fp4", double_quant=False), "cpu")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "fp4" and not four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.float32  # auto: no native bf16 here
    assert quantization.bnb_config(QuantizationParams(bits=4), "cuda").bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization.bnb_config(QuantizationParams(bits=8), "cpu").load_in_8bit
    assert quantization.load_options(QuantizationParams(), "cpu") == {}
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert quantization.load_options(QuantizationParams(bits=8), "cuda")["device_map"] == {"": "cuda:1"}
    assert quantization.load_options(QuantizationParams(bits=8), "cuda:3")["device_map"] == {"": "cuda:3"}
    assert quantization.load_options(QuantizationParams(bits=8), "cpu")["device_map"] == {"": "cpu"}


FIXTURE = Path(__file__).parents[1] / "fixtures" / "metadata" / "3e16f18486b2023c85389b9268e81cf2.json"  # the default


def with_quantization(directory: Path, record: object) -> Path:
    """A version's metadata.json (the default pin's) with training.quantization set to `record`."""
    import json

    meta = json.loads(FIXTURE.read_text())
    meta["training"]["quantization"] = record
    (directory / "metadata.json").write_text(json.dumps(meta))
    return directory


def test_a_version_s_record_is_read_back(tmp_path: Path) -> None:
    assert quantization.recorded(tmp_path) is None  # no metadata.json: a full-precision base
    record = {
        "bits": 4,
        "quant_type": "fp4",
        "double_quant": False,
        "compute_dtype": "float32",
        "bitsandbytes": "0.50.2",
    }
    assert quantization.recorded(with_quantization(tmp_path, record)) == QuantizationParams(
        bits=4, quant_type="fp4", double_quant=False, compute_dtype="float32"
    )
    assert quantization.recorded(with_quantization(tmp_path, None)) is None  # trained on the full-precision base
    (tmp_path / "metadata.json").write_text(FIXTURE.read_text().replace('"quantization": null,', ""))
    assert quantization.recorded(tmp_path) is None  # made before QLoRA existed


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (4, r"metadata\.json is damaged \(training\.quantization must be a mapping"),
        ({"quant_type": "nf4"}, r"metadata\.json: training\.quantization names no bits"),
        ({"bits": 3}, r"metadata\.json: train\.quantization\.bits must be 4, 8 or null, got 3"),
    ],
)
def test_a_damaged_record_names_the_file(tmp_path: Path, record: object, message: str) -> None:
    from loravc.core.errors import UserError

    with pytest.raises(UserError, match=message) as err:
        quantization.recorded(with_quantization(tmp_path, record))
    assert str(tmp_path / "metadata.json") in str(err.value)
    (tmp_path / "metadata.json").write_text("{broken")
    with pytest.raises(UserError, match=r"metadata\.json is damaged \(Expecting property name"):
        quantization.recorded(tmp_path)
