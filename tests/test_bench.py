"""Every benchmark in its smoke mode on the tiny base: it runs end to end and reports its figures.

Timings are not checked here (CI machines vary); the benchmarks themselves print the targets.
"""

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.throughput import parse_variant
from loravc.errors import UserError


def run_bench(name: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    monkeypatch.setattr(sys, "argv", [f"bench.{name}", "--smoke", "--json", str(out), *args])
    importlib.import_module(f"bench.{name}").main()
    return json.loads(out.read_text())


def test_throughput_compares_project_and_tutorial(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = 'grouped={"trainer": {"train_sampling_strategy": "group_by_length"}}'
    args = ["--base", str(tiny_model_dir), "--random-weights", "--device", "cpu", "--variant", variant, "--lora-r", "2"]
    result = run_bench("throughput", args, tmp_path, monkeypatch)
    trials = {t["recipe"]: t for t in result["trials"]}
    assert set(trials) == {"tutorial", "project", "grouped"}
    tutorial, project = trials["tutorial"], trials["project"]
    assert tutorial["batch"] == 2 and tutorial["activation_checkpointing"] and not tutorial["bf16"]
    assert tutorial["lora"] == "r=8 alpha=32 dropout=0.1"
    assert project["batch"] == 4 and project["packing"] and not project["activation_checkpointing"]  # cpu profile
    assert trials["grouped"]["sampling"] == "group_by_length"
    assert project["lora"] == "r=2 alpha=16 dropout=0.05" and project["adapter_dtype"] == "torch.float32"  # --lora-r
    assert all(t["tokens_per_s"] > 0 and t["timed_steps"] == 2 for t in trials.values())
    assert result["ratios"]["project"] == pytest.approx(project["tokens_per_s"] / tutorial["tokens_per_s"])
    assert "ratio project / tutorial" in capsys.readouterr().out


def test_throughput_rejects_a_bad_variant_and_a_missing_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="not valid JSON"):
        parse_variant("fast={batch: 8}")
    with pytest.raises(UserError, match="keys trainer, lora, model"):
        parse_variant('fast={"batch": 8}')
    with pytest.raises(UserError, match=r"config\.json not found"):
        run_bench("throughput", ["--base", str(tmp_path / "nothing")], tmp_path, monkeypatch)
    with pytest.raises(UserError, match="keys trainer, lora, model"):
        parse_variant("fast=5")


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("throughput", ["--steps", "2", "--warmup", "2"], r"--steps 2 must be above --warmup 2"),
        ("restore", ["--link-types", "hardlinks"], r"hardlinks is not a DVC cache\.type"),
        ("restore", ["--repeat", "0"], r"--repeat must be at least 1"),
        ("storage", ["--versions", "0"], r"--versions must be at least 1"),
        ("overheads", ["--repeat", "0"], r"--repeat must be at least 1"),
    ],
)
def test_bad_benchmark_options_are_named_before_any_work(
    name: str, args: list[str], message: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = [] if name == "overheads" else ["--base", str(tiny_model_dir)]
    monkeypatch.setattr(sys, "argv", [f"bench.{name}", *base, *args])
    with pytest.raises(UserError, match=message):
        importlib.import_module(f"bench.{name}").main()


def test_storage_caches_the_base_once_and_each_version_small(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_bench("storage", ["--base", str(tiny_model_dir)], tmp_path, monkeypatch)
    commits = result["commits"]
    assert [c["commit"] for c in commits] == ["base", "version 1", "version 2", "version 3"]
    assert result["base_cached_once"]
    # later versions add the adapter weights and small files only: the tokenizer is stored once
    assert commits[2]["added"] < commits[1]["added"]
    assert result["adapter_bytes"] <= result["per_version"] < result["adapter_bytes"] + 20_000


def test_restore_switches_versions_and_bases(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_bench("restore", ["--base", str(tiny_model_dir)], tmp_path, monkeypatch)
    (found,) = result["results"]
    assert found["link_type"] == "reflink,hardlink,symlink,copy"
    assert found["adapter"]["total"] > 0 and found["base"]["total"] > 0 and found["cp_base"] > 0


def test_overheads_times_repro_exp_show_and_every_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_bench("overheads", [], tmp_path, monkeypatch)
    assert result["experiments"] == 2 and result["repro"] > 0 and result["exp_show"] > 0
    assert {"stages.base", "stages.train", "bench.throughput", "bench.default_run"} <= set(result["help"])


def test_default_run_reports_each_stage(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_bench("default_run", ["--base", str(tiny_model_dir)], tmp_path, monkeypatch)
    assert set(result["stages"]) <= {"base", "prepare", "train", "evaluate"} and "train" in result["stages"]
    assert result["seconds"] > 0 and result["peak_rss"] >= result["stages"]["train"]["peak_rss"] > 0
    assert (tmp_path / "default_run.json").exists()
