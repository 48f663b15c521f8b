"""The reference pages made from the code, and params.yaml's comments made from the params' help.

`python -m loravc.cli.reference` rewrites docs/reference/params.md (every key of params.yaml: type, default,
the stages an edit reruns, meaning), docs/reference/cli.md (every `loravc` verb and flag, from argparse) and
the comments of params.yaml (each key's help from its dataclass field; its values are left as they are).
`--check` writes nothing and exits 1 when any of them is stale. The help of a train.trainer key is
trl.SFTConfig's own, of an extra train.lora key peft.LoraConfig's.
"""

import argparse
import dataclasses
import re
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COMMENT_COLUMN = 29  # where params.yaml's comments start
WIDTH = 120
PARAMS_MD, CLI_MD = Path("docs/reference/params.md"), Path("docs/reference/cli.md")


@dataclasses.dataclass(frozen=True)
class Key:
    path: str  # train.lora.r
    type: str
    default: Any
    help: str
    section: bool  # a mapping of further keys


def keys() -> Iterator[Key]:
    """Every key of params.yaml's schema, sections before their keys, in the schema's order."""
    from loravc.params import Params

    def walk(cls: type, prefix: str) -> Iterator[Key]:
        instance = cls()
        for f in dataclasses.fields(cls):
            if f.name == getattr(cls, "EXTRA_KEYS", None):
                continue
            value, path = getattr(instance, f.name), prefix + f.name
            nested = dataclasses.is_dataclass(f.type)
            yield Key(path, "section" if nested else type_name(f.type), value, f.metadata.get("help", ""), nested)
            if nested:
                yield from walk(f.type, path + ".")

    return walk(Params, "")


def type_name(annotation: Any) -> str:
    """`int`, `list[str] or str`, `int or null`: a field's type in params.yaml's words."""
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation.__name__
    text = re.sub(r"\b(typing|loravc\.[\w.]+)\.", "", str(annotation))
    return re.sub(r" \| (NoneType|None)\b", " or null", text).replace(" | ", " or ")


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = (match.group(1) if match else text).rstrip(".")
    return sentence[:1].lower() + sentence[1:] if sentence[1:2].islower() else sentence


def library_help(path: str) -> str:
    """The help of a key the schema passes on: train.trainer.* (trl.SFTConfig), other train.lora.* (LoraConfig)."""
    owner, _, name = path.rpartition(".")
    if owner == "train.trainer":
        from trl import SFTConfig as cls
    elif owner == "train.lora":
        from peft import LoraConfig as cls
    else:
        return ""
    found = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    return first_sentence(found.metadata.get("help", "")) if found else ""


# --- params.yaml ------------------------------------------------------------------------------------
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#][^:]*?):(?P<rest>(\s.*)?)$")


def split_comment(rest: str) -> str:
    """A YAML value without its trailing comment (a ` #` outside quotes)."""
    quote = None
    for i, char in enumerate(rest):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].rstrip()
    return rest.rstrip()


def comment_params_yaml(text: str) -> str:
    """params.yaml with each key's comment its help, wrapped from COMMENT_COLUMN; values and the header kept."""
    helps = {key.path: key.help for key in keys()}
    out: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    started = False
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if not match:
            if not started or not line.strip():  # the header, and blank lines
                out.append(line)
            continue  # a comment line among the keys: the comments are made here
        started = True
        indent, key = len(match["indent"]), match["key"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), key])
        stack.append((indent, key))
        head = f"{match['indent']}{key}:{split_comment(match['rest'] or '')}"
        help = helps.get(path) or library_help(path)
        out.extend(commented(head, help) if help else [head])
    return "\n".join(out) + "\n"


def commented(head: str, help: str) -> list[str]:
    column = max(COMMENT_COLUMN, len(head) + 1)
    lines = textwrap.wrap(help, WIDTH - column - 2) or [""]
    first = f"{head.ljust(column)}# {lines[0]}"
    return [first, *(f"{' ' * column}# {line}" for line in lines[1:])]


# --- docs/reference/params.md -------------------------------------------------------------------------
def rerun_by(path: str, declared: dict[str, list[str]]) -> list[str]:
    """The stages whose dvc.yaml `params:` cover the key (an edit reruns them)."""
    return [
        stage
        for stage, params in declared.items()
        if any(path == p or path.startswith(p + ".") or p.startswith(path + ".") for p in params)
    ]


def declared_params(dvc_yaml: Path) -> dict[str, list[str]]:
    from loravc.core.schema import read_yaml

    stages = read_yaml(dvc_yaml)["stages"]
    return {name: [p for p in stage.get("params") or [] if isinstance(p, str)] for name, stage in stages.items()}


