"""loravc: list, inspect, load, export, merge and register the model versions of this repository.

A REF names one version: a git revision (97a8cef, HEAD~1), a branch or tag, a DVC experiment
name, a version id (v_20261126_041912) or a registry reference (lora-adapter@v1.2.0,
lora-adapter#prod). Versions are read from git and DVC's cache (fetching from the DVC remote
when needed); nothing is checked out and the workspace is left alone.

examples:
  loravc list
  loravc compare lora-adapter#prod main
  loravc generate main "The assert statement"
  loravc register main --version v1.2.0 && loravc promote lora-adapter --version v1.2.0 --stage prod
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loravc.errors import run_main
from loravc.versions import EVAL_TOLERANCE


def _json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _table(rows: list[list[str]], header: list[str] | None = None) -> str:
    rows = [header, *rows] if header else rows
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _num(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _created(value: str | None) -> str:
    return "-" if not value else value.replace("T", " ")[:16]


def _names(row: dict[str, Any]) -> str:
    return " ".join(row["branches"] + row["tags"])


def _device(text: str) -> str:
    from loravc.errors import UserError
    from loravc.params import check_device

    try:
        check_device(text, "--device")
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _quiet_loading() -> None:
    """No weight-loading progress bars or library deprecation notices around a one-line answer."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


