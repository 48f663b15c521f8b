"""Every benchmark in its smoke mode on the tiny base: it runs end to end and reports its figures.

Timings are not checked here (CI machines vary); the benchmarks themselves print the targets.
"""

import importlib
import json
import statistics
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bench.common import BENCHMARKS
from bench.project import ROOT, run
from bench.throughput import parse_variant
from loravc.core.errors import UserError
from loravc.core.schema import read_yaml
from loravc.core.tools import dvc_cmd
from loravc.params import load_params
from tests.conftest import UP_TO_DATE, needs_bitsandbytes


def lora_weight_bytes(base: Path, rank: int) -> int:
    """fp32 bytes of the LoRA matrices A (r x in) and B (out x r) on every target module of params.yaml."""
    from transformers import AutoModelForCausalLM

    targets = load_params(ROOT / "params.yaml").train.lora.target_modules
    model = AutoModelForCausalLM.from_pretrained(base)
    linears = [m for name, m in model.named_modules() if name.split(".")[-1] in targets]
    return sum(4 * rank * (m.in_features + m.out_features) for m in linears)


def run_bench(name: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    monkeypatch.setattr(sys, "argv", [f"bench.{name}", "--smoke", "--json", str(out), *args])
    importlib.import_module(f"bench.{name}").main()
    return json.loads(out.read_text())


def test_throughput_compares_project_and_tutorial(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cpu_kind: str | None,
) -> None:
    variant = 'grouped={"trainer": {"train_sampling_strategy": "group_by_length"}}'
    args = ["--base", str(tiny_model_dir), "--random-weights", "--device", "cpu", "--variant", variant, "--lora-r", "2"]
    result = run_bench("throughput", args, tmp_path, monkeypatch)
    trials = {t["recipe"]: t for t in result["trials"]}
    native = cpu_kind is not None
    # where the CPU has native bf16 TRL's defaults autocast in bf16, and the fp32 tutorial runs beside them
    assert set(trials) == {"tutorial", "project", "grouped"} | ({"tutorial-fp32"} if native else set())
    assert result["max_length"] == 32 and result["machine"]["cpu_bf16"] == cpu_kind
    tutorial, project = trials["tutorial"], trials["project"]
    assert tutorial["batch"] == 2 and tutorial["activation_checkpointing"] and tutorial["bf16"] is native
    assert tutorial["lora"] == "r=8 alpha=32 dropout=0.1"
    assert project["batch"] == 4 and project["packing"] and not project["activation_checkpointing"]  # cpu profile
    assert project["bf16"] is native and "grouped" in result["ratios"] and "project" in result["ratios"]
    out = capsys.readouterr().out
    path = f"bf16 autocast ({cpu_kind}: native bf16)" if native else "fp32 (no AMX or AVX512-BF16"
    assert f"precision path of the cpu profile and of TRL's defaults on this CPU: {path}" in out
    if native:
        fp32 = trials["tutorial-fp32"]
        assert not fp32["bf16"] and fp32["batch"] == 2
        expected = {name: trials[name]["tokens_per_s"] / fp32["tokens_per_s"] for name in ("project", "grouped")}
        assert result["ratios_vs_fp32_tutorial"] == pytest.approx(expected)
        assert f"ratio project / tutorial-fp32: {expected['project']:.2f}x" in out
    trials.pop("tutorial-fp32", None)
    assert trials["grouped"]["sampling"] == "group_by_length"
    assert project["lora"] == "r=2 alpha=16 dropout=0.05" and project["adapter_dtype"] == "torch.float32"  # --lora-r
    for t in trials.values():
        # every record is longer than the max length (32 in smoke mode): each timed step trains on exactly
        # batch x max_length tokens, and the warm-up step is not counted
        assert t["timed_steps"] == 2 and t["tokens"] == t["timed_steps"] * t["batch"] * result["max_length"]
        assert t["tokens_per_s"] == pytest.approx(t["tokens"] / t["seconds"])
        assert t["tokens_per_cpu_s"] == pytest.approx(t["tokens"] / t["cpu_seconds"])
        assert 0 <= t["system_cpu_share"] <= 1
    others = {name: t for name, t in trials.items() if name != "tutorial"}
    assert result["ratios"] == pytest.approx(
        {name: t["tokens_per_s"] / tutorial["tokens_per_s"] for name, t in others.items()}
    )
    per_cpu = {name: t["tokens_per_cpu_s"] / tutorial["tokens_per_cpu_s"] for name, t in others.items()}
    assert result["cpu_time_ratios"] == pytest.approx(per_cpu)
    for name in ("project", "grouped"):
        also = f" (per CPU second: {per_cpu[name]:.2f}x)"
        assert f"ratio {name} / tutorial: {result['ratios'][name]:.2f}x{also}" in out


def test_throughput_rejects_a_bad_variant_and_a_missing_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="not valid JSON"):
        parse_variant("fast={batch: 8}")
    with pytest.raises(UserError, match="keys trainer, lora, model"):
        parse_variant('fast={"batch": 8}')
    with pytest.raises(UserError, match=r"config\.json not found"):
        run_bench("throughput", ["--base", str(tmp_path / "nothing")], tmp_path, monkeypatch)
    with pytest.raises(UserError, match="keys trainer, lora, model"):
        parse_variant("fast=5")
    with pytest.raises(UserError, match=r"--variant q3: train\.quantization\.bits must be 4, 8 or null, got 3"):
        parse_variant('q3={"quantization": {"bits": 3}}')
    with pytest.raises(UserError, match=r"--variant qx: unknown key 'quantization\.kind'"):
        parse_variant('qx={"quantization": {"kind": "nf4"}}')
    assert parse_variant('plain={"quantization": {"bits": null}}').quantization == {}  # no bits: no quantization


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("throughput", ["--steps", "2", "--warmup", "2"], r"--steps 2 must be above --warmup 2"),
        ("restore", ["--link-types", "hardlinks"], r"hardlinks is not a DVC cache\.type"),
        ("restore", ["--repeat", "0"], r"--repeat must be at least 1"),
        ("storage", ["--versions", "0"], r"--versions must be at least 1"),
        ("storage", ["--lora", "use_dora"], r"--lora 'use_dora': write KEY=VALUE"),
        ("storage", ["--lora", "rank=8"], r"train\.lora\.rank is not a peft\.LoraConfig option \(did you mean r\?\)"),
        ("storage", ["--lora", "alpha=0"], r"train\.lora\.alpha must be a positive integer"),
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


