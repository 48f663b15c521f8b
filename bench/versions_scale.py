"""Versions at scale: `loravc list`, `show` and `compare` over a history of many versions (default 1,000).

A scratch git + DVC repository gets one commit per version. Each pins a new adapter directory whose
weights and config are shared and whose metadata.json is its own (a metadata-only change of the
adapter: the cheapest real version), written straight into DVC's cache, with its evaluate metrics in
git, committed through `git fast-import`.
Then each command is timed as a user types it:

- `list`, cold: with no index of parsed dvc.yaml/dvc.lock files (.dvc/tmp/loravc/pins-index.json)
- `list`, warm: again, with the index the cold run wrote
- `show` and `compare` of git refs: the newest version and one half-way back in the history

    python -m bench.versions_scale
    python -m bench.versions_scale --versions 1000 --repeat 3

Targets (docs/performance.md): list at most 2 s warm and 10 s cold; show and compare at most 1 s.
"""

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import at_least_one, report_machine, table, timed_sh, write_json
from bench.project import ROOT, git, init_repo, run
from loravc.core.errors import run_main
from loravc.versions.pins import load_yaml12, parse_pins

TARGETS = {"list, cold": 10.0, "list, warm": 2.0, "show": 1.0, "compare": 1.0}
FIXTURE = ROOT / "tests" / "fixtures" / "metadata" / "71d2886e3dad32e63d883e1598928430.json"  # a real version's
INDEX = Path(".dvc") / "tmp" / "loravc" / "pins-index.json"


def cache_put(repo: Path, data: bytes, suffix: str = "") -> str:
    """Store bytes in the repository's DVC cache (DVC 3 layout) and return their md5 (+ suffix)."""
    md5 = hashlib.md5(data).hexdigest()
    path = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / (md5[2:] + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return md5 + suffix


def history(repo: Path, versions: int) -> None:
    """`versions` commits on main, each pinning a new metadata-only adapter directory."""
    lock_template = (ROOT / "dvc.lock").read_text(encoding="utf-8")
    pins = parse_pins(load_yaml12((ROOT / "dvc.yaml").read_bytes()), load_yaml12(lock_template.encode()))
    adapter = pins.adapter.md5  # the pinned version's directory hash, replaced in each commit's dvc.lock
    meta = json.loads(FIXTURE.read_text(encoding="utf-8"))
    shared = [{"md5": cache_put(repo, data), "relpath": name} for name, data in adapter_files().items()]
    metrics = json.loads((ROOT / "dvclive" / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    stream = []
    for i in range(versions):
        day, minute = divmod(i, 24 * 60)
        meta |= {"version_id": f"v_202611{1 + day % 28:02d}_{minute // 60:02d}{minute % 60:02d}00_{i:06x}"}
        meta["created"] = f"2026-11-{1 + day % 28:02d}T{minute // 60:02d}:{minute % 60:02d}:00+00:00"
        metadata = json.dumps(meta, indent=2).encode()
        files = [*shared, {"md5": cache_put(repo, metadata), "relpath": "metadata.json"}]
        manifest = json.dumps(sorted(files, key=lambda f: f["relpath"])).encode()
        lock = lock_template.replace(adapter, cache_put(repo, manifest, ".dir"))
        values = metrics | {"tuned_perplexity": round(3.0 + (i % 97) / 100, 4)}
        files = {"dvc.lock": lock.encode(), "dvclive/evaluate/metrics.json": json.dumps(values, indent=4).encode()}
        stream.append(_commit(i, f"version {i}", files))
    run(["git", "fast-import", "--quiet"], repo, input="".join(stream))
    git(repo, "checkout", "-qf", "main")


def adapter_files() -> dict[str, bytes]:
    """A rank-4 adapter on q/k/v/o of SmolLM2's 30 layers (random weights) and its config, as PEFT names them."""
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(30):
        for proj, out in (("q_proj", 576), ("k_proj", 192), ("v_proj", 192), ("o_proj", 576)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((4, 576), dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((out, 4), dtype=np.float32)
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 16, "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"]}
    return {"adapter_model.safetensors": save(tensors), "adapter_config.json": json.dumps(config).encode()}


def _commit(i: int, message: str, files: dict[str, bytes]) -> str:
    parts = [
        "commit refs/heads/main\n",
        f"committer loravc <loravc@example.com> {1_790_000_000 + 60 * i} +0000\n",
        f"data {len(message)}\n{message}\n",
        "from refs/heads/main^0\n" if i == 0 else "",
    ]
    for name, data in files.items():
        text = data.decode()
        parts.append(f"M 100644 inline {name}\ndata {len(data)}\n{text}\n")
    return "".join(parts)


def build(root: Path, versions: int) -> Path:
    repo = init_repo(root / "repo")
    for name in ("dvc.yaml", "params.yaml"):
        (repo / name).write_bytes((ROOT / name).read_bytes())
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "project")
    history(repo, versions)
    return repo


def measure(repo: Path, repeat: int, versions: int) -> dict[str, Any]:
    loravc = [sys.executable, "-m", "loravc", "-C", str(repo)]
    half = f"HEAD~{versions // 2}"
    cold = []
    for _ in range(repeat):
        (repo / INDEX).unlink(missing_ok=True)
        cold += timed_sh([*loravc, "list"], repo)
    listed = run([*loravc, "list", "--json"], repo).stdout
    return {
        "listed": len(json.loads(listed)),
        "list, cold": statistics.median(cold),
        "list, warm": statistics.median(timed_sh([*loravc, "list"], repo, repeat)),
        "show": statistics.median(timed_sh([*loravc, "show", half], repo, repeat)),
        "compare": statistics.median(timed_sh([*loravc, "compare", "HEAD", half], repo, repeat)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=1000, help="versions in the history (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per command, median (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="20 versions, one run each (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.versions, args.repeat = 20, 1
    at_least_one(args.versions, "--versions")
    at_least_one(args.repeat, "--repeat")
    info = report_machine()
    with tempfile.TemporaryDirectory() as scratch:
        repo = build(Path(scratch), args.versions)
        result = measure(repo, args.repeat, args.versions)
    rows = [
        [name, f"{result[name]:.2f}", f"{target:g}", "met" if result[name] <= target else "NOT met"]
        for name, target in TARGETS.items()
    ]
    print(f"{result['listed']} versions listed")
    print(table(["command", "seconds (median)", "target", ""], rows))
    write_json(args.json, {"machine": info, "versions": args.versions, **result})


if __name__ == "__main__":
    run_main(main)
