"""train.profile: per-device speed settings (loravc.train.params.PROFILES), chosen by device, overridable."""

import importlib.util
from pathlib import Path

import pytest

from loravc.core.devices import bf16_supported
from loravc.core.errors import UserError
from loravc.core.schema import build
from loravc.train import config
from loravc.train.config import (
    adapter_dtype,
    base_dtype,
    cast_adapter,
    keeps_freed_memory,
    model_options,
    precision,
    resolve_profile,
    sft_config,
)
from loravc.train.lora import LoraParams
from loravc.train.params import TRAINER_DEFAULTS, TrainParams


@pytest.fixture
def bf16_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA device with bf16, as far as the dtype choices can tell."""
    monkeypatch.setattr(config, "bf16_supported", lambda device: device.startswith("cuda"))


def test_auto_picks_the_gpu_profile_on_cuda_only() -> None:
    assert resolve_profile("auto", "cuda") == "gpu"
    assert resolve_profile("auto", "cpu") == resolve_profile("auto", "mps") == "cpu"
    assert resolve_profile("gpu", "cpu") == "gpu"


def test_base_dtype_is_bf16_only_with_the_gpu_profile_on_a_bf16_device(bf16_gpu: None) -> None:
    assert base_dtype("auto", "cuda") == base_dtype("gpu", "cuda") == "bfloat16"
    assert base_dtype("auto", "cpu") == "float32"  # bf16 is emulated (slow) on CPUs without AVX512-BF16/AMX
    assert base_dtype("cpu", "cuda") == "float32"  # the cpu profile asked for on a GPU
    assert base_dtype("gpu", "cpu") == "float32"  # falls back where the device has no bf16


def test_lora_dtype_follows_the_profile_unless_set(bf16_gpu: None) -> None:
    assert adapter_dtype(TrainParams(), "cuda") == "bfloat16"  # bf16 adapters match a bf16 base on GPUs
    assert adapter_dtype(TrainParams(), "cpu") == "float32"
    assert adapter_dtype(TrainParams(profile="gpu"), "cpu") == "float32"  # no bf16 on this device: fp32
    assert adapter_dtype(TrainParams(lora=LoraParams(dtype="bfloat16")), "cpu") == "bfloat16"  # asked for
    assert adapter_dtype(TrainParams(profile="gpu", lora=LoraParams(dtype="float32")), "cuda") == "float32"


def test_cast_adapter_touches_only_trainable_weights() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[0].requires_grad_(False)
    cast_adapter(model, "bfloat16")
    assert model[0].weight.dtype == torch.float32 and model[1].weight.dtype == torch.bfloat16


def test_cpu_profile_keeps_the_cpu_defaults(tmp_path: Path, cpu_kind: str | None) -> None:
    config = sft_config(TrainParams(), "cpu", tmp_path)
    assert config.per_device_train_batch_size == TRAINER_DEFAULTS["per_device_train_batch_size"]
    assert config.bf16 is (cpu_kind is not None) and config.use_liger_kernel is False  # bf16 where native only
    assert config.packing is True  # padding-free rows: no compute spent on padding


def test_cpu_profile_loads_varlen_attention_in_fp32_and_gpu_keeps_the_default(bf16_gpu: None) -> None:
    import torch

    assert model_options("auto", "cpu") == {"dtype": torch.float32, "attn_implementation": "sdpa_varlen"}
    assert model_options("auto", "cuda") == {"dtype": torch.bfloat16}  # sdpa (flash kernels) on a GPU
    assert model_options("cpu", "cuda") == {"dtype": torch.float32}  # the cpu profile asked for on a GPU


def test_precision_names_the_path_taken(cpu_kind: str | None) -> None:
    from types import SimpleNamespace

    assert precision(SimpleNamespace(bf16=False, fp16=False), "cpu") == "fp32"
    assert precision(SimpleNamespace(bf16=True, fp16=False), "cpu") == f"bf16 autocast ({cpu_kind or 'emulated'})"
    assert precision(SimpleNamespace(bf16=True, fp16=False), "cuda") == "bf16 autocast (cuda)"
    assert precision(SimpleNamespace(bf16=False, fp16=True), "cpu") == "fp16 autocast (cpu)"  # not the bf16 path
    # an accelerate config's mixed_precision (ACCELERATE_MIXED_PRECISION) autocasts where train.trainer does not
    mixed = SimpleNamespace(bf16=False, fp16=False, mixed_precision="bf16")
    assert precision(mixed, "cpu") == f"bf16 autocast ({cpu_kind or 'emulated'})"
    # glibc keeps freed memory for fp32 steps only: bf16 from the config grows the heap as the cpu profile's would
    assert keeps_freed_memory(SimpleNamespace(bf16=False, fp16=False), "cpu") and not keeps_freed_memory(mixed, "cpu")
    assert not keeps_freed_memory(SimpleNamespace(bf16=False, fp16=False), "cuda")


def test_gpu_profile_settings_and_clean_fallbacks_off_gpu(tmp_path: Path) -> None:
    liger_installed = importlib.util.find_spec("liger_kernel") is not None
    with pytest.warns(UserWarning, match="liger-kernel is not installed") if not liger_installed else _nothing():
        config = sft_config(TrainParams(profile="gpu"), "cpu", tmp_path)
    assert config.per_device_train_batch_size == TRAINER_DEFAULTS["per_device_train_batch_size"]  # params' recipe
    assert config.gradient_accumulation_steps == 1
    assert config.train_sampling_strategy == "group_by_length"
    assert config.bf16 is bf16_supported("cpu")  # bf16 autocast only where this CPU runs it natively
    assert config.use_liger_kernel is liger_installed


def test_train_trainer_overrides_the_profile(tmp_path: Path) -> None:
    params = TrainParams(profile="gpu", trainer={"per_device_train_batch_size": 64, "use_liger_kernel": False})
    config = sft_config(params, "cpu", tmp_path)
    assert config.per_device_train_batch_size == 64 and config.use_liger_kernel is False


def test_a_bad_batch_is_left_for_preflight_to_name() -> None:
    from loravc.train.params import PROFILES, run_batch

    bad = {"per_device_train_batch_size": 0, "gradient_accumulation_steps": 1}
    assert run_batch(bad, PROFILES["gpu"]) == bad


def test_the_gpu_profile_runs_a_large_step_in_micro_batches(tmp_path: Path) -> None:
    """2048 examples a step (params) on the gpu profile: 4 forward passes of 512, the same step."""
    params = TrainParams(profile="gpu", trainer={"per_device_train_batch_size": 2048, "use_liger_kernel": False})
    config = sft_config(params, "cpu", tmp_path)
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (512, 4)
    cpu = sft_config(TrainParams(trainer={"per_device_train_batch_size": 2048}), "cpu", tmp_path)
    assert (cpu.per_device_train_batch_size, cpu.gradient_accumulation_steps) == (2048, 1)


def test_liger_asked_for_but_missing_is_a_clear_error(tmp_path: Path) -> None:
    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger-kernel is installed")
    with pytest.raises(UserError, match=r"use_liger_kernel .* `GPU=1 bash scripts/setup\.sh` installs it"):
        sft_config(TrainParams(trainer={"use_liger_kernel": True}), "cpu", tmp_path)


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(UserError, match=r"train\.profile must be one of auto, cpu, gpu"):
        build(TrainParams, {"profile": "tpu"}, "train")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
