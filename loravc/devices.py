"""One device for the model and its inputs, chosen up front with a clear error if it is absent."""

from loravc.errors import UserError


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
    import torch

    return device.startswith("cuda") and torch.cuda.is_bf16_supported()
