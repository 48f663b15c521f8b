"""Stage `base`: materialize the base model named in params.yaml `base` as a safetensors directory.

Runs once per base model; every version reuses the output (DVC caches it once).
Expected output for the default (its time: docs/performance.md):
    base: HuggingFaceTB/SmolLM2-135M-Instruct (134,515,008 parameters) -> models/base
"""

from loravc.core.errors import run_main
from loravc.core.stage import arguments


def main() -> None:
    args = arguments(__doc__, {"out": "directory to write (the stage's DVC output)"})

    from loravc.base.model import materialize
    from loravc.base.params import BaseParams
    from loravc.core.params import load_sections

    identity = materialize(load_sections(args.params, base=BaseParams).base, args.out)
    print(f"base: {identity['id']} ({identity['parameters']:,} parameters) -> {args.out}")


if __name__ == "__main__":
    run_main(main)
