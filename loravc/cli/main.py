"""loravc: list, inspect, load, export, merge and register the model versions of this repository.

A REF names one version: a git revision (97a8cef, HEAD~1), a branch or tag, a DVC experiment
name, a version id (v_20261126_041912_1a2b3c) or a registry reference (lora-adapter@v1.2.0,
lora-adapter#prod). Versions are read from git and DVC's cache (fetching from the DVC remote
when needed); nothing is checked out and the workspace is left alone.

examples:
  loravc list
  loravc compare lora-adapter#prod main
  loravc generate main "The assert statement"
  loravc register main --version v1.2.0 && loravc promote lora-adapter --version v1.2.0 --stage prod
  loravc tune --trials 8
  loravc gc
"""

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from loravc.cli.commands import (
    cmd_card,
    cmd_compare,
    cmd_export,
    cmd_gc,
    cmd_generate,
    cmd_list,
    cmd_merge,
    cmd_plots,
    cmd_promote,
    cmd_register,
    cmd_show,
    cmd_tune,
    cmd_verify,
)
from loravc.core.errors import UserError, run_main
from loravc.export import formats
from loravc.export.gguf.writer import TYPES as GGUF_TYPES
from loravc.versions.verify import EVAL_TOLERANCE


def _device_name(text: str) -> str:
    from loravc.core.params import check_device

    try:
        check_device(text, "--device")
    except UserError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


# --- arguments -------------------------------------------------------------------------------------
REF_HELP = "version: revision, branch, tag, experiment, v_<id>, name@vX.Y.Z or name#stage"


Verb = Callable[[str, str, Callable[[argparse.Namespace], None]], argparse.ArgumentParser]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="loravc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("-C", "--repo", type=Path, default=Path("."), help="repository directory (default: .)")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help: str, func: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    for add in (_inspect_verbs, _export_verbs, _model_verbs, _study_verbs, _registry_verbs, _cache_verbs):
        add(verb)
    return top


def _device(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--device", default="cpu", type=_device_name, help="cpu, cuda, cuda:N, mps or auto (default: cpu)")


def _json_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="machine-readable output")


def _inspect_verbs(verb: Verb) -> None:
    """list, show, compare."""
    _json_flag(verb("list", "every version on branches, tags and experiment refs, newest first", cmd_list))

    sub = verb("show", "metadata, metrics, params and LoRA facts of one version", cmd_show)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    _json_flag(sub)

    sub = verb("compare", "params, metrics and LoRA facts (read from the weights) of two versions", cmd_compare)
    sub.add_argument("ref_a", metavar="REF_A", help=REF_HELP)
    sub.add_argument("ref_b", metavar="REF_B", help=REF_HELP)
    _json_flag(sub)


def _export_verbs(verb: Verb) -> None:
    """export (its --format choices and help from loravc.export.formats), card, merge."""
    what = "write a version to a new directory in a --format (default: PEFT files + card, base unless on the hub)"
    sub = verb("export", what, cmd_export)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument(
        "dir", metavar="DIR", type=Path, nargs="?", help="new directory (default: model_versions/v_<id>[-FORMAT-TYPE]/)"
    )
    names = formats.names()
    sub.add_argument("--format", choices=names, default=names[0], help=formats.help_text())
    sub.add_argument("--type", choices=GGUF_TYPES, default="f16", help="GGUF tensor type (default: f16)")
    sub.add_argument("--base-only", action="store_true", help="write the version's base alone as GGUF (for gguf-lora)")
    sub.add_argument("--tokenizer-pre", metavar="NAME", help="llama.cpp pre-tokenizer name (bases other than smollm2)")

    sub = verb("card", "the model card (README.md) of a version: Hugging Face metadata and a summary", cmd_card)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)

    sub = verb("merge", "merge the adapter into its base: a standalone model directory", cmd_merge)
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument("dir", metavar="DIR", type=Path, help="new directory for the merged model")
    _device(sub)


def _model_verbs(verb: Verb) -> None:
    """generate, verify: they load the model (--device)."""
    sub = verb(
        "generate", "greedy reply (chat-trained versions) or continuation of a prompt by one version", cmd_generate
    )
    sub.add_argument("ref", metavar="REF", help=REF_HELP)
    sub.add_argument(
        "prompt", metavar="PROMPT", help="a user message for a chat-trained version, else text to continue"
    )
    sub.add_argument("--raw", action="store_true", help="continue the text as is, without the chat template")
    sub.add_argument("--max-new-tokens", type=_positive, default=40, help="tokens to generate (default: 40)")
    _device(sub)

    sub = verb(
        "verify", "files match dvc.lock, the model loads; --eval re-checks test perplexity; --all: every version",
        cmd_verify,
    )  # fmt: skip
    sub.add_argument("ref", metavar="REF", nargs="?", help=REF_HELP)
    sub.add_argument(
        "--all",
        action="store_true",
        help="check every version's adapter files in the local DVC cache against dvc.lock (hashes only, no loading)",
    )
    sub.add_argument("--eval", action="store_true", help="re-compute test perplexity and compare to the recorded one")
    sub.add_argument(
        "--tolerance", type=float, default=EVAL_TOLERANCE, help="relative perplexity difference allowed (default: 1e-3)"
    )
    _json_flag(sub)
    _device(sub)


def _study_verbs(verb: Verb) -> None:
    """plots, tune."""
    sub = verb("plots", "versions' loss curves in one picture; --template: offline `dvc plots` pages", cmd_plots)
    sub.add_argument("refs", metavar="REF", nargs="*", help=REF_HELP)
    sub.add_argument(
        "-o", "--output", type=Path, help="picture to write, .png or .svg (default: dvc_plots/versions-loss.png)"
    )
    sub.add_argument(
        "--template", action="store_true", help="write the offline page template and name it in .dvc/config.local"
    )

    sub = verb(
        "tune", "hyperparameter search (Optuna, params.yaml `tune`): every trial a DVC experiment", cmd_tune
    )  # fmt: skip
    sub.add_argument("--trials", type=_positive, help="finished trials the study is to hold (default: tune.trials)")
    sub.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    sub.add_argument("--push", metavar="REMOTE", help="dvc exp push each finished trial to this git remote")
    sub.add_argument(
        "--copy-paths", action="append", default=[], metavar="PATH", help="untracked path each trial needs (repeatable)"
    )
    sub.add_argument(
        "--clean",
        action="store_true",
        help="start no trial: settle those of killed processes and remove what their dvc exp run left in .dvc/tmp/exps",
    )


def _registry_verbs(verb: Verb) -> None:
    """register, promote."""
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


def _cache_verbs(verb: Verb) -> None:
    """gc."""
    what = "dvc gc keeping every version: the workspace, every commit, branch, tag and experiment"
    sub = verb("gc", what, cmd_gc)
    sub.add_argument("--cloud", action="store_true", help="delete from the default DVC remote too (docs/remotes.md)")
    sub.add_argument("--dry", action="store_true", help="only say what would be removed")


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
