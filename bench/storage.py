"""Storage: bytes each new version adds to the DVC cache, as a fraction of the base model's bytes.

In a scratch git + DVC repository the base is cached once (`dvc add models/base`), then five
versions of models/adapter are written the way the train stage writes them (PEFT adapter in
safetensors, tokenizer files, metadata.json; LoRA on the params.yaml modules) and each is
committed with `dvc add` + `git commit`. The cache is measured after each commit. Files equal
across versions (the tokenizer) are stored once: DVC's cache is content-addressed.

    python -m bench.storage                   # base from models/base (its 538 MB weights are copied)
    python -m bench.storage --base DIR --versions 5 --rank 8
    python -m bench.storage --lora use_dora=true --lora 'modules_to_save=[lm_head]'   # other train.lora keys

Output ends with (measured figures per rank: docs/performance.md):
    per version after the first: <bytes> bytes = <percent>% of the base (target 0.5%: met or not met); ...
"""

import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    AdapterWriter,
    at_least_one,
    base_parser,
    params_changes,
    repo_with_base,
    report_machine,
    require_base,
    table,
    tree_bytes,
    write_json,
)
from bench.project import ROOT
from loravc.core.errors import UserError, run_main
from loravc.core.schema import build
from loravc.train.lora import LoraParams, check_lora_keys

TARGET = 0.005  # of the base's bytes, per version


def run(base: Path, versions: int, lora: LoraParams, workdir: Path) -> dict[str, Any]:
    repo = repo_with_base(base, workdir / "repo")
    cache = repo / ".dvc" / "cache"
    base_bytes = tree_bytes(repo / "models" / "base")
    cached = tree_bytes(cache)
    rows: list[dict[str, Any]] = [{"commit": "base", "added": cached, "fraction": cached / base_bytes}]
    writer = AdapterWriter(repo / "models" / "base", lora)
    for number in range(1, versions + 1):
        writer.commit(repo, number, f"version {number}")
        now = tree_bytes(cache)
        rows.append({"commit": f"version {number}", "added": now - cached, "fraction": (now - cached) / base_bytes})
        cached = now
    later = [r["added"] for r in rows[2:]] or [rows[1]["added"]]
    return {
        "base_bytes": base_bytes,
        "rank": lora.r,
        "lora_options": lora.options,
        "commits": rows,
        "adapter_bytes": (repo / "models" / "adapter" / "adapter_model.safetensors").stat().st_size,
        "per_version": max(later),
        "per_version_fraction": max(later) / base_bytes,
        "first_version_fraction": rows[1]["fraction"],
        "base_cached_once": rows[0]["added"] <= base_bytes + 65536,  # the base and its .dir manifest
    }


def lora_params(rank: int, pairs: list[str]) -> LoraParams:
    """train.lora with r=rank and --lora KEY=VALUE pairs (values in YAML), checked as the pipeline checks it."""
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"--lora {pair!r}: write KEY=VALUE, e.g. use_dora=true")
    changes = params_changes([f"train.lora.{pair}" for pair in pairs], flag="--lora") if pairs else {}
    lora = build(LoraParams, {"r": rank} | changes.get("train", {}).get("lora", {}), "train.lora")
    check_lora_keys(lora)
    return lora


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--versions", type=int, default=5, help="versions to commit (default: %(default)s)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: params.yaml train.lora.r)")
    parser.add_argument(
        "--lora", action="append", default=[], metavar="KEY=VALUE", help="a train.lora key (YAML value), repeatable"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="three versions (CI)")
    args = parser.parse_args()
    require_base(args.base)
    at_least_one(args.versions, "--versions")
    if args.smoke:
        args.versions = 3
    if args.rank is None:
        from loravc.params import load_params

        args.rank = load_params(ROOT / "params.yaml").train.lora.r
    lora = lora_params(args.rank, args.lora)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        result = run(args.base, args.versions, lora, Path(tmp))
    result["machine"] = report_machine()
    extra = "".join(f", {pair}" for pair in args.lora)
    print(f"base: {args.base} ({result['base_bytes']:,} bytes), LoRA r={lora.r}{extra}")
    print(
        table(
            ["commit", "bytes added to the cache", "of the base"],
            [[r["commit"], r["added"], f"{r['fraction']:.3%}"] for r in result["commits"]],
        )
    )
    print(f"first version (adapter + tokenizer files): {result['first_version_fraction']:.3%} of the base")
    met = "met" if result["per_version_fraction"] <= TARGET else "not met"
    print(
        f"per version after the first: {result['per_version']:,} bytes = {result['per_version_fraction']:.3%} "
        f"of the base (target {TARGET:.1%}: {met}); adapter_model.safetensors is {result['adapter_bytes']:,} bytes"
    )
    write_json(args.json, result)


if __name__ == "__main__":
    run_main(main)