def default_text(value: Any) -> str:
    import json

    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        value = {k: _set_fields(v) if dataclasses.is_dataclass(v) else v for k, v in value.items()}
    return json.dumps(value).replace("|", "\\|")


def _set_fields(value: Any) -> dict[str, Any]:
    return {name: x for name, x in dataclasses.asdict(value).items() if x is not None}


def params_reference(root: Path) -> str:
    from loravc.train.params import PROFILES, TRAINER_DEFAULTS

    declared = declared_params(root / "dvc.yaml")
    lines = [
        "# params.yaml reference",
        "",
        "Every key of `params.yaml`: its type, default, the stages `dvc repro` reruns when it changes (from",
        "`params:` in dvc.yaml) and what it means. Made from the code by `python -m loravc.cli.reference`, as are",
        "params.yaml's comments; a test fails when this page is stale. Change a key for one experiment with",
        "`dvc exp run -S train.lora.r=8`.",
    ]
    for key in keys():
        if "." not in key.path:
            stages = ", ".join(f"`{s}`" for s in rerun_by(key.path, declared)) or "none"
            about = key.help[:1].upper() + key.help[1:]
            lines += ["", f"## `{key.path}`", "", f"{about}. An edit reruns: {stages}.", ""]
            lines += ["| key | type | default | reruns | meaning |", "|---|---|---|---|---|"]
            continue
        if key.section:
            continue
        stages = ", ".join(rerun_by(key.path, declared)) or "-"
        lines.append(f"| `{key.path}` | {key.type} | `{default_text(key.default)}` | {stages} | {cell(key.help)} |")
    lines += [
        "",
        "## `train.trainer`: the project's defaults",
        "",
        "`train.trainer` goes to `trl.SFTConfig` on top of these defaults (where they differ from TRL's) and the",
        "speed profile (`train.profile`); a key set in params.yaml wins. A key params.yaml does not list is added",
        "with DVC's `+`: `dvc exp run -S +train.trainer.per_device_train_batch_size=8`.",
        "",
        "| key | default | meaning (trl.SFTConfig) |",
        "|---|---|---|",
    ]
    for name, value in TRAINER_DEFAULTS.items():
        lines.append(f"| `{name}` | `{default_text(value)}` | {library_help('train.trainer.' + name)} |")
    lines += ["", "| profile | trl.SFTConfig settings | base weights | LoRA weights |", "|---|---|---|---|"]
    for name, profile in PROFILES.items():
        settings = ", ".join(f"`{k}: {default_text(v)}`" for k, v in profile.trainer.items())
        lines.append(f"| `{name}` | {settings} | {profile.base_dtype} | {profile.lora_dtype} |")
    return "\n".join(lines) + "\n"


# --- docs/reference/cli.md ----------------------------------------------------------------------------
def cli_reference() -> str:
    from loravc.cli.main import parser

    top = parser()
    lines = [
        "# `loravc` reference",
        "",
        "Every verb and flag of `loravc` (also `python -m loravc`), from its argparse parser by",
        "`python -m loravc.cli.reference`; a test fails when this page is stale. How to use them:",
        "[versions.md](../versions.md). A REF names one version: a git revision, branch or tag, an experiment",
        "name, a version id (`v_<id>`) or a registry reference (`name@vX.Y.Z`, `name#stage`).",
        "",
        "| option | meaning |",
        "|---|---|",
        *rows(top),
    ]
    (verbs,) = (a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in verbs.choices.items():
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        lines += ["", f"## `loravc {name}`", "", sub.description or "", "", f"`{usage}`", ""]
        table = rows(sub)
        lines += ["| argument | meaning |", "|---|---|", *table] if table else []
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """Text for a markdown table cell: `|` escaped, `<id>` shown rather than taken for an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;")


def rows(parser: argparse.ArgumentParser) -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = ", ".join(action.option_strings) or action.metavar or action.dest
        if action.option_strings and action.nargs != 0:
            name += f" {action.metavar or action.dest.upper()}"
        help = cell(action.help or "")
        if action.choices and action.option_strings:
            help += f" (one of: {', '.join(map(str, action.choices))})"
        found.append(f"| `{name}` | {help} |")
    return found


def generated(root: Path) -> dict[Path, str]:
    """What each generated file should hold."""
    return {
        root / PARAMS_MD: params_reference(root),
        root / CLI_MD: cli_reference(),
        root / "params.yaml": comment_params_yaml((root / "params.yaml").read_text(encoding="utf-8")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loravc.cli.reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is stale")
    ap.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    args = ap.parse_args(argv)
    if not (args.root / "params.yaml").is_file() or not (args.root / "dvc.yaml").is_file():
        print(f"error: {args.root} holds no params.yaml and dvc.yaml: run it from the repository root", file=sys.stderr)
        return 2
    stale = []
    for path, text in generated(args.root).items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
