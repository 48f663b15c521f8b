"""Stage `report`: dvc.yaml's plots as pictures, PNG and SVG, to read without DVC, a browser or a network.

Each of dvc.yaml's top-level `plots` (loss, learning rate, test perplexity) is filled with the
workspace's dvclive files exactly as `dvc plots show` fills it, and drawn by vl-convert (loravc.report.plots)
to <out>/<plot>.png and <plot>.svg. The pictures are committed with dvc.lock, so every version
carries its own. A plot whose files are all missing is left out. Its output:
    report: loss, learning_rate, perplexity -> reports/plots (png, svg)
"""

from loravc.core.errors import run_main
from loravc.core.stage import arguments


def main() -> None:
    args = arguments(__doc__, {"out": "directory for the pictures (the stage's output)"})

    from pathlib import Path

    from loravc.core.errors import UserError
    from loravc.report.plots import SUFFIXES, dvc_specs, save

    specs = dvc_specs(Path.cwd())
    if not specs:
        raise UserError("dvc.yaml's plots have no data: run stages `train` and `evaluate` first")
    for name, spec in specs.items():
        for suffix in SUFFIXES:
            save(spec, args.out / f"{name}{suffix}")
    print(f"report: {', '.join(specs)} -> {args.out} ({', '.join(s.lstrip('.') for s in SUFFIXES)})")


if __name__ == "__main__":
    run_main(main)
