"""One device for the model and its inputs, chosen up front with a clear error if it is absent."""

import ctypes
import ctypes.util

from loravc.core.errors import UserError

# glibc mallopt() parameters (malloc.h) and the values keep_freed_memory() sets
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_KEEP_FREED = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 256 * 2**20}


def resolve_device(requested: str, key: str) -> str:
    """'auto' -> cuda if present, else mps, else cpu; an absent device is a UserError naming `key`."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    kind = requested.split(":", 1)[0]
    if kind == "cuda" and not cuda:
        raise UserError(f"{key} is {requested!r} but no CUDA device is visible to torch: use 'cpu' or 'auto'")
    if kind == "cuda" and ":" in requested and int(requested.split(":")[1]) >= torch.cuda.device_count():
        raise UserError(f"{key} is {requested!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if kind == "mps" and not mps:
        raise UserError(f"{key} is 'mps' but this torch has no MPS device: use 'cpu' or 'auto'")
    return requested


def bf16_supported(device: str) -> bool:
    """Whether `device` runs bf16 natively: a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16 (cpu_bf16)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and cpu_bf16() is not None


def cpu_bf16() -> str | None:
    """The CPU's native bf16 instructions as torch detects them: "amx", "avx512_bf16", or None (bf16 emulated).

    Without them (AVX2-only CPUs, most laptops before 2023) torch emulates bf16 and it is slower than fp32;
    with them bf16 matrix products run at about 2.6x fp32 (docs/performance.md).
    """
    import torch

    checks = (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for name, check in checks:
        probe = getattr(torch.cpu, check, None)  # private helpers of torch 2.x; absent: treat as emulated
        if probe is not None and probe():
            return name
    return None


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    A CPU training step frees and allocates the same large activation buffers every step; by
    default glibc serves each with a fresh mmap(), so every step pays page faults and page zeroing
    (a noticeable share of the train process's CPU time in the kernel). With large blocks on the heap and
    no trimming they are reused; docs/performance.md has the measured gain. The train stage does this for
    fp32 only: under bf16 autocast the blocks vary in size from step to step, the heap fragments, and the
    default run's train process grew to 5.1 GB against 3.5 GB with glibc's defaults (1.28x faster).
    Returns False where the C library is not glibc (macOS, musl), changing nothing.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    results = [mallopt(param, value) == 1 for param, value in _KEEP_FREED.items()]  # each one, even after a refusal
    return all(results)
