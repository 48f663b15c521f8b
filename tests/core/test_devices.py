"""loravc.core.devices: one device chosen up front, and the CPU allocator setting of the train stage."""

import ctypes

import pytest

from loravc.core import devices
from loravc.core.errors import UserError


def test_auto_is_a_present_device_and_a_missing_one_is_a_clear_error() -> None:
    import torch

    assert devices.resolve_device("auto", "train.device") in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"train\.device is 'cuda' but no CUDA device"):
            devices.resolve_device("cuda", "train.device")
    assert not devices.bf16_supported("mps")


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, True, "amx"), (False, True, "avx512_bf16"), (False, False, None)],
)
def test_cpu_bf16_reads_torchs_detection(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, expected: str | None
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert devices.cpu_bf16() == expected
    assert devices.bf16_supported("cpu") is (expected is not None)


def test_cpu_bf16_is_none_where_torch_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert devices.cpu_bf16() is None


def test_keep_freed_memory_sets_glibc_malloc_and_is_a_no_op_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    assert devices.keep_freed_memory()
    assert dict(calls) == {-4: 0, -1: 2**31 - 1, -2: 256 * 2**20}  # M_MMAP_MAX, M_TRIM_THRESHOLD, M_TOP_PAD

    def no_glibc(name: str) -> None:
        raise OSError(f"{name}: not found")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    assert devices.keep_freed_memory() is False


def test_keep_freed_memory_works_on_this_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not a glibc system")
    assert devices.keep_freed_memory()
