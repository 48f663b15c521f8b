"""What every pipeline stage's command line shares: the paths dvc.yaml passes, and --params."""

import argparse
from pathlib import Path


def arguments(doc: str, paths: dict[str, str], optional: dict[str, str] | None = None) -> argparse.Namespace:
    """Parse a stage's arguments: each of `paths` a required `--name PATH`, each of `optional` a `--name PATH`
    that may be left out (None), and `--params` (default params.yaml). `doc` is the --help text."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help in paths.items():
        parser.add_argument(f"--{name}", type=Path, required=True, help=help)
    for name, help in (optional or {}).items():
        parser.add_argument(f"--{name}", type=Path, default=None, help=help)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    return parser.parse_args()
