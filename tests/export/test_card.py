"""The model card: built from a version's metadata.json and evaluate metrics, read back by huggingface_hub."""

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from loravc.cli.main import main, run
from loravc.core.metadata import VersionMetadata
from loravc.export.card import version_card
from loravc.train.card import EMBEDDED, HUB, LOCAL, base_kind, license_of
from loravc.versions.catalogue import Version, Versions
from loravc.versions.pins import Out, Pins

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metadata"
DEFAULT = FIXTURES / "1faeab047d26d2701e5585381d7d3784.json"  # v_20261129_033041_6aa896, the default pipeline
EVAL_FILE = "dvclive/evaluate/metrics.json"
METRICS = {  # that version's dvclive/evaluate/metrics.json (part)
    "tuned_perplexity": 3.4771,
    "base_perplexity": 87.8911,
    "task_records": 87,
    "base_exact_match": 0.0,
    "tuned_exact_match": 14.9425,
    "exact_match_gain": 14.9425,
    "exact_match_gain_low": 8.046,
    "exact_match_gain_high": 22.9885,
    "base_chrf": 15.0215,
    "tuned_chrf": 45.1237,
    "chrf_gain": 30.1022,
    "chrf_gain_low": 24.0759,
    "chrf_gain_high": 36.0849,
}
SMOLLM2_HUB = {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "source": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def version_of(path: Path, metrics: dict | None = None, evaluated: bool = True) -> Version:
    """A Version as the catalogue reads it: a fixture's metadata, pinned at a made-up commit, with metrics."""
    adapter = Out("models/adapter", path.stem + ".dir")
    pins = Pins(
        adapter=adapter,
        base=Out("models/base", "0" * 32 + ".dir"),
        data=None,
        evaluated=adapter.md5 if evaluated else "f" * 32 + ".dir",
        eval_metrics=EVAL_FILE,
        metrics_files=(EVAL_FILE,),
        predictions=None,
        params={},
    )
    flat = {f"{EVAL_FILE}:{key}": value for key, value in (metrics or {}).items()}
    return Version("a" * 40, pins, metadata=VersionMetadata.from_json(path.read_text()), metrics=flat)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem[:8])
def test_every_committed_version_gets_a_card_that_parses_back(path: Path) -> None:
    raw = json.loads(path.read_text())
    card = ModelCard(version_card(version_of(path)))
    data = card.data
    embedded = raw["base_model"]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # else the tiny legacy local base
    assert data.base_model == (raw["base_model"]["id"] if embedded else None)
    assert data.license == ("apache-2.0" if embedded else None)
    assert data.datasets == ([raw["data"]["source"]] if raw["data"].get("source") else None)
    assert (data.library_name, data.pipeline_tag) == ("peft", "text-generation")
    assert {"lora", "peft", raw["version_id"]} <= set(data.tags)
    assert data.eval_results is None and "No evaluation of exactly this adapter" in card.text
    assert f"r={raw['lora']['r']}, alpha={raw['lora']['alpha']}" in card.text
    assert f"{raw['data']['train_records']} train, {raw['data']['validation_records']} validation" in card.text
    assert ("not the weights on the Hugging Face Hub" in card.text) == embedded


