"""Check a version end to end: its files hash to what dvc.lock records, it loads, and (optionally) its
test perplexity is still what the evaluate stage recorded. `verify_cache` checks every version's adapter
in the local DVC cache at once, by hashes alone."""

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.metadata import METADATA_FILE, VersionMetadata
from loravc.core.params import MAX_LENGTH
from loravc.evaluate.params import EvaluateParams
from loravc.versions.cache import RESTORE, file_md5
from loravc.versions.catalogue import Version, Versions

EVAL_TOLERANCE = 1e-3  # relative difference allowed between re-computed and recorded test perplexity
_NO_RECORDED_PERPLEXITY = (
    "{short}: no recorded test perplexity for this adapter (the evaluate stage's metrics at that revision are "
    "missing or belong to another adapter): run `dvc repro evaluate` and commit"
)


def verify(
    versions: Versions,
    version: Version,
    *,
    evaluate: bool = False,
    device: str = "cpu",
    tolerance: float = EVAL_TOLERANCE,
) -> dict[str, Any]:
    """Check a version: its files hash to what dvc.lock says, it loads, and optionally its perplexity.

    Files are assembled afresh from the DVC cache into a scratch directory, and DvcCache.materialize
    checks the manifest against dvc.lock and every file against the manifest, so the cache copy is
    what gets checked. Raises UserError on the first failed check; returns what was checked.
    """
    import torch

    from loravc.core.devices import resolve_device
    from loravc.evaluate.evaluation import PROBE_TEXT, load_base_and_adapter

    resolved = resolve_device(device, "device")  # a missing device, or nothing to compare with: before any work
    if evaluate and version.test_perplexity is None:
        raise UserError(_NO_RECORDED_PERPLEXITY.format(short=version.short))
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
            dirs[name] = versions.materialize(version, out, dest=Path(tmp) / name)  # raises on a damaged file
            files = len(versions.cache.recorded_md5(out))
            report["files"][out.path] = {"recorded": out.md5, "found": out.md5, "files": files}
        model, tokenizer = load_base_and_adapter(dirs["base"], dirs["adapter"], resolved)
        inputs = tokenizer(PROBE_TEXT, return_tensors="pt").to(next(model.parameters()).device)
        with torch.no_grad():
            logits = model(**inputs).logits
        if not bool(torch.isfinite(logits).all()):
            raise UserError(f"{version.short}: the loaded model produces non-finite logits")
        report["loads"] = {"device": str(next(model.parameters()).device), "probe_tokens": int(logits.shape[1])}
        if evaluate:
            rows = versions.predictions(version)
            scores = _score_again(version, model, tokenizer, dirs["data"], [row["prompt"] for row in rows])
            report["eval"] = _check_perplexity(version, scores.perplexity["perplexity"], tolerance)
            if rows:
                report["task"] = _check_answers(version, scores.answers, rows)
    return report


TASK_TOLERANCE = 1.0  # points (of 100) a re-computed task score may differ from the recorded one


def _score_again(version: Version, model: Any, tokenizer: Any, data_dir: Path, prompts: list[str]) -> Any:
    """The tuned model on the version's test split as the evaluate stage scored it (loravc.evaluate.run's
    score_model, with the evaluate and train.max_length params pinned at the version's commit): perplexity over
    the tokens it trained on, and greedy answers to the recorded test prompts."""
    from loravc.data import records as data
    from loravc.evaluate.evaluation import evaluation_plan
    from loravc.evaluate.run import score_model

    params, test = version.pins.params, data.read_split(data_dir, "test")
    pinned = {key: params[f"evaluate.{key}"] for key in ("batch_size", "max_new_tokens") if f"evaluate.{key}" in params}
    ep = EvaluateParams(**{key: int(value) for key, value in pinned.items()})
    loss_on = version.metadata.training.loss_on if version.metadata else None  # the tokens evaluate scored
    plan = evaluation_plan(test, tokenizer, loss_on)
    max_length = int(params.get("train.max_length", MAX_LENGTH))
    return score_model(model, tokenizer, test, ep, max_length, plan, prompts=prompts)


