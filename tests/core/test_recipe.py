"""A version's recipe in words, as the run summary and `loravc list` say it: a quantized base, an early stop
(the PEFT variants' names and the list column: tests/cli/test_recipe_column.py)."""

from loravc.core.recipe import early_stop, quantized_base, text


def test_a_quantized_base_is_named_by_its_bits_and_type() -> None:
    assert quantized_base(None) is None
    assert quantized_base({"bits": 4, "quant_type": "nf4", "double_quant": True}) == "4-bit nf4 base"
    assert quantized_base({"bits": 8, "bitsandbytes": "0.50.2"}) == "8-bit base"


def test_an_early_stop_says_where_it_stopped_of_the_steps_planned_and_the_best_step() -> None:
    stop = {"best_step": 15, "stopped_at_step": 20, "planned_steps": 60, "stopped_early": True}
    assert early_stop(None) is None
    assert early_stop(stop) == "stopped at step 20 of 60 (best 15)"
    assert (
        early_stop(stop | {"stopped_at_step": 60, "stopped_early": False, "best_step": 55}) == "all 60 steps (best 55)"
    )


def test_the_recipe_text_joins_what_there_is() -> None:
    assert text(None) == "-"
    assert text({"variants": [], "quantization": None, "early_stopping": None}) == "-"
    stop = {"best_step": 1, "stopped_at_step": 2, "planned_steps": 6, "stopped_early": True}
    recipe = {"variants": ["DoRA", "rsLoRA"], "quantization": {"bits": 4, "quant_type": "nf4"}, "early_stopping": stop}
    assert text(recipe) == "DoRA, rsLoRA, 4-bit nf4 base, stopped at step 2 of 6 (best 1)"
