"""Overheads: a no-op `dvc repro` (it runs stage `source` only), `dvc exp show` over 20 experiments, every `--help`.

`dvc repro` and `dvc exp show` run in a scratch copy of the project whose pipeline is up to date:
the stage outputs are copied from this checkout when it has them (the real 538 MB base, adapter,
metrics), otherwise small stand-ins are written, and `dvc commit -f` records them in dvc.lock.
The experiments are made with `dvc exp save`, each with other params. `--help` is timed for each
stage module, each benchmark and each console script of pyproject.toml, from this checkout.
Every figure is the median of `--repeat` runs after one warm-up, as a user types the command.

    python -m bench.overheads
    python -m bench.overheads --experiments 20 --repeat 5

Output: a table of each command's seconds against its target; measured figures, with their date
and machine, are in docs/performance.md.
"""

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from bench.common import BENCHMARKS, at_least_one, report_machine, table, timed_sh, write_json
from bench.project import ROOT, git, project_repo, run, update_params
from loravc.core.errors import UserError, run_main
from loravc.core.tools import dvc_cmd

TARGETS = {"repro": 1.5, "exp_show": 3.0, "help": 1.0}


def timed_runs(cmd: list[str], cwd: Path, repeat: int, warm: bool) -> tuple[float, list[float]]:
    """(median, every run's seconds): a first run, when `warm`, warms the file cache and DVC's state database
    and is left out of the median."""
    times = timed_sh(cmd, cwd, repeat + warm)
    return statistics.median(times[int(warm) :]), times


def stage_outputs(repo: Path) -> list[str]:
    """Every out, metric and plot path of dvc.yaml."""
    from loravc.core.schema import read_yaml

    paths = []
    for stage in read_yaml(repo / "dvc.yaml")["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def place_outputs(repo: Path, source: Path | None) -> list[str]:
    """Copy each output from `source` where it exists there, else write a small stand-in; returns the copied."""
    copied = []
    for rel in stage_outputs(repo):
        src, dest = (source / rel if source else None), repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src is not None and src.exists():
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                shutil.copyfile(src, dest)
            copied.append(rel)
        elif rel.endswith(".json"):
            dest.write_text('{"loss": 1.0}\n')
        elif "." in Path(rel).name:
            dest.write_text("stand-in\n")
        else:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / "stand-in.txt").write_text(f"{rel}\n")
    return copied


def help_commands() -> list[tuple[str, list[str]]]:
    """(name, argv) for each stage, each benchmark and each console script of pyproject.toml."""
    commands = [(f"stages.{p.stem}", [sys.executable, "-m", f"stages.{p.stem}", "--help"]) for p in _stages()]
    commands += [(f"bench.{name}", [sys.executable, "-m", f"bench.{name}", "--help"]) for name in BENCHMARKS]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {}).get("scripts", {})
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        code = f"import sys; sys.argv = [{name!r}, '--help']; from {module} import {function}; {function}()"
        commands.append((name, [sys.executable, "-c", code]))
    return commands


def _stages() -> list[Path]:
    return sorted(p for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")


def measure(workdir: Path, source: Path | None, experiments: int, repeat: int, warm: bool = True) -> dict[str, Any]:
    repo = project_repo(workdir / "repo")
    copied = place_outputs(repo, source)
    run(dvc_cmd("repro", "-s", "source"), repo)  # what it writes on every repro: `base` and after up to date
    run(dvc_cmd("commit", "-f", "-q"), repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "pipeline outputs")
    status = run(dvc_cmd("status"), repo).stdout
    if status.split() != ["source:", "always", "changed"]:  # stage `source` runs on every repro (dvc.yaml)
        raise RuntimeError(f"the scratch pipeline is not up to date after dvc commit:\n{status}")
    runs: dict[str, Any] = {}

    def median_time(name: str, cmd: list[str], cwd: Path = repo) -> float:
        median, runs[name] = timed_runs(cmd, cwd, repeat, warm)
        return median

    startup = median_time("dvc_startup", dvc_cmd("--version"))  # DVC's own start-up, for scale
    repro = median_time("repro", dvc_cmd("repro"))
    for number in range(experiments):
        update_params(repo / "params.yaml", {"train": {"lora": {"r": number + 1}, "seed": number}})
        run(dvc_cmd("exp", "save", "-q", "-n", f"bench-{number + 1}"), repo)
    listed = run(dvc_cmd("exp", "show", "--no-pager", "--csv"), repo).stdout
    names = sorted(set(re.findall(r"\bbench-\d+\b", listed)), key=lambda name: int(name.split("-")[1]))
    if names != [f"bench-{number + 1}" for number in range(experiments)]:
        raise RuntimeError(f"dvc exp show lists {', '.join(names) or 'none'}; expected bench-1 to bench-{experiments}")
    exp_show = median_time("exp_show", dvc_cmd("exp", "show", "--no-pager"))
    helps = {name: median_time(f"{name} --help", argv, ROOT) for name, argv in help_commands()}
    return {
        "copied_outputs": copied,
        "dvc_startup": startup,
        "repro": repro,
        "exp_show": exp_show,
        "experiments": len(names),
        "listed_experiments": names,
        "help": helps,
        "warm_up_runs": int(warm),
        "runs": runs,  # every run's seconds, warm-up first, by command
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs-from", type=Path, default=ROOT, help="checkout whose stage outputs to copy")
    parser.add_argument("--experiments", type=int, default=20, help="experiments for dvc exp show (default: 20)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each command (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="stand-in outputs, 2 experiments, 1 cold run each (CI)")
    args = parser.parse_args()
    at_least_one(args.repeat, "--repeat")
    at_least_one(args.experiments, "--experiments")
    if not args.smoke and not args.outputs_from.is_dir():
        raise UserError(f"--outputs-from {args.outputs_from}: no such directory")
    source = None if args.smoke else args.outputs_from
    if args.smoke:
        args.experiments, args.repeat = 2, 1
    with tempfile.TemporaryDirectory(prefix="bench-overheads-") as tmp:
        result = measure(Path(tmp), source, args.experiments, args.repeat, warm=not args.smoke)
    result["machine"] = report_machine()
    copied = ", ".join(result["copied_outputs"]) or "none (stand-ins)"
    print(f"outputs copied from {source}: {copied}; median of {args.repeat} runs after a warm-up")
    print(f"dvc --version (DVC's start-up alone, for scale): {result['dvc_startup']:.2f} s")
    rows = [["dvc repro (nothing to do)", result["repro"], TARGETS["repro"]]]
    rows.append([f"dvc exp show ({result['experiments']} experiments)", result["exp_show"], TARGETS["exp_show"]])
    rows += [[f"{name} --help", seconds, TARGETS["help"]] for name, seconds in result["help"].items()]
    print(table(["command", "seconds", "target s", ""], [[*r, "met" if r[1] <= r[2] else "NOT met"] for r in rows]))
    met = all(r[1] <= r[2] for r in rows)
    print(f"all overhead targets met: {met}")
    write_json(args.json, result)


if __name__ == "__main__":
    run_main(main)
