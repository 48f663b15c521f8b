"""The export formats, in one table: `loravc export --format` takes its choices, help and dispatch from FORMATS.

A format is a module with two functions, and one line here:

    directory_name(version, options) -> str   # its directory under model_versions/ when no DIR is given
    write(job: staging.Job) -> staging.Exported   # checks first, then staging.stage (nothing left on failure)

The module is imported only when its format is used, so `loravc --help` loads none of their libraries.
"""

from dataclasses import dataclass, fields
from importlib import import_module
from pathlib import Path
from types import ModuleType

from loravc.core.errors import UserError
from loravc.export.staging import Exported, Job, Options, default_target
from loravc.versions.catalogue import Version, Versions

FLAGS = {field.name: "--" + field.name.replace("_", "-") for field in fields(Options)}  # type -> --type, ...
GGUF_OPTIONS = frozenset({"type", "base_only", "tokenizer_pre"})


@dataclass(frozen=True)
class Format:
    name: str  # --format NAME
    module: str  # where its directory_name and write are
    help: str  # what it writes, for --format's help
    takes: frozenset[str] = frozenset()  # the Options it reads; the others, given, are refused
    loads_model: bool = False  # loads the weights (the CLI quiets the libraries' progress bars)


FORMATS = (  # the first is the default
    Format("peft", "loravc.export.adapter", "adapter + metadata"),
    Format("merged", "loravc.export.merged", "base + adapter merged (like `loravc merge`)", loads_model=True),
    Format("gguf", "loravc.export.gguf.model", "the merged model", GGUF_OPTIONS, loads_model=True),
    Format("gguf-lora", "loravc.export.gguf.lora", "the adapter for llama.cpp --lora", GGUF_OPTIONS, loads_model=True),
)


def names() -> tuple[str, ...]:
    return tuple(fmt.name for fmt in FORMATS)


def help_text() -> str:
    """--format's help: each format and what it writes, the default marked."""
    default = FORMATS[0].name
    return "; ".join(f"{f.name}: {f.help}{' (default)' if f.name == default else ''}" for f in FORMATS)


def lookup(name: str) -> Format:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise UserError(f"--format {name!r}: choose one of {', '.join(names())}")


def module(fmt: Format) -> ModuleType:
    return import_module(fmt.module)


def _listed(items: list[str], last: str) -> str:
    return f" {last} ".join(filter(None, [", ".join(items[:-1]), items[-1]]))


def refuse_options(fmt: Format, options: Options) -> None:
    """An option `fmt` does not take, given, is a UserError naming the formats that take it."""
    default = Options()
    given = [name for name in FLAGS if name not in fmt.takes and getattr(options, name) != getattr(default, name)]
    if not given:
        return
    untaken = [name for name in FLAGS if name not in fmt.takes]
    takers = [other.name for other in FORMATS if other.takes & set(untaken)]
    verb = "goes" if len(untaken) == 1 else "go"
    raise UserError(f"{_listed([FLAGS[n] for n in untaken], 'and')} {verb} with --format {_listed(takers, 'or')}")


def export(
    name: str,
    versions: Versions,
    version: Version,
    dest: Path | None = None,
    options: Options | None = None,
    device: str = "cpu",
) -> Exported:
    """Write `version` in format `name` into the new directory `dest` (default: model_versions/, named by the
    format). Nothing is written when a check fails or `dest` exists."""
    fmt = lookup(name)
    options = options or Options()
    refuse_options(fmt, options)
    writer = module(fmt)
    target = dest or default_target(versions, writer.directory_name(version, options))
    return writer.write(Job(versions, version, target, options, device))
