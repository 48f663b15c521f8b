"""A version's recipe in words, read from its metadata: PEFT variants, a quantized base, an early stop."""

import pytest

from loravc.core.recipe import lora_variants, steps_run


@pytest.mark.parametrize(
    ("options", "quantization", "words"),
    [
        ({}, None, []),
        ({"use_dora": True, "use_rslora": True}, None, ["DoRA", "rsLoRA"]),
        ({"use_dora": False, "init_lora_weights": True}, None, []),  # PEFT's defaults name no variant
        ({"init_lora_weights": "pissa"}, None, ["PiSSA init"]),
        ({"init_lora_weights": "pissa_niter_16"}, None, ["PiSSA init (16 iterations)"]),
        ({"init_lora_weights": "olora"}, None, ["OLoRA init"]),
        ({"init_lora_weights": False}, None, ["random init (B not zero)"]),
        (
            {"modules_to_save": ["lm_head"], "layer_replication": [[0, 2]]},
            None,
            ["whole lm_head trained", "options layer_replication"],
        ),
        ({}, {"bits": 4, "quant_type": "nf4", "double_quant": True}, ["4-bit nf4 base (QLoRA)"]),
        ({}, {"bits": 8, "bitsandbytes": "0.50.2"}, ["8-bit base (QLoRA)"]),
    ],
)
def test_lora_variants_name_what_plain_lora_lacks(options: dict, quantization: dict | None, words: list) -> None:
    assert lora_variants(options, quantization) == words


def test_steps_say_where_early_stopping_ended_the_run() -> None:
    record = {"metric": "eval_loss", "best_step": 15, "best_value": 1.61234, "planned_steps": 60}
    assert steps_run(60, None) == "60 steps"
    stopped = record | {"stopped_at_step": 20, "stopped_early": True}
    assert steps_run(20, stopped) == "20 of 60 planned steps (stopped early; best eval_loss 1.6123 at step 15, kept)"
    ran = record | {"stopped_at_step": 60, "stopped_early": False, "best_step": 55, "best_value": None}
    assert steps_run(60, ran) == "60 steps (early stopping on, did not stop; best eval_loss at step 55, kept)"
