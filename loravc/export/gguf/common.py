"""What the two GGUF formats share: the facts read before writing, their directory names, the Modelfile, card and
record written next to the GGUF, and the line `loravc export` prints."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.data.records import CHAT_SHAPES
from loravc.export.gguf.ollama import modelfile
from loravc.export.gguf.writer import TYPES, check_writable
from loravc.export.staging import Exported, Job, Options, Staged, stage
from loravc.versions.catalogue import Version

BASE_FILE = "base.f16.gguf"  # what --base-only writes and a gguf-lora Modelfile's FROM names
ADAPTER_FILE = "adapter.gguf"
# general.* keys copied from the embedded base's own GGUF (made by llama.cpp) into every GGUF of its versions
BASE_GENERAL = ("general.basename", "general.organization", "general.license", "general.languages")


@dataclass(frozen=True)
class Facts:
    """What a GGUF export reads before writing anything: the version's directories, the base's config and
    identity (base.json), the adapter's config, llama.cpp's pre-tokenizer name and the base's general.* keys."""

    base_dir: Path
    adapter_dir: Path
    config: Any
    lora: dict[str, Any]
    identity: dict[str, Any]
    pre: str
    general: dict[str, Any]

    @property
    def basename(self) -> str:
        return str(self.general.get("general.basename", "model"))


@dataclass(frozen=True)
class Written:
    """What a GGUF format wrote into the staged directory."""

    model_file: str  # the Modelfile's FROM
    tokenizer_dir: Path  # where its eos token and chat template are read
    record: dict[str, Any]  # tensors, and the read-back check of a whole model
    card: str
    adapter: str | None = None  # the Modelfile's ADAPTER: then the file written is that one

    @property
    def files(self) -> list[str]:
        return [self.adapter or self.model_file]


def version_name(version: Version) -> str:
    return str(version.version_id or version.short)


def directory_name(version: Version, options: Options, fmt: str) -> str:
    """<version id>-gguf-<type>, -base-<type> (--base-only, either GGUF format) or -gguf-lora (a LoRA GGUF is F32)."""
    kind, quant = "base" if options.base_only else fmt, options.type
    typed = "" if kind == "gguf-lora" else f"-{quant}"
    return f"{version_name(version)}-{kind}{typed}"


def check_type(quant: str) -> None:
    if quant not in TYPES:
        raise UserError(f"--type {quant!r}: choose one of {', '.join(TYPES)}")


def read_facts(job: Job, adapter_only: bool) -> Facts:
    """The version's base and adapter, checked for what this writer can write (merging handles what llama.cpp's
    LoRA cannot); a LoRA GGUF has no tokenizer, so it needs no pre-tokenizer name."""
    from transformers import AutoConfig

    base_dir, adapter_dir = job.versions.directories(job.version)
    config = AutoConfig.from_pretrained(base_dir)
    lora = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    check_writable(config, lora if adapter_only else None)
    identity = read_identity(base_dir)
    pre, general = base_facts(identity, job.options.tokenizer_pre, need_pre=not adapter_only)
    return Facts(base_dir, adapter_dir, config, lora, identity, pre, general)


def read_identity(base_dir: Path) -> dict[str, Any]:
    """The base.json the base stage wrote next to the weights ({} when absent: a base made otherwise)."""
    from loravc.core.base_files import IDENTITY_FILE
    from loravc.core.base_files import read_identity as read_base_json

    return read_base_json(base_dir) if (base_dir / IDENTITY_FILE).is_file() else {}


def base_facts(identity: dict[str, Any], pre: str | None, need_pre: bool = True) -> tuple[str, dict[str, Any]]:
    """(tokenizer.ggml.pre, general.* of the base) for a base identity (read_identity).

    The embedded base comes from a GGUF llama.cpp made: its pre-tokenizer name and naming keys are read from it.
    Any other base needs `pre` (llama.cpp's name for its pre-tokenizer, e.g. llama-bpe, qwen2, smollm): llama.cpp
    recognises it by hashing a tokenization, a table this writer does not carry.
    """
    import gguf

    from loravc.base.model import EMBEDDED_FILE, embedded_gguf
    from loravc.train.card import HUB, base_kind

    general: dict[str, Any] = {}
    if str(identity.get("source", "")).endswith(EMBEDDED_FILE):
        fields = gguf.GGUFReader(embedded_gguf()).fields
        general = {key: fields[key].contents() for key in BASE_GENERAL if key in fields}
        pre = pre or fields["tokenizer.ggml.pre"].contents()
    elif base_kind(identity) == HUB and "/" in str(identity.get("id")):
        organization, basename = str(identity["id"]).split("/", 1)
        general = {"general.organization": organization, "general.basename": basename}
    if not pre and need_pre:
        raise UserError(
            "GGUF export needs the base's pre-tokenizer name as llama.cpp knows it: pass --tokenizer-pre NAME "
            "(the `res = ...` name llama.cpp's convert_hf_to_gguf.py prints for this base, e.g. llama-bpe or qwen2)"
        )
    return pre or "", general


def tokenizer_facts(directory: Path) -> tuple[str | None, str | None]:
    """(eos token, chat template) of a saved tokenizer directory."""
    config_file, template_file = directory / "tokenizer_config.json", directory / "chat_template.jinja"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    eos = config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else config.get("chat_template")
    return eos, template if isinstance(template, str) else None


def base_text(identity: dict[str, Any]) -> str:
    """A base-only GGUF's card: which base this is, as the base stage recorded it."""
    lines = [f"- {key}: `{identity[key]}`" for key in ("id", "source", "revision", "sha256") if identity.get(key)]
    weights = identity.get("weights_sha256") or {}
    lines += [f"- weights `{name}` sha256 `{digest}`" for name, digest in weights.items()]
    return "\n".join(lines) or "- (no base.json recorded)"


def export_gguf(job: Job, fmt: str, write: Callable[[Path], Written]) -> Exported:
    """Stage `write`'s GGUF with an Ollama Modelfile, README.md (its card) and version.json (`fmt`, the options,
    what was written and checked, where it came from)."""
    from loravc.core.metadata import utc_now

    version, base_only = job.version, job.options.base_only

    def fill(out: Path) -> Staged:
        out.mkdir()
        written = write(out)
        eos, chat_template = tokenizer_facts(written.tokenizer_dir)
        chat = bool(not base_only and version.metadata and version.metadata.data.shape in CHAT_SHAPES)
        text = modelfile(written.model_file, chat=chat, chat_template=chat_template, eos=eos, adapter=written.adapter)
        (out / "Modelfile").write_text(text, encoding="utf-8")
        record = {"format": fmt, "type": job.options.type, "base_only": base_only} | written.record
        record |= {"files": written.files, "exported_from": version.provenance(), "exported": utc_now().isoformat()}
        return Staged(written.card, record)

    record = stage(job.dest, fill)
    return Exported(job.dest, record, summary(record))


def summary(record: dict[str, Any]) -> str:
    """What `loravc export --format gguf|gguf-lora` wrote, and the read-back check of a whole-model GGUF."""
    lines = [f"wrote {', '.join(record['files'])} ({record['tensors']} tensors), Modelfile, README.md, version.json"]
    check = record.get("logits_check")
    if check:
        lines.append(
            f"read back by transformers: top-1 token {check['top1_agreement']} positions, logits within "
            f"{check['max_abs_difference']:.3g} ({check['relative_difference']:.2g} of the largest; "
            f"bound {check['tolerance']:g})"
        )
    return "\n".join(lines)
