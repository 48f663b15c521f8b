"""Run every benchmark: `python -m bench --smoke` in a tiny mode (what CI runs), else at full size.

    python -m bench --smoke                 # tiny: a shrunk random copy of the base, seconds per benchmark
    python -m bench --smoke --base DIR      # tiny, on a given (small) base model directory
    python -m bench                         # full size, one after another: about half an hour on 2 cores

Full size skips default_run (it runs the whole pipeline: `python -m bench.default_run`).
"""

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

from bench.common import BENCHMARKS, require_base, shrunk_base
from bench.project import ROOT
from loravc.core.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every benchmark in its tiny mode")
    parser.add_argument("--base", type=Path, help="base model directory (default: a shrunk copy of models/base)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        base = args.base
        if args.smoke and base is None:
            real = ROOT / "models" / "base"
            require_base(real)
            base = shrunk_base(real, Path(tmp) / "base")
        for name in BENCHMARKS if args.smoke else BENCHMARKS[:-1]:
            argv = [f"bench.{name}"] + (["--smoke"] if args.smoke else [])
            argv += ["--device", "cpu"] if name == "throughput" and args.smoke else []
            argv += ["--base", str(base)] if base is not None and name not in ("overheads", "versions_scale") else []
            print(f"== python -m {' '.join(argv)}", flush=True)
            sys.argv = argv
            importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    run_main(main)
