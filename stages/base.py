"""Stage `base`: materialize the base model named in params.yaml `base` as a safetensors directory.

Runs once per base model; every version reuses the output (DVC caches it once).
Expected output for the default (about 40 s on 2 CPU cores):
    base: HuggingFaceTB/SmolLM2-135M-Instruct (134,515,008 parameters) -> models/base
"""

import argparse
from pathlib import Path

from loravc.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write (the stage's DVC output)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    args = parser.parse_args()

    from loravc.base_model import materialize
    from loravc.params import load_params

    identity = materialize(load_params(args.params).base, args.out)
    print(f"base: {identity['id']} ({identity['parameters']:,} parameters) -> {args.out}")


if __name__ == "__main__":
    run_main(main)
