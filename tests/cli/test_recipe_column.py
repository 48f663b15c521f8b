"""`loravc list`'s recipe column: PEFT variants, a quantized base and an early stop from metadata.json; every
version ever committed here (tests/fixtures/metadata, written before some of these were recorded) still lists."""

import json
from pathlib import Path
from typing import Any

import pytest

from loravc.cli.render import list_table
from loravc.core.metadata import VersionMetadata
from loravc.core.recipe import record as recipe
from loravc.core.recipe import text as recipe_text
from loravc.core.recipe import variants

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metadata"
STOPPED = {"best_step": 15, "stopped_at_step": 20, "planned_steps": 60, "stopped_early": True, "metric": "eval_loss"}


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({}, []),
        ({"use_dora": True}, ["DoRA"]),
        ({"use_dora": False, "use_rslora": True}, ["rsLoRA"]),
        ({"init_lora_weights": "pissa_niter_16"}, ["PiSSA"]),
        ({"init_lora_weights": "olora"}, ["OLoRA"]),
        ({"init_lora_weights": "gaussian"}, ["gaussian init"]),
        ({"init_lora_weights": True}, []),
        ({"init_lora_weights": False}, ["init_lora_weights false"]),
        ({"use_dora": True, "modules_to_save": ["lm_head"]}, ["DoRA", "modules_to_save"]),
    ],
)
def test_peft_options_are_named(options: dict[str, Any], names: list[str]) -> None:
    assert variants(options) == names


def metadata(**changes: Any) -> VersionMetadata:
    """The newest committed metadata.json, with `changes` to lora.options and training's records."""
    newest = max(FIXTURES.glob("*.json"), key=lambda p: json.loads(p.read_text())["created"])
    meta = VersionMetadata.from_json(newest.read_text())
    meta.lora.options = changes.get("options", {})
    meta.training.quantization = changes.get("quantization")
    meta.training.early_stopping = changes.get("early_stopping")
    return meta


def test_the_recipe_names_the_variant_a_quantized_base_and_an_early_stop() -> None:
    nf4 = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16", "bitsandbytes": "0.50"}
    meta = metadata(options={"use_dora": True}, quantization=nf4, early_stopping=STOPPED)
    assert recipe(meta)["early_stopping"] == {k: v for k, v in STOPPED.items() if k != "metric"}
    assert recipe_text(recipe(meta)) == "DoRA, 4-bit nf4 base, stopped at step 20 of 60 (best 15)"
    ran_all = STOPPED | {"stopped_at_step": 60, "best_step": 50, "stopped_early": False}
    meta = metadata(quantization={"bits": 8, "bitsandbytes": "0.50"}, early_stopping=ran_all)
    assert recipe_text(recipe(meta)) == "8-bit base, all 60 steps (best 50)"
    assert recipe_text(recipe(metadata())) == "-"


def test_every_committed_version_lists_with_its_recipe() -> None:
    rows = []
    for file in sorted(FIXTURES.glob("*.json")):
        meta = VersionMetadata.from_json(file.read_text())
        assert recipe_text(recipe(meta)) == "-"  # plain LoRA, full precision, no early stopping: all of them
        rows.append(
            {
                "rev": file.stem,
                "branches": [],
                "tags": [],
                "experiments": [],
                "registry": [],
                "version_id": meta.version_id,
                "created": meta.created,
                "base_model": meta.base_model["id"],
                "lora_r": meta.lora.r,
                "recipe": recipe(meta),
                "data": None,
                "validation_loss": meta.metrics.validation_loss,
                "test_perplexity": None,
                "error": None,
            }
        )
    lines = list_table(rows).splitlines()
    assert len(lines) == len(rows) + 1 and " r  recipe  val loss " in lines[0]