def test_the_scores_go_into_the_model_index_and_the_summary() -> None:
    card = ModelCard(version_card(version_of(DEFAULT, METRICS)))
    scores = {(r.metric_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert scores == {
        ("test perplexity", "perplexity"): 3.4771,
        ("test exact match", "exact_match"): 14.9425,
        ("test chrF", "chrf"): 45.1237,
        ("base model: test perplexity", "perplexity"): 87.8911,
        ("base model: test exact match", "exact_match"): 0.0,
        ("base model: test chrF", "chrf"): 15.0215,
    }
    assert {(r.dataset_name, r.dataset_split, r.task_type) for r in card.data.eval_results} == {
        ("data/pydoc_qa", "test", "text-generation")
    }
    assert card.data.model_name == "v_20261129_033041_6aa896"
    assert "| perplexity (lower is better) | 87.89 | 3.48 | x0.0396 |" in card.text
    assert "| exact match | 0.00 | 14.94 | +14.94 [+8.05, +22.99] |" in card.text
    assert "| chrF | 15.02 | 45.12 | +30.10 [+24.08, +36.08] |" in card.text
    assert "token F1" not in card.text  # not in these metrics: no row, no entry
    assert (
        "87 records scored" in card.text
        and "`a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd`" in card.text
    )
    assert f"commit `{'a' * 40}`" in card.text


def test_metrics_of_another_adapter_are_not_this_ones() -> None:
    card = ModelCard(version_card(version_of(DEFAULT, METRICS, evaluated=False)))
    assert card.data.eval_results is None and "3.48" not in card.text


def test_where_the_base_came_from() -> None:
    embedded = json.loads(DEFAULT.read_text())["base_model"]
    assert base_kind(embedded) == EMBEDDED
    assert base_kind(SMOLLM2_HUB | {"revision": "main"}) == HUB
    assert base_kind({"id": "org/model", "source": "org/model", "source_sha256": "ab" * 32}) == LOCAL
    assert base_kind({"id": "/tmp/legacy-work/tiny-src", "source": "/tmp/legacy-work/tiny-src"}) == LOCAL
    assert base_kind({"id": "../models/base", "source": "../models/base"}) == LOCAL
    assert license_of("HuggingFaceTB/SmolLM2-360M") == "apache-2.0" and license_of("org/model") is None


def test_a_hub_base_is_named_with_its_revision() -> None:
    version = version_of(DEFAULT, METRICS)
    assert version.metadata is not None
    version.metadata.base_model = SMOLLM2_HUB | {"revision": "12fd25f77366fa6b3b4b768ec3050bf629380bac"}
    card = ModelCard(version_card(version))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.license == "apache-2.0"
    assert "at revision `12fd25f77366fa6b3b4b768ec3050bf629380bac`" in card.text
    assert "AutoPeftModelForCausalLM.from_pretrained(" in card.text and "/base" not in card.text


def test_loravc_card_prints_the_card_of_a_version(versions_repo: dict, capsys: pytest.CaptureFixture[str]) -> None:
    repo = versions_repo["repo"]
    main(["-C", str(repo), "card", "lora-adapter#prod"])
    printed = capsys.readouterr().out
    with Versions(repo) as versions:
        version = versions.resolve("lora-adapter#prod")
        assert printed == version_card(version)
    card = ModelCard(printed)
    perplexity = version.metrics[f"{EVAL_FILE}:tuned_perplexity"]
    assert [r.metric_value for r in card.data.eval_results if r.metric_name == "test perplexity"] == [perplexity]
    assert "lora-adapter#prod" in card.text and version.rev in card.text
    with pytest.raises(SystemExit) as exit_info:
        run(["-C", str(repo), "card", "rank-tow"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: no version 'rank-tow'") and len(err.splitlines()) == 1


def test_the_train_stage_writes_the_card_into_the_version_directory(built_repo: Path) -> None:
    """models/adapter/README.md is the card of its metadata.json (not PEFT's template): no commit or scores yet."""
    adapter = built_repo / "models" / "adapter"
    meta = VersionMetadata.from_json((adapter / "metadata.json").read_text())
    text = (adapter / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.model_name == meta.version_id and card.data.library_name == "peft"
    assert card.data.eval_results is None and "commit `" not in text
    assert "The evaluate stage runs after this card is written" in text
    assert f"- loss: train {meta.metrics.train_loss}, validation {meta.metrics.validation_loss}" in text
    assert "[More Information Needed]" not in text  # PEFT's template says this throughout


def test_a_qlora_version_and_its_lora_options_are_on_its_card(tmp_path: Path) -> None:
    record = json.loads(DEFAULT.read_text())
    record["lora"]["options"] = {"use_dora": True}
    quantized = {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}
    record["training"]["quantization"] = quantized | {"bitsandbytes": "0.50.2"}
    path = tmp_path / DEFAULT.name
    path.write_text(json.dumps(record))
    text = ModelCard(version_card(version_of(path, METRICS))).text
    assert "on q_proj, k_proj, v_proj, o_proj, 460,800 trainable parameters, float32, use_dora true" in text
    assert (
        "- QLoRA: trained and evaluated on the base quantized to 4-bit nf4, compute bfloat16 (bitsandbytes 0.50.2)"
        in text
    )
    assert "QLoRA" not in ModelCard(version_card(version_of(DEFAULT, METRICS))).text