# --- verbs -----------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> None:
    from loravc.versions import Versions

    versions = Versions(args.repo).all
    if args.json:
        _json([v.row() for v in versions])
        return
    if not versions:
        print("no versions yet: run `dvc repro` and commit dvc.lock (or `dvc exp run`)")
        return
    rows = []
    for v in versions:
        row = v.row()
        rev = f"{v.short} {_names(row)}".strip()
        facts = [
            row["version_id"] or "-",
            _created(row["created"]),
            str(row["base_model"] or "-"),
            str(row["lora_r"] or "-"),
            _num(row["validation_loss"], 4),
            _num(row["test_perplexity"], 2),
        ]
        if v.error:
            facts = ["(unreadable: see below)", "", "", "", "", ""]
        rows.append([rev, ", ".join(row["experiments"]) or "-", ", ".join(row["registry"]) or "-", *facts])
    header = ["revision", "experiment", "registry", "version", "created (UTC)", "base model", "r"]
    print(_table(rows, [*header, "val loss", "test ppl"]))
    for v in versions:
        if v.error:
            print(f"warning: {v.error}", file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> None:
    from loravc.versions import Versions, describe

    versions = Versions(args.repo)
    info = describe(versions, versions.resolve(args.ref))
    if args.json:
        _json(info)
        return
    lora = info["lora_weights"]
    refs = [*info["branches"], *info["tags"], *info["experiments"], *info["registry"]]
    base = f"  ({info['base']['path']}, dvc md5 {info['base']['md5']})" if info["base"] else ""  # none in dvc.lock
    lines = [
        ["version", str(info["version_id"])],
        ["revision", info["rev"] + (f"  ({', '.join(refs)})" if refs else "")],
        ["created", _created(info["created"]) + " UTC"],
        ["adapter", f"{info['adapter']['path']} (dvc md5 {info['adapter']['md5']})"],
        ["base model", f"{info['base_model']}{base}"],
        ["lora weights", _lora_line(lora)],
        ["val loss", _num(info["validation_loss"], 4)],
        ["test ppl", _num(info["test_perplexity"], 4)],
    ]
    print(_table(lines))
    print("\nmetrics")
    print(_indent(_table([[k, str(v)] for k, v in info["metrics"].items()]) if info["metrics"] else "(none)"))
    print("\nparams (dvc.lock)")
    print(_indent(_table([[k, json.dumps(v)] for k, v in info["params"].items()])))
    print("\nmetadata.json")
    print(_indent(json.dumps(info["metadata"], indent=2)))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _lora_line(lora: dict[str, Any]) -> str:
    ranks = "/".join(map(str, lora["ranks"]))
    return (
        f"r={ranks} alpha={lora['alpha']} on {', '.join(lora['target_modules'])} "
        f"({lora['modules']} modules, {lora['trainable_parameters']:,} trainable parameters)"
    )


def cmd_compare(args: argparse.Namespace) -> None:
    from loravc.versions import Versions, compare

    versions = Versions(args.repo)
    result = compare(versions, versions.resolve(args.ref_a), versions.resolve(args.ref_b))
    if args.json:
        _json(result)
        return
    a, b = result["a"], result["b"]
    la, lb = a["lora_weights"], b["lora_weights"]

    def label(info: dict[str, Any]) -> str:
        refs = [*info["branches"], *info["tags"], *info["experiments"], *info["registry"]]
        return f"{info['rev'][:7]}" + (f" ({', '.join(refs)})" if refs else "")

    def per_target(lora: dict[str, Any]) -> str:
        return ", ".join(f"{t}={'/'.join(map(str, r))}" for t, r in lora["rank_per_target"].items())

    rows = [
        ["", f"A: {args.ref_a}", f"B: {args.ref_b}", ""],
        ["revision", label(a), label(b)],
        ["version", str(a["version_id"]), str(b["version_id"])],
        ["created (UTC)", _created(a["created"]), _created(b["created"])],
        ["base model", str(a["base_model"]), str(b["base_model"])],
        ["LoRA, from the weights", "", ""],
        ["  rank per module", per_target(la), per_target(lb)],
        ["  modules", str(la["modules"]), str(lb["modules"])],
        ["  target modules", ", ".join(la["target_modules"]), ", ".join(lb["target_modules"])],
        ["  alpha", str(la["alpha"]), str(lb["alpha"])],
        ["  scaling", "/".join(map(str, la["scaling"])), "/".join(map(str, lb["scaling"]))],
        ["  trainable params", f"{la['trainable_parameters']:,}", f"{lb['trainable_parameters']:,}"],
        ["  weight dtype", "/".join(la["dtypes"]), "/".join(lb["dtypes"])],
        ["  adapter file", f"{la['adapter_bytes']:,} B", f"{lb['adapter_bytes']:,} B"],
        ["params that differ", "", "", ""],
        *[[f"  {k}", json.dumps(x), json.dumps(y)] for k, (x, y) in result["params"].items()],
        *([] if result["params"] else [["  (none)", "", ""]]),
        ["metrics that differ", "", "", "B - A"],
        *[[f"  {k}", _metric(x), _metric(y), _change(x, y)] for k, (x, y) in result["metrics"].items()],
    ]
    print(_table([row + [""] * (4 - len(row)) for row in rows]))


def _change(a: Any, b: Any) -> str:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return f"{b - a:+.6g}" if numbers else ""


def _metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def cmd_export(args: argparse.Namespace) -> None:
    from loravc.versions import Versions, export

    versions = Versions(args.repo)
    version = versions.resolve(args.ref)
    target = export(versions, version, args.dir)
    print(f"exported {version.version_id} ({version.short}) -> {target}")


def cmd_merge(args: argparse.Namespace) -> None:
    from loravc.versions import Versions, merge

    _quiet_loading()
    versions = Versions(args.repo)
    version = versions.resolve(args.ref)
    record = merge(versions, version, args.dir, device=args.device)
    check = record["logits_check"]
    print(
        f"merged {version.version_id} ({version.short}) into its base -> {args.dir}\n"
        f"logits match base + adapter: max |difference| {check['max_abs_difference']:.2e} "
        f"<= {check['tolerance']:.0e}"
    )


def cmd_generate(args: argparse.Namespace) -> None:
    from loravc.versions import Versions, generate

    _quiet_loading()
    versions = Versions(args.repo)
    version = versions.resolve(args.ref)
    print(args.prompt + generate(versions, version, args.prompt, args.max_new_tokens, device=args.device))


def cmd_verify(args: argparse.Namespace) -> None:
    from loravc.versions import Versions, verify

    _quiet_loading()
    versions = Versions(args.repo)
    version = versions.resolve(args.ref)
    report = verify(versions, version, evaluate=args.eval, device=args.device, tolerance=args.tolerance)
    if args.json:
        _json(report)
        return
    print(f"verify {version.version_id} ({version.short})")
    for path, check in report["files"].items():
        print(f"  ok  {path}: {check['files']} files hash to {check['found']}, as dvc.lock records")
    loads = report["loads"]
    print(f"  ok  loads on {loads['device']}: finite logits for a {loads['probe_tokens']}-token probe")
    if "eval" in report:
        e = report["eval"]
        print(
            f"  ok  test perplexity {e['measured']} vs recorded {e['recorded']} "
            f"(difference {e['relative_difference']:.2e} <= {e['tolerance']:.0e} relative)"
        )


def cmd_register(args: argparse.Namespace) -> None:
    from loravc.registry import register
    from loravc.versions import Versions

    tag, version = register(Versions(args.repo), args.ref, args.version, args.name, args.message, args.push)
    print(f"registered {tag} -> {version.short} ({version.version_id})")
    if not args.push:
        print(f"share it: git push origin {tag}")


def cmd_promote(args: argparse.Namespace) -> None:
    from loravc.registry import promote
    from loravc.versions import Versions

    tag = promote(Versions(args.repo), args.name, args.version, args.stage, args.message, args.push)
    if tag is None:
        print(f"{args.name} {args.version} already is the {args.stage} version: nothing to do")
        return
    print(f"promoted {args.name} {args.version} to {args.stage} (tag {tag})")
    if not args.push:
        print(f"share it: git push origin '{tag}'")


# --- arguments -------------------------------------------------------------------------------------
REF_HELP = "version: revision, branch, tag, experiment, v_<id>, name@vX.Y.Z or name#stage"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="loravc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("-C", "--repo", type=Path, default=Path("."), help="repository directory (default: .)")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    def device(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", default="cpu", type=_device, help="cpu, cuda, cuda:N, mps or auto (default: cpu)")

    sub = verb("list", "every version on branches, tags and experiment refs, newest first", cmd_list)
    sub.add_argument("--json", action="store_true", help="machine-readable output")

    sub = verb("show", "metadata, metrics, params and LoRA facts of one version", cmd_show)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument("--json", action="store_true", help="machine-readable output")

    sub = verb("compare", "params, metrics and LoRA facts (read from the weights) of two versions", cmd_compare)
    sub.add_argument("ref_a", metavar="REF_A", help=REF_HELP)
    sub.add_argument("ref_b", metavar="REF_B", help=REF_HELP)
    sub.add_argument("--json", action="store_true", help="machine-readable output")

    sub = verb("export", "copy a version (adapter + metadata.json) to its own directory", cmd_export)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument("dir", metavar="DIR", type=Path, nargs="?", help="target (default: model_versions/v_<id>/)")

    sub = verb("merge", "merge the adapter into its base: a standalone model directory", cmd_merge)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument("dir", metavar="DIR", type=Path, help="new directory for the merged model")
    device(sub)

    sub = verb("generate", "greedy continuation of a prompt by one version", cmd_generate)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument("prompt", metavar="PROMPT", help="text to continue")
    sub.add_argument("--max-new-tokens", type=_positive, default=40, help="tokens to generate (default: 40)")
    device(sub)

    sub = verb("verify", "files match dvc.lock, the model loads; --eval re-checks test perplexity", cmd_verify)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument("--eval", action="store_true", help="re-compute test perplexity and compare to the recorded one")
    sub.add_argument(
        "--tolerance", type=float, default=EVAL_TOLERANCE, help="relative perplexity difference allowed (default: 1e-3)"
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    device(sub)

    sub = verb("register", "give a version a semantic version in the registry (git tag name@vX.Y.Z)", cmd_register)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument("--version", required=True, help="semantic version, like v1.2.0")
    sub.add_argument("--name", help="artifact name from dvc.yaml `artifacts:` (default: the one at the adapter path)")
    sub.add_argument("--message", help="tag message")
    sub.add_argument("--push", action="store_true", help="push the tag to origin")

    sub = verb("promote", "make a registered version the one in a stage (prod, staging, ...)", cmd_promote)
    sub.add_argument("name", metavar="NAME", help="artifact name, like lora-adapter")
    sub.add_argument("--version", required=True, help="registered semantic version, like v1.2.0")
    sub.add_argument("--stage", required=True, help="stage name, like prod")
    sub.add_argument("--message", help="tag message")
    sub.add_argument("--push", action="store_true", help="push the tag to origin")
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


def run(argv: Sequence[str] | None = None) -> None:
    """Console entry point: user errors print one line and exit 2."""
    try:
        run_main(lambda: main(argv))
    except BrokenPipeError:  # `loravc list | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    run()