def _check_answers(version: Version, answers: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The answers to the recorded test prompts, scored, against the recorded scores.

    Greedy answers are deterministic on one machine; on another CPU or a GPU a near tie between two tokens
    can resolve differently, so the check allows each metric's mean TASK_TOLERANCE points and reports how
    many answers came out identical.
    """
    from loravc.evaluate.scoring import METRICS, mean, score

    names = [n for n in METRICS if n in rows[0]["tuned"]]
    check: dict[str, Any] = {"records": len(rows), "identical_answers": 0, "metrics": {}}
    check["identical_answers"] = sum(a == row["tuned"]["answer"] for a, row in zip(answers, rows, strict=True))
    for name in names:
        recorded = round(mean([row["tuned"][name] for row in rows]), 4)
        measured = round(
            mean([score(a, row["reference"], [name])[name] for a, row in zip(answers, rows, strict=True)]), 4
        )
        check["metrics"][name] = {"recorded": recorded, "measured": measured}
        if abs(measured - recorded) > TASK_TOLERANCE:
            raise UserError(
                f"{version.short}: tuned {name} {measured} on the recorded test prompts differs from the recorded "
                f"{recorded} by more than {TASK_TOLERANCE} points ({check['identical_answers']} of {len(rows)} "
                "answers identical)"
            )
    return check


def _check_perplexity(version: Version, measured: float, tolerance: float) -> dict[str, Any]:
    recorded = version.test_perplexity
    relative = abs(measured - recorded) / recorded
    check = {"recorded": recorded, "measured": measured, "relative_difference": relative, "tolerance": tolerance}
    if relative > tolerance:
        raise UserError(
            f"{version.short}: test perplexity {measured} differs from the recorded {recorded} by "
            f"{relative:.2%} (tolerance {tolerance:.2%})"
        )
    return check


def verify_cache(versions: Versions) -> dict[str, Any]:
    """Every version's adapter directory in the local DVC cache, checked against dvc.lock by hashes alone.

    The `.dir` manifest must hash to the md5 dvc.lock records and each cached file to the md5 the manifest
    records. Nothing is fetched or loaded; a file shared by several versions is hashed once. A version whose
    files are not all in the cache is `missing` (not damage). Newest commit first.
    """
    hashed: dict[Path, str] = {}

    def md5_of(path: Path) -> str:
        if path not in hashed:
            hashed[path] = file_md5(path)
        return hashed[path]

    checked = []
    for version in reversed(list(versions.introduced.values())):
        out = version.pins.adapter
        record: dict[str, Any] = {
            "rev": version.rev,
            "label": version.label,
            "version_id": None,
            "path": out.path,
            "md5": out.md5,
            "files": 0,
            "missing": [],
            "damaged": [],
        }
        manifest = versions.cache.cache_path(out.md5)
        if not manifest.is_file():
            record["missing"] = ["(manifest)"]
        elif md5_of(manifest) != out.md5.removesuffix(".dir"):
            record["damaged"] = [_damage("(manifest)", manifest, md5_of(manifest) + ".dir", out.md5)]
        else:
            recorded = versions.cache.recorded_md5(out)
            record["files"] = len(recorded)
            for relpath, md5 in sorted(recorded.items()):
                cached = versions.cache.cache_path(md5)
                if not cached.is_file():
                    record["missing"].append(relpath)
                elif md5_of(cached) != md5:
                    record["damaged"].append(_damage(relpath, cached, md5_of(cached), md5))
                elif relpath == METADATA_FILE:  # hashes right; if invalid, `loravc list` says so: not cache damage
                    with contextlib.suppress(ValueError, UserError):
                        record["version_id"] = VersionMetadata.from_json(cached.read_bytes()).version_id
        record["status"] = "damaged" if record["damaged"] else "missing" if record["missing"] else "ok"
        checked.append(record)
    count = {status: sum(r["status"] == status for r in checked) for status in ("ok", "damaged", "missing")}
    return {"checked": len(checked), **count, "versions": checked}


def _damage(relpath: str, cached: Path, found: str, recorded: str) -> dict[str, str]:
    return {"file": relpath, "cache": str(cached), "found": found, "recorded": recorded}


def check_cache_report(report: dict[str, Any]) -> None:
    """A UserError when `verify_cache` found damage: how many cache files, and the fix."""
    files = sorted({bad["cache"] for r in report["versions"] for bad in r["damaged"]})
    if files:
        raise UserError(
            f"{len(files)} damaged file{'s' * (len(files) != 1)} in the DVC cache, in {report['damaged']} of "
            f"{report['checked']} versions (named above): {RESTORE}"
        )
