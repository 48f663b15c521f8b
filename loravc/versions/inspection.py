"""What a version is, read from its weights and pins: LoRA facts, `show`'s record, `compare`'s differences."""

import json
from pathlib import Path
from typing import Any

from loravc.core.metadata import environment_lock
from loravc.versions.catalogue import Version, Versions


def lora_facts(adapter_dir: Path) -> dict[str, Any]:
    """Rank per module from the tensor shapes, target modules, alpha and the trainable parameter count.

    lora_A weights are (r, in_features) and lora_B (out_features, r); the adapter file holds exactly
    the trainable tensors, so their sizes add up to the trainable parameter count.
    """
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    with safe_open(str(weights), framework="numpy") as f:
        slices = {key: f.get_slice(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    shapes = {key: list(s.get_shape()) for key, s in slices.items()}
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = {key.split(".lora_A")[0]: shape[0] for key, shape in sorted(shapes.items()) if ".lora_A" in key}
    by_target: dict[str, set[int]] = {}
    for module, rank in ranks.items():
        by_target.setdefault(module.rsplit(".", 1)[-1], set()).add(rank)
    alpha = config.get("lora_alpha")
    distinct = sorted(set(ranks.values()))
    return {
        "ranks": distinct,
        "rank_per_target": {t: sorted(r) for t, r in sorted(by_target.items())},
        "rank_per_module": ranks,
        "modules": len(ranks),
        "target_modules": sorted(by_target),
        "alpha": alpha,
        "alpha_pattern": config.get("alpha_pattern") or {},
        "scaling": [round(alpha / (r**0.5 if config.get("use_rslora") else r), 6) for r in distinct] if alpha else [],
        "trainable_parameters": sum(_numel(s) for s in shapes.values()),
        "dtypes": sorted({s.get_dtype() for s in slices.values()}),  # safetensors names: F32, BF16
        "adapter_bytes": weights.stat().st_size,
        "use_rslora": bool(config.get("use_rslora")),  # scaling alpha / sqrt(r) rather than alpha / r
        "dora": _dora(weights, [key for key in shapes if ".lora_magnitude_vector" in key]),
        "modules_to_save": _saved_modules(shapes, slices),
    }


def _dora(weights: Path, keys: list[str]) -> dict[str, Any] | None:
    """DoRA's learned magnitude vectors (one per adapted module, a norm per output feature): how many, and
    the spread of their values; None for a plain LoRA adapter. Read with numpy (no torch: `show` starts fast)."""
    if not keys:
        return None
    import numpy as np

    values = np.concatenate([_float_values(weights, key) for key in keys])
    return {
        "modules": len(keys),
        "magnitude_mean": round(float(values.mean()), 6),
        "magnitude_min": round(float(values.min()), 6),
        "magnitude_max": round(float(values.max()), 6),
    }


def _float_values(weights: Path, key: str) -> Any:
    """A float tensor of a safetensors file as float32 numpy values, bf16 included (safetensors' numpy reader
    has no bf16: its 16 bits are the high half of a float32's)."""
    import numpy as np

    with weights.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        entry = json.loads(f.read(size))[key]
        start, end = entry["data_offsets"]
        f.seek(8 + size + start)
        raw = f.read(end - start)
    if entry["dtype"] == "BF16":
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype={"F32": "<f4", "F16": "<f2", "F64": "<f8"}[entry["dtype"]]).astype(np.float32)


def _saved_modules(shapes: dict[str, list[int]], slices: dict[str, Any]) -> dict[str, int]:
    """Whole modules' tensors stored next to the LoRA ones (train.lora.modules_to_save; biases with bias: all),
    each module with its bytes."""
    sizes = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8}
    saved: dict[str, int] = {}
    for key, shape in shapes.items():
        if ".lora_" not in key:
            name = key.rsplit(".", 1)[0].removeprefix("base_model.model.")
            saved[name] = saved.get(name, 0) + _numel(shape) * sizes.get(slices[key].get_dtype(), 4)
    return dict(sorted(saved.items()))


def _numel(shape: list[int]) -> int:
    total = 1
    for size in shape:
        total *= size
    return total


def describe(versions: Versions, version: Version) -> dict[str, Any]:
    """Everything `show` prints: refs, metadata, metrics, params, LoRA facts from the weights, and the locks this
    environment was set up from (to compare with the version's `lock`)."""
    adapter = versions.materialize(version, version.pins.adapter)
    return version.row() | {
        "metadata": version.metadata.to_dict() if version.metadata else None,
        "metrics": version.metrics,
        "params": version.pins.params,
        "lora_weights": lora_facts(adapter),
        "base": version.pins.base.as_dict() if version.pins.base else None,
        "environment_lock": environment_lock(),
    }


def compare(versions: Versions, a: Version, b: Version) -> dict[str, Any]:
    """Params and metrics that differ, and the LoRA facts of both, read from the weights."""

    def diff(x: dict[str, Any], y: dict[str, Any]) -> dict[str, list[Any]]:
        return {k: [x.get(k), y.get(k)] for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)}

    from loravc.evaluate.scoring import compare_answers

    answers = versions.predictions(a), versions.predictions(b)
    return {
        "a": describe(versions, a),
        "b": describe(versions, b),
        "params": diff(a.pins.params, b.pins.params),
        "metrics": diff(a.metrics, b.metrics),
        "task": compare_answers(*answers) if all(rows is not None for rows in answers) else None,
    }
