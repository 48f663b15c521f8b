"""What each `loravc` verb does with its arguments (loravc.cli.main parses them): it calls the library and prints
through loravc.cli.render."""

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loravc.cli import render
from loravc.export import formats


def _json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _quiet_loading() -> None:
    """No GGUF-reading bar around a one-line answer (the other libraries' noise is off from the start: run_main)."""
    from loravc.core.quiet import quiet_gguf_reading

    quiet_gguf_reading()


@contextmanager
def _versions(args: argparse.Namespace) -> Iterator[Any]:
    from loravc.versions.catalogue import Versions

    with Versions(args.repo) as versions:
        yield versions


@contextmanager
def _version(args: argparse.Namespace, ref: str) -> Iterator[tuple[Any, Any]]:
    """(Versions, the Version that `ref` names), closed afterwards."""
    with _versions(args) as versions:
        yield versions, versions.resolve(ref)


# --- verbs -----------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> None:
    from loravc.versions.remote import check_remote

    with _versions(args) as versions:
        found = versions.all
        remote = check_remote(versions, found)
    rows = [v.row() | {"remote": remote.state(v)} for v in found]
    if args.json:
        _json(rows)
        return
    print(render.list_table(rows))
    for line in render.list_warnings(rows) + render.remote_notes(remote.as_dict(), rows):
        print(line, file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> None:
    from loravc.versions.inspection import describe

    with _version(args, args.ref) as (versions, version):
        info = describe(versions, version)
    _json(info) if args.json else print(render.show(info))


def cmd_compare(args: argparse.Namespace) -> None:
    from loravc.versions.inspection import compare

    with _versions(args) as versions:
        result = compare(versions, versions.resolve(args.ref_a), versions.resolve(args.ref_b))
    _json(result) if args.json else print(render.compare(result, args.ref_a, args.ref_b))


def cmd_export(args: argparse.Namespace) -> None:
    """Any format of formats.FORMATS: its options checked, its module's write, its summary printed."""
    fmt = formats.lookup(args.format)
    options = formats.Options(type=args.type, base_only=args.base_only, tokenizer_pre=args.tokenizer_pre)
    formats.refuse_options(fmt, options)
    with _version(args, args.ref) as (versions, version):
        if fmt.loads_model:
            _quiet_loading()
        done = formats.export(fmt.name, versions, version, args.dir, options)
        if done.summary:
            print(done.summary)
    print(f"exported {version.version_id} ({version.short}) -> {done.target}")


def cmd_card(args: argparse.Namespace) -> None:
    from loravc.export.card import version_card

    with _version(args, args.ref) as (_, version):
        print(version_card(version), end="")


def cmd_merge(args: argparse.Namespace) -> None:
    _quiet_loading()
    with _version(args, args.ref) as (versions, version):
        print(formats.export("merged", versions, version, args.dir, device=args.device).summary)


def cmd_generate(args: argparse.Namespace) -> None:
    from loravc.export.use import generate

    _quiet_loading()
    with _version(args, args.ref) as (versions, version):
        chat, text = generate(versions, version, args.prompt, args.max_new_tokens, device=args.device, raw=args.raw)
    print(text if chat else args.prompt + text)  # a chat reply alone; a raw prompt with its continuation


def cmd_verify(args: argparse.Namespace) -> None:
    from loravc.core.errors import UserError
    from loravc.versions.verify import check_cache_report, verify, verify_cache

    if args.all:
        if args.ref is not None or args.eval:
            raise UserError("verify --all checks every version's files by hash: give no REF and no --eval")
        with _versions(args) as versions:
            report = verify_cache(versions)
        _json(report) if args.json else print(render.verify_cache(report))
        check_cache_report(report)
        return
    if args.ref is None:
        raise UserError("verify needs a REF (a version to check end to end) or --all (every version's files)")
    _quiet_loading()
    with _version(args, args.ref) as (versions, version):
        report = verify(versions, version, evaluate=args.eval, device=args.device, tolerance=args.tolerance)
    _json(report) if args.json else print(render.verify(report))


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies under it, else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_plots(args: argparse.Namespace) -> None:
    from loravc.core.errors import UserError
    from loravc.report import plots

    if args.template:
        if args.refs or args.output:
            raise UserError("plots --template writes the offline page template only: give no REF or -o with it")
        path = plots.write_page_template(args.repo)
        print(f"wrote {_shown(path)}, named in .dvc/config.local: `dvc plots show` and `dvc plots diff` draw offline")
        return
    if not args.refs:
        raise UserError("plots needs the REFs of the versions to draw (or --template for offline `dvc plots` pages)")
    with _versions(args) as versions:
        out = args.output or versions.root / "dvc_plots" / "versions-loss.png"
        drawn = plots.draw_versions(versions, args.refs, out)
    print(f"wrote {_shown(out)}: training and validation loss of {', '.join(v.label for v in drawn)}")


def cmd_tune(args: argparse.Namespace) -> None:
    from loravc.tune.study import Options, tune

    options = Options(
        trials=args.trials, timeout=args.timeout, push=args.push, copy_paths=tuple(args.copy_paths), clean=args.clean
    )
    try:
        tune(args.repo, options, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the running trial was stopped and queued again
        print("loravc tune: interrupted; rerun it to continue the study", file=sys.stderr)
        sys.exit(130)


def cmd_gc(args: argparse.Namespace) -> None:
    from loravc.versions.cleanup import collect, kept

    with _versions(args) as versions:
        print(render.gc_kept(kept(versions)), flush=True)
        collect(versions, cloud=args.cloud, dry=args.dry, say=lambda line: print(line, flush=True))


def cmd_register(args: argparse.Namespace) -> None:
    from loravc.versions.registry import register

    with _versions(args) as versions:
        tag, version = register(versions, args.ref, args.version, args.name, args.message, args.push)
    print(f"registered {tag} -> {version.short} ({version.version_id})")
    if not args.push:
        print(f"share it: git push origin {tag}")


def cmd_promote(args: argparse.Namespace) -> None:
    from loravc.versions.registry import promote

    with _versions(args) as versions:
        tag = promote(versions, args.name, args.version, args.stage, args.message, args.push)
    if tag is None:
        print(f"{args.name} {args.version} already is the {args.stage} version: nothing to do")
        return
    print(f"promoted {args.name} {args.version} to {args.stage} (tag {tag})")
    if not args.push:
        print(f"share it: git push origin '{tag}'")
