"""FSDP, run: the train stage under an accelerate FSDP config in two CPU processes (gloo).

accelerate (1.15) never runs FSDP on CPU processes: with an FSDP config they train with DDP (MULTI_CPU), which
the stage says and metadata records (docs/scale-out.md, "FSDP on a CPU"). torch's FSDP2 itself runs on CPUs over
gloo, so the test lets accelerate choose it there (tests/cpu_fsdp/sitecustomize.py changes that one decision) and
everything after is the real FSDP path: the model sharded by fully_shard, the shards gathered for the main
process, which alone writes the version. That adapter must be, in values, the one a single process trains with
the same global batch.
"""

import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from loravc.params import load_params
from loravc.train.training import train
from tests.conftest import ran_stages, run, update_params

CPU_FSDP = Path(__file__).parents[1] / "cpu_fsdp"

# docs/scale-out.md's FSDP config as the test runs it: mixed_precision "no", since the config's mixed_precision
# applies whatever train.trainer.bf16 says, and bf16 rounding differs with the per-process batch shape.
FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
mixed_precision: "no"
num_machines: 1
num_processes: 2
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: SHARDED_STATE_DICT
"""

# Relative difference (Frobenius norm of the difference over the one-process tensor's, the largest over the
# adapter's tensors) allowed between the two-process and the one-process adapter. Measured on this data and
# recipe (2026-11-29, torch 2.13 CPU, stage runs): 6.5e-7 under FSDP2 and under DDP alike (float summation
# order). Runs that train on other rows or another batch, measured the same way, are far above it: one process
# at batch 2 (a process's batch alone) 0.83, at batch 8 0.76; another data order (data_seed 43) 1.08; each
# process's loss averaged over its own tokens (average_tokens_across_devices false) 0.32; 15 rows, whose last
# step accelerate fills with the first row again, 0.064; the config's bf16 autocast (mixed_precision bf16)
# 0.049. lora_B starts at zero, so its norm is what training moved: an untrained adapter fails (0/0).
TOLERANCE = 1e-4


def varied_records() -> list[dict[str, str]]:
    """Prompt-completion records whose completions train 1 to 7 repeated words: the packed rows hold different
    numbers of trained tokens, so a loss averaged per process instead of over all tokens would show. Each record
    is more than half of train.max_length (64) on the tiny tokenizer, so a packed row holds one record and the 16
    training records make 16 rows: 4 full steps of 4 rows an epoch (with a last, short step accelerate would fill
    the processes' batches with the epoch's first rows again, which one process does not do)."""
    words = ["list", "tuple", "print", "open", "sorted", "range", "dict", "zip", "map", "len"]
    records = []
    for i in range(30):
        word, times = words[i % len(words)], 1 + (i * 5) % 7
        prompt = f"Repeat the name of the built-in function {word} exactly {times} times, separated by spaces:"
        records.append({"prompt": prompt, "completion": " " + " ".join([word] * times)})
    return records


def adapter_tensors(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def relative_difference(a: dict, b: dict) -> float:
    """The largest over the tensors of |a - b| / |a| (Frobenius norms); the same keys and shapes, or an error."""
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    return max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a)


def test_fsdp_in_two_cpu_processes_trains_the_one_process_adapter(built_repo_template: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(built_repo_template, repo, symlinks=True)
    data = repo / "data" / "varied"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in varied_records()), encoding="utf-8")
    config = tmp_path / "hf" / "accelerate" / "default_config.yaml"  # accelerate's default config under HF_HOME
    config.parent.mkdir(parents=True)
    config.write_text(FSDP_CONFIG, encoding="utf-8")
    # What else makes two processes differ from one (docs/scale-out.md, "FSDP on a CPU"): adapter dropout draws
    # other masks in each process, and bf16 autocast rounds differently with the per-process batch shape (off
    # here and in FSDP_CONFIG). No warmup, 6 steps: every step moves the weights, lora_A as well as lora_B.
    recipe = {"lora": {"dropout": 0.0}, "trainer": {"bf16": False, "max_steps": 6, "warmup_steps": 0}}
    update_params(repo / "params.yaml", {"data": {"train": "data/varied"}, "train": recipe})
    update_params(repo / "params.yaml", {"train": {"processes": 2, "trainer": {"per_device_train_batch_size": 2}}})

    python_path = os.pathsep.join(filter(None, [str(CPU_FSDP), os.environ.get("PYTHONPATH")]))
    env = {"HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": python_path}
    out = run([sys.executable, "-m", "dvc", "repro", "train"], repo, env=env).stdout
    assert ran_stages(out) == {"prepare", "train"}
    assert f"train: 2 processes (accelerate config {config})" in out and f"--config_file {config}" in out
    # FSDP ran: each process held half of a LoRA matrix (a DTensor shard) until the shards were gathered
    lora_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight (8, 16) (DTensor)"
    assert f"cpu_fsdp: process 0 holds (4, 16) of {lora_a}" in out
    assert f"cpu_fsdp: process 1 holds (4, 16) of {lora_a}" in out
    assert "asks for FSDP" not in out  # the note for an FSDP config that accelerate runs as DDP
    assert out.count("train: v_") == 1  # only the main process reports (and writes)
    adapter = repo / "models" / "adapter"
    meta = json.loads((adapter / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["training"]["distributed"] == "FSDP"
    assert meta["training"]["precision"] == "fp32" and meta["metrics"]["steps"] == 6
    two = adapter_tensors(adapter)

    # One process, the same global batch (4 rows a step), the same data: trained here, in this process.
    one_params = tmp_path / "one.yaml"
    shutil.copy(repo / "params.yaml", one_params)
    update_params(one_params, {"train": {"processes": 1, "trainer": {"per_device_train_batch_size": 4}}})
    base, prepared = repo / "models" / "base", repo / "data" / "prepared"
    one_meta = train(load_params(one_params).train, base, prepared, tmp_path / "one", tmp_path / "one-live")
    one = adapter_tensors(tmp_path / "one")
    assert one_meta.world_size == 1 and one_meta.training.distributed is None
    assert meta["metrics"]["train_tokens"] == one_meta.metrics.train_tokens  # the same rows' tokens
    assert meta["lora"]["trainable_parameters"] == one_meta.lora.trainable_parameters  # counted whole, not a shard
    assert relative_difference(one, two) < TOLERANCE


def test_an_fsdp_config_that_accelerate_runs_as_ddp_is_said_and_recorded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What CPU processes get from an FSDP config without tests/cpu_fsdp: accelerate's DDP (MULTI_CPU)."""
    import torch
    from accelerate.utils import DistributedType

    from loravc.train.launch import engine

    def accelerator(kind: DistributedType, processes: int = 2, main: bool = True) -> SimpleNamespace:
        return SimpleNamespace(
            num_processes=processes, distributed_type=kind, is_main_process=main, device=torch.device("cpu")
        )

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch sets for an FSDP config
    assert engine(accelerator(DistributedType.MULTI_CPU)) == "MULTI_CPU"
    said = capsys.readouterr().out
    assert "the accelerate config asks for FSDP, but accelerate runs MULTI_CPU on this device (cpu)" in said
    assert engine(accelerator(DistributedType.MULTI_CPU, main=False)) == "MULTI_CPU"  # said once, by the main one
    assert engine(accelerator(DistributedType.FSDP)) == "FSDP"
    assert engine(accelerator(DistributedType.NO, processes=1)) is None
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert engine(accelerator(DistributedType.MULTI_CPU)) == "MULTI_CPU"  # plain DDP: nothing to say
    assert capsys.readouterr().out == ""
