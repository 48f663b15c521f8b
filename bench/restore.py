"""Restore: `git checkout <rev> && dvc checkout` of an adapter version and of a base switch, vs `cp -r`.

A scratch git + DVC repository holds base A with adapter versions v1 and v2, then a commit that
switches to base B (same architecture, other weights). For each cache link type the switch is
timed both ways, repeatedly, as a user types it (two commands, DVC's start-up included), and the
same files are copied with `cp -r` for comparison. Link types, in DVC's words:

- copy (DVC's default is "reflink,copy", which is copy on file systems without reflinks):
  every checkout rewrites the files; workspace files are writable, independent copies.
- reflink: copy-on-write clone (XFS, Btrfs, APFS); instant and writable, where supported.
- hardlink / symlink: instant; the workspace file *is* the cache file, so DVC makes it
  read-only. Edit a tracked file in place only after `dvc unprotect <path>` (which turns it into
  a copy); outputs DVC writes itself (dvc repro) need nothing.

    python -m bench.restore                                   # base from models/base, and one 10x its bytes
    python -m bench.restore --link-types reflink,hardlink,symlink,copy copy --scale 0

The base switch is also timed between two synthetic bases `--scale` times the base's bytes
(sharded safetensors, 5.4 GB for SmolLM2 at the default 10x): with cache links a switch relinks
files, so it should cost the same whatever their size, while `cp -r` and copying checkouts grow
with the bytes. At 10x it needs about 20 GB of free disk in the temporary directory (cache,
workspace and the `cp -r` copy); `--scale 0` skips it.

Output ends with, per link type (measured figures: docs/performance.md):
    <link types>: adapter <s> s (target < 1 s), base switch <ratio>x of cp -r (target <= 0.1x);
    a dvc checkout with nothing to do takes <s> s, so the base switch's own work is <ratio>x of cp -r; ...
    <link types>: a base 10.0x the bytes makes the base switch <ratio>x as long (target <= 1.2x with links), ...
"""

import json
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    AdapterWriter,
    at_least_one,
    base_parser,
    commit,
    repo_with_base,
    report_machine,
    require_base,
    table,
    timed_sh,
    tree_bytes,
    write_json,
)
from bench.project import git, init_repo, run
from loravc.base.model import sha256_directory
from loravc.core.errors import UserError, run_main
from loravc.core.tools import dvc_cmd

RECOMMENDED = "reflink,hardlink,symlink,copy"


def _timed(cmd: list[str], cwd: Path) -> float:
    (elapsed,) = timed_sh(cmd, cwd)
    return elapsed


def models_digest(repo: Path) -> str:
    """What models/base and models/adapter hold: loravc.base.model.sha256_directory of each (files streamed)."""
    return "+".join(sha256_directory(repo / "models" / part) for part in ("base", "adapter"))


def build(base: Path, repo: Path) -> dict[str, str]:
    """base A, then v1, v2 on it (tags base-a-v1, base-a-v2), then base B (tag base-b); each tag's models_digest."""
    import torch

    repo_with_base(base, repo)
    writer = AdapterWriter(repo / "models" / "base")
    digests = {}
    for number in (1, 2):
        writer.commit(repo, number, f"adapter v{number} on base A", f"base-a-v{number}")
        digests[f"base-a-v{number}"] = models_digest(repo)
    run(dvc_cmd("unprotect", "models/base"), repo)  # rewrite the base in place: unprotect first (links)
    noise = torch.Generator().manual_seed(7)
    with torch.no_grad():  # base B: the same architecture, other weights
        for param in writer.model.parameters():
            param.add_(torch.randn(param.shape, generator=noise) * 1e-3)
    writer.model.save_pretrained(repo / "models" / "base", safe_serialization=True)
    commit(repo, "models/base", "base B", "base-b")
    digests["base-b"] = models_digest(repo)
    if len(set(digests.values())) != len(digests):
        raise RuntimeError(f"two of {', '.join(digests)} hold the same files: nothing to switch between")
    return digests