def test_throughput_measures_a_qlora_base_beside_the_project(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_bitsandbytes()
    variant = 'nf4={"quantization": {"bits": 4}}'
    args = ["--base", str(tiny_model_dir), "--random-weights", "--device", "cpu", "--recipes", "project"]
    result = run_bench("throughput", [*args, "--variant", variant], tmp_path, monkeypatch)
    trials = {t["recipe"]: t for t in result["trials"]}
    assert trials["project"]["quantization"] is None and trials["project"]["quantized_layers"] == 0
    assert trials["nf4"]["quantization"] == {"bits": 4}
    assert trials["nf4"]["quantized_layers"] == 14  # every linear layer of the 2 blocks; the head stays


def test_storage_shows_the_bytes_of_whole_modules_saved(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--base", str(tiny_model_dir), "--versions", "1", "--lora", "modules_to_save=[lm_head]"]
    result = run_bench("storage", args, tmp_path, monkeypatch)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    head = config["vocab_size"] * config["hidden_size"] * 4  # a whole fp32 copy of the output head
    lora_bytes = lora_weight_bytes(tiny_model_dir, result["rank"])
    assert result["lora_options"] == {"modules_to_save": ["lm_head"]}
    assert lora_bytes + head < result["adapter_bytes"] < lora_bytes + head + 8192
    assert f"LoRA r={result['rank']}, modules_to_save=[lm_head]" in capsys.readouterr().out


def test_storage_caches_the_base_once_and_each_version_small(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_bench("storage", ["--base", str(tiny_model_dir)], tmp_path, monkeypatch)
    commits, base_bytes = result["commits"], result["base_bytes"]
    assert [c["commit"] for c in commits] == ["base", "version 1", "version 2", "version 3"]
    assert base_bytes == sum(p.stat().st_size for p in tiny_model_dir.iterdir())  # the base copied, every file
    # the base's files once, plus DVC's small .dir manifest of them
    assert result["base_cached_once"] and base_bytes < commits[0]["added"] < base_bytes + 4096
    # later versions add the adapter weights and small files only: the tokenizer is stored once
    assert commits[2]["added"] < commits[1]["added"]
    assert result["adapter_bytes"] <= result["per_version"] < result["adapter_bytes"] + 20_000
    # the adapter file holds r x (in + out) fp32 LoRA weights per target module of the base, and a small header
    rank = load_params(ROOT / "params.yaml").train.lora.r
    assert result["rank"] == rank
    lora_bytes = lora_weight_bytes(tiny_model_dir, rank)
    assert lora_bytes < result["adapter_bytes"] < lora_bytes + 8192
    # the figures are the quotients of the bytes reported
    assert all(c["fraction"] == pytest.approx(c["added"] / base_bytes) for c in commits)
    assert result["per_version"] == max(c["added"] for c in commits[2:])
    assert result["per_version_fraction"] == pytest.approx(result["per_version"] / base_bytes)
    assert result["first_version_fraction"] == commits[1]["fraction"]


@pytest.mark.slow  # a real pipeline run (tests/conftest.py's rule)
def test_restore_switches_versions_and_bases(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_bench("restore", ["--base", str(tiny_model_dir)], tmp_path, monkeypatch)
    (found,) = result["results"]
    assert found["link_type"] == "reflink,hardlink,symlink,copy"
    # every switch restored the bytes committed at its tag, and the three tags hold different files
    tags = ["base-a-v1", "base-a-v2", "base-b"]
    assert found["verified"] == list(result["digests"]) == tags and len(set(result["digests"].values())) == 3
    assert result["base_bytes"] == sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    # smoke: one round, two switches each way, so each median is the mean: total = git + dvc exactly
    for switch in ("adapter", "base"):
        assert found[switch]["total"] == pytest.approx(found[switch]["git"] + found[switch]["dvc"])
    # the ratios are the quotients of the reported times
    assert found["adapter_ratio"] == pytest.approx(found["adapter"]["total"] / found["cp_adapter"])
    assert found["base_ratio"] == pytest.approx(found["base"]["total"] / found["cp_base"])
    work = max(found["base"]["total"] - found["dvc_noop"], 0.0) / found["cp_base"]
    assert found["base_work_ratio"] == pytest.approx(work)
    # smoke: the large bases are 2 shards of the base's tensors each, and switching between them restored them
    (large,) = result["large"]
    assert large["verified"] == ["large-a", "large-b"] and len(set(result["large_digests"].values())) == 2
    weights = sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    assert 2 * weights < result["large_base_bytes"] < 2 * weights + result["base_bytes"] + 10**6
    (growth,) = result["growth"]
    assert growth["switch_ratio"] == pytest.approx(large["base"]["total"] / found["base"]["total"])
    assert growth["cp_ratio"] == pytest.approx(large["cp_base"] / found["cp_base"])


def test_synthetic_base_shards_differ_within_and_across_variants(tiny_model_dir: Path, tmp_path: Path) -> None:
    import hashlib

    import torch
    from safetensors.torch import load_file

    from bench.restore import synthetic_base

    a = synthetic_base(tiny_model_dir, tmp_path / "a", 3, 0)
    b = synthetic_base(tiny_model_dir, tmp_path / "b", 3, 1)
    shards = sorted(a.glob("*.safetensors")) + sorted(b.glob("*.safetensors"))
    assert [p.name for p in shards[:3]] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in shards}) == 6
    index = json.loads((a / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards[:3]}
    original = load_file(tiny_model_dir / "model.safetensors")
    name = next(iter(original))
    assert torch.equal(load_file(shards[1])[f"shard1.{name}"], original[name] + 3.0)  # 1 + shard 1 x 2 + variant 0
    assert (a / "config.json").read_bytes() == (tiny_model_dir / "config.json").read_bytes()


@pytest.mark.slow  # a real pipeline run (tests/conftest.py's rule)
def test_overheads_times_repro_exp_show_and_every_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_bench("overheads", [], tmp_path, monkeypatch)
    # dvc exp show listed exactly the experiments saved
    assert result["experiments"] == 2 and result["listed_experiments"] == ["bench-1", "bench-2"]
    assert result["copied_outputs"] == []  # smoke: stand-ins
    # --help of every stage module, every benchmark and every console script, nothing else
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    stages = {f"stages.{p.stem}" for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    assert set(result["help"]) == stages | {f"bench.{name}" for name in BENCHMARKS} | set(scripts)
    # each figure is the median of its timed runs (smoke: one cold run, no warm-up)
    runs, skip = result["runs"], result["warm_up_runs"]
    assert skip == 0 and all(len(times) == 1 for times in runs.values())
    for name in ("dvc_startup", "repro", "exp_show"):
        assert result[name] == statistics.median(runs[name][skip:])
    assert result["help"] == {name: statistics.median(runs[f"{name} --help"][skip:]) for name in result["help"]}


def test_versions_scale_lists_shows_and_compares_a_long_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_bench("versions_scale", [], tmp_path, monkeypatch)
    assert result["versions"] == 20 and result["listed"] == 20  # every made-up version found and read
    assert set(result) >= {"list, cold", "list, warm", "show", "compare"}  # show and compare ran (else it raises)


@pytest.mark.slow  # a real pipeline run (tests/conftest.py's rule)
def test_default_run_reports_each_stage(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = tmp_path / "kept"
    changes = ["--set", "train.seed=7", "--set", "evaluate.metrics=[chrf]"]  # as `dvc exp run -S` would
    result = run_bench(
        "default_run", ["--base", str(tiny_model_dir), "--keep", str(kept), *changes], tmp_path, monkeypatch
    )
    # what was timed is a complete `dvc repro` of the smoke pipeline: every stage ran and is up to date
    assert run(dvc_cmd("status"), kept).stdout.strip() == UP_TO_DATE
    assert set(read_yaml(kept / "dvc.lock")["stages"]) == set(read_yaml(kept / "dvc.yaml")["stages"])
    assert (kept / "models" / "adapter" / "adapter_model.safetensors").is_file()
    params = read_yaml(kept / "params.yaml")
    assert params["base"]["source"] == str(tiny_model_dir) and params["train"]["seed"] == 7
    assert params["evaluate"]["metrics"] == ["chrf"] and params["train"]["max_length"] == 64  # smoke ones kept
    stages = result["stages"]
    assert set(stages) <= {"source", "base", "prepare", "train", "evaluate", "report"} and "train" in stages
    # the parts fit in the whole: stages run one after another within the command's wall time, and the peaks
    # are the largest of what the sampler saw (the tree sums every process it saw at once)
    assert sum(s["seconds"] for s in stages.values()) <= result["seconds"]
    assert result["tree_peak"] >= max(s["peak_rss"] for s in stages.values()) > 0
    # getrusage's peak of the largest process (the kernel's counters, which lag /proc's RSS by a few pages per thread)
    assert result["largest_process"] >= 0.99 * max(s["peak_rss"] for s in stages.values())
    assert result["peak_rss"] == max(result["largest_process"], result["tree_peak"])


def test_generation_times_batched_and_one_at_a_time_answers(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_bench(
        "generation", ["--base", str(tiny_model_dir), "--records", "5", "--batch-size", "2"], tmp_path, monkeypatch
    )
    one, batched = result["ways"]["one at a time"], result["ways"]["batched (2)"]
    assert result["records"] == 5 and result["rounds"] == 1 and len(one["runs"]) == len(batched["runs"]) == 1
    for way in (one, batched):
        assert way["tokens_per_second"] == pytest.approx(way["tokens"] / way["seconds"])
    assert result["speedup"] == pytest.approx(batched["tokens_per_second"] / one["tokens_per_second"])
    assert result["identical"] == 5  # the tiny model's greedy answers do not depend on batching
    assert f"{result['identical']} of 5 answers identical" in capsys.readouterr().out


@pytest.mark.parametrize("item", ["train.seed", "=3", "train..seed=3"])
def test_default_run_names_a_malformed_set(item: str) -> None:
    from bench.default_run import params_changes

    with pytest.raises(UserError, match="expected KEY=VALUE"):
        params_changes([item])


def test_default_run_checks_each_set_against_params_yaml() -> None:
    from bench.default_run import params_changes

    with pytest.raises(UserError, match="the value is not YAML"):
        params_changes(["train.seed=[1"])
    with pytest.raises(UserError, match=r"^--set train\.sede=7: unknown key 'train\.sede'"):
        params_changes(["train.sede=7"])
    with pytest.raises(UserError, match=r"train\.lora\.r must be a positive integer"):
        params_changes(["train.lora.r=0"])
    with pytest.raises(UserError, match=r"an earlier --set gave seed a value, not a section"):
        params_changes(["train.seed=1", "train.seed.x=2"])
    changes = params_changes(["train.trainer.learning_rate=1.0e-3", "train.lora.target_modules=[q_proj, v_proj]"])
    assert changes == {"train": {"trainer": {"learning_rate": 0.001}, "lora": {"target_modules": ["q_proj", "v_proj"]}}}
