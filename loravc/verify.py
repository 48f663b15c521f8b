"""Check a version end to end: its files hash to what dvc.lock records, it loads, and (optionally) its
test perplexity is still what the evaluate stage recorded."""

import tempfile
from pathlib import Path
from typing import Any

from loravc.errors import UserError
from loravc.params import EvaluateParams, TrainParams
from loravc.use import PROBE_TEXT
from loravc.versions import Version, Versions

EVAL_TOLERANCE = 1e-3  # relative difference allowed between re-computed and recorded test perplexity


def dir_md5(path: Path) -> tuple[str, dict[str, str]]:
    """DVC's hash of a directory (`<md5>.dir`, what dvc.lock records) and each file's md5."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    with tempfile.TemporaryDirectory() as tmp:
        _, _, tree = build(HashFileDB(LocalFileSystem(), tmp), str(path), LocalFileSystem(), "md5", dry_run=True)
    files = {"/".join(key): hi.value for key, _, hi in tree}
    return tree.hash_info.value, files


def verify(
    versions: Versions,
    version: Version,
    *,
    evaluate: bool = False,
    device: str = "cpu",
    tolerance: float = EVAL_TOLERANCE,
) -> dict[str, Any]:
    """Check a version: its files hash to what dvc.lock says, it loads, and optionally its perplexity.

    Files are assembled afresh from the DVC cache into a scratch directory, so the cache copy is
    what gets checked. Raises UserError on the first failed check; returns what was checked.
    """
    import torch

    from loravc.devices import resolve_device
    from loravc.evaluation import load_base_and_adapter

    report: dict[str, Any] = {"rev": version.rev, "version_id": version.version_id, "files": {}}
    outs = {"adapter": version.pins.adapter, "base": version.pins.base}
    if evaluate:
        outs["data"] = version.pins.data
    versions.cache.store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".verify-", dir=versions.cache.store) as tmp:
        dirs: dict[str, Path] = {}
        for name, out in outs.items():
            if out is None:
                raise UserError(f"{version.short}: dvc.lock records no {name} directory for this version")
            dirs[name] = versions.materialize(version, out, dest=Path(tmp) / name)
            found, files = dir_md5(dirs[name])
            report["files"][out.path] = {"recorded": out.md5, "found": found, "files": len(files)}
            if found != out.md5:
                recorded = versions.cache.recorded_md5(out)
                bad = sorted(f for f in set(files) | set(recorded) if files.get(f) != recorded.get(f))
                raise UserError(
                    f"{out.path} at {version.short} hashes to {found}, dvc.lock says {out.md5} (differs: "
                    f"{', '.join(bad) or 'the manifest'}): the DVC cache copy is damaged; remove those files from "
                    "the cache and `dvc pull`"
                )
        model, tokenizer = load_base_and_adapter(dirs["base"], dirs["adapter"], resolve_device(device, "device"))
        inputs = tokenizer(PROBE_TEXT, return_tensors="pt").to(next(model.parameters()).device)
        with torch.no_grad():
            logits = model(**inputs).logits
        if not bool(torch.isfinite(logits).all()):
            raise UserError(f"{version.short}: the loaded model produces non-finite logits")
        report["loads"] = {"device": str(next(model.parameters()).device), "probe_tokens": int(logits.shape[1])}
        if evaluate:
            report["eval"] = _reevaluate(version, model, tokenizer, dirs["data"], tolerance)
    return report


def _reevaluate(version: Version, model: Any, tokenizer: Any, data_dir: Path, tolerance: float) -> dict[str, Any]:
    from loravc import data
    from loravc.evaluation import perplexity

    recorded = version.test_perplexity
    if recorded is None:
        raise UserError(
            f"{version.short}: no recorded test perplexity for this adapter (the evaluate stage's metrics at that "
            "revision are missing or belong to another adapter): run `dvc repro evaluate` and commit"
        )
    params = version.pins.params
    result = perplexity(
        model,
        tokenizer,
        data.read_split(data_dir, "test"),
        max_length=int(params.get("train.max_length", TrainParams.max_length)),
        batch_size=int(params.get("evaluate.batch_size", EvaluateParams.batch_size)),
    )
    relative = abs(result["perplexity"] - recorded) / recorded
    check = {"recorded": recorded, "measured": result["perplexity"], "relative_difference": relative}
    check["tolerance"] = tolerance
    if relative > tolerance:
        raise UserError(
            f"{version.short}: test perplexity {result['perplexity']} differs from the recorded {recorded} by "
            f"{relative:.2%} (tolerance {tolerance:.2%})"
        )
    return check