def synthetic_base(src: Path, dest: Path, scale: int, variant: int) -> Path:
    """A base directory `scale` times src's bytes: src's small files, and `scale` safetensors shards of src's
    tensors (an index maps their names, as a large hub model ships them). One tensor of each shard is offset by
    the shard and `variant`, so no two shards, and no shard of another variant, hold the same bytes. Only its
    bytes matter here: it is not a loadable model."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir()):
        if p.is_file() and not p.name.endswith(".safetensors") and p.name != "model.safetensors.index.json":
            shutil.copyfile(p, dest / p.name)
    tensors = {name: t for shard in sorted(src.glob("*.safetensors")) for name, t in load_file(shard).items()}
    first = next(iter(tensors))
    weight_map = {}
    for shard in range(scale):
        name = f"model-{shard + 1:05d}-of-{scale:05d}.safetensors"
        marked = tensors | {first: tensors[first] + float(1 + shard * 2 + variant)}
        save_file({f"shard{shard}.{k}": v for k, v in marked.items()}, dest / name, metadata={"format": "pt"})
        weight_map |= {f"shard{shard}.{k}": name for k in marked}
    index = {"metadata": {"total_size": tree_bytes(dest)}, "weight_map": weight_map}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return dest


def build_large(src: Path, repo: Path, scale: int) -> dict[str, str]:
    """A repository whose models/base is synthetic_base(src, scale): base A (tag large-a), then base B (large-b)."""
    init_repo(repo)
    base = repo / "models" / "base"
    digests = {}
    for variant, tag in enumerate(("large-a", "large-b")):
        if variant:
            run(dvc_cmd("unprotect", "models/base"), repo)
            shutil.rmtree(base)
        synthetic_base(src, base, scale, variant)
        commit(repo, "models/base", f"base {tag}", tag)
        digests[tag] = sha256_directory(base)
    return digests


def switch(repo: Path, rev: str) -> dict[str, float]:
    git_s = _timed(["git", "checkout", "-q", rev], repo)
    dvc_s = _timed(dvc_cmd("checkout", "-q"), repo)
    return {"git": git_s, "dvc": dvc_s, "total": git_s + dvc_s}


def copy_time(src: Path, scratch: Path) -> float:
    dest = scratch / "copy"
    elapsed = _timed(["cp", "-r", str(src), str(dest)], scratch)
    shutil.rmtree(dest)
    return elapsed


def verify(repo: Path, digests: dict[str, str], digest_of: Callable[[Path], str] = models_digest) -> list[str]:
    """Switch to each tag as the timed switches do and compare models/ with its digest at commit time;
    the tags verified, or RuntimeError naming those whose files differ."""
    wrong = []
    for tag, digest in digests.items():
        switch(repo, tag)
        if digest_of(repo) != digest:
            wrong.append(tag)
    if wrong:
        raise RuntimeError(f"git checkout + dvc checkout of {', '.join(wrong)} left other files than committed")
    return list(digests)


def relink(repo: Path, link_type: str, rev: str) -> None:
    """Set DVC's cache.type and check out rev's files in that link type."""
    run(dvc_cmd("config", "cache.type", link_type), repo)
    git(repo, "checkout", "-q", rev)
    run(dvc_cmd("checkout", "-q", "--relink"), repo)


def medians(switches: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in switches) for k in ("git", "dvc", "total")}


def check_up_to_date(repo: Path) -> None:
    status = run(dvc_cmd("status"), repo).stdout
    if "up to date" not in status:  # each switch must leave exactly the committed files
        raise RuntimeError(f"after the switches the workspace differs from the commit:\n{status}")


def measure(repo: Path, link_type: str, repeat: int, scratch: Path, digests: dict[str, str]) -> dict[str, Any]:
    relink(repo, link_type, "base-a-v2")
    adapter, base, cp_adapter, cp_base, idle = [], [], [], [], []
    for _ in range(repeat):
        idle.append(_timed(dvc_cmd("checkout", "-q"), repo))  # nothing to do: DVC's start-up and checks
        adapter += [switch(repo, "base-a-v1"), switch(repo, "base-a-v2")]
        cp_adapter.append(copy_time(repo / "models" / "adapter", scratch))
        base += [switch(repo, "base-b"), switch(repo, "base-a-v2")]
        cp_base.append(copy_time(repo / "models" / "base", scratch))
    check_up_to_date(repo)
    result = {
        "link_type": link_type,
        "adapter": medians(adapter),
        "base": medians(base),
        "dvc_noop": statistics.median(idle),
        "cp_adapter": statistics.median(cp_adapter),
        "cp_base": statistics.median(cp_base),
        "read_only": not (repo / "models" / "base" / "config.json").stat().st_mode & 0o200,
    }
    result["base_ratio"] = result["base"]["total"] / result["cp_base"]
    result["base_work_ratio"] = max(result["base"]["total"] - result["dvc_noop"], 0.0) / result["cp_base"]
    result["adapter_ratio"] = result["adapter"]["total"] / result["cp_adapter"]
    result["verified"] = verify(repo, digests)  # the switches restored the committed bytes, not just fast
    return result


def measure_large(repo: Path, link_type: str, repeat: int, scratch: Path, digests: dict[str, str]) -> dict[str, Any]:
    """measure()'s base switch and cp -r on build_large's repository (it has no adapter versions)."""
    relink(repo, link_type, "large-a")
    base, cp_base = [], []
    for _ in range(repeat):
        base += [switch(repo, "large-b"), switch(repo, "large-a")]
        cp_base.append(copy_time(repo / "models" / "base", scratch))
    check_up_to_date(repo)
    result = {"link_type": link_type, "base": medians(base), "cp_base": statistics.median(cp_base)}
    result["base_ratio"] = result["base"]["total"] / result["cp_base"]
    result["verified"] = verify(repo, digests, lambda r: sha256_directory(r / "models" / "base"))
    return result


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument(
        "--link-types",
        nargs="+",
        default=[RECOMMENDED, "reflink,copy"],
        help="cache.type values (default: %(default)s)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="switches each way per link type (default: %(default)s)")
    parser.add_argument(
        "--scale",
        type=int,
        default=10,
        help="also switch between two synthetic bases this many times the base's bytes (0: skip; default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--smoke", action="store_true", help="one switch each way, recommended link type, large base 2x (CI)"
    )
    args = parser.parse_args()
    require_base(args.base)
    at_least_one(args.repeat, "--repeat")
    if args.scale < 0:
        raise UserError(f"--scale must be 0 (skip) or more, got {args.scale}")
    for link_type in args.link_types:
        unknown = set(link_type.split(",")) - {"reflink", "hardlink", "symlink", "copy"}
        if unknown:
            raise UserError(f"--link-types {link_type!r}: {', '.join(sorted(unknown))} is not a DVC cache.type")
    if args.smoke:
        args.repeat, args.link_types, args.scale = 1, [RECOMMENDED], min(args.scale, 2)
    large: list[dict[str, Any]] = []
    large_size, large_digests = 0, {}
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        repo = Path(tmp) / "repo"
        digests = build(args.base, repo)
        size = tree_bytes(repo / "models" / "base")
        results = [measure(repo, link, args.repeat, Path(tmp), digests) for link in args.link_types]
        shutil.rmtree(repo)  # the disk the large base needs
        if args.scale:
            large_repo = Path(tmp) / "large"
            large_digests = build_large(args.base, large_repo, args.scale)
            large_size = tree_bytes(large_repo / "models" / "base")
            large = [measure_large(large_repo, link, args.repeat, Path(tmp), large_digests) for link in args.link_types]
    info = report_machine()
    print(f"base: {args.base} ({size:,} bytes); median of {args.repeat * 2} switches, DVC start-up included")
    rows = []
    for r in results:
        rows.append([r["link_type"], "adapter v1 <-> v2", r["adapter"]["git"], r["adapter"]["dvc"]])
        rows[-1] += [r["adapter"]["total"], r["cp_adapter"], f"{r['adapter_ratio']:.2f}x"]
        rows.append([r["link_type"], "base A <-> base B", r["base"]["git"], r["base"]["dvc"]])
        rows[-1] += [r["base"]["total"], r["cp_base"], f"{r['base_ratio']:.2f}x"]
    for r in large:
        rows.append([r["link_type"], f"base A <-> B, {large_size / 1e9:.1f} GB", r["base"]["git"], r["base"]["dvc"]])
        rows[-1] += [r["base"]["total"], r["cp_base"], f"{r['base_ratio']:.2f}x"]
    print(table(["cache.type", "switch", "git s", "dvc s", "total s", "cp -r s", "of cp -r"], rows))
    growth = []
    for small, big in zip(results, large, strict=False):
        found = {
            "link_type": small["link_type"],
            "bytes_ratio": large_size / size,
            "switch_ratio": big["base"]["total"] / small["base"]["total"],
            "cp_ratio": big["cp_base"] / small["cp_base"],
        }
        growth.append(found)
        links = {"hardlink", "symlink"} & set(found["link_type"].split(","))  # reflink: copies where unsupported
        target = " (target <= 1.2x with links)" if links else ""
        print(
            f"{found['link_type']}: a base {found['bytes_ratio']:.1f}x the bytes makes the base switch "
            f"{found['switch_ratio']:.2f}x as long{target}, cp -r {found['cp_ratio']:.1f}x; bytes checked after "
            f"switching to {', '.join(big['verified'])}"
        )
    for r in results:
        print(
            f"{r['link_type']}: adapter {r['adapter']['total']:.2f} s (target < 1 s), base switch "
            f"{r['base_ratio']:.2f}x of cp -r (target <= 0.1x); a dvc checkout with nothing to do takes "
            f"{r['dvc_noop']:.2f} s, so the base switch's own work is {r['base_work_ratio']:.2f}x of cp -r; "
            f"workspace files read-only: {r['read_only']}; bytes checked after switching to "
            f"{', '.join(r['verified'])}"
        )
    found = {"machine": info, "base_bytes": size, "digests": digests, "results": results}
    found |= {"large_base_bytes": large_size, "large_digests": large_digests, "large": large, "growth": growth}
    write_json(args.json, found)


if __name__ == "__main__":
    run_main(main)
