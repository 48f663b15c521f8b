"""Format `gguf-lora`: the adapter alone as llama.cpp's LoRA GGUF (F32 A/B pairs), for the base GGUF that
`--base-only` writes; llama.cpp (`--lora`) and Ollama (`ADAPTER`) apply it to that base."""

from pathlib import Path

from loravc.core.errors import UserError
from loravc.export.card import version_card
from loravc.export.gguf.common import (
    ADAPTER_FILE,
    BASE_FILE,
    Facts,
    Written,
    check_type,
    export_gguf,
    read_facts,
    version_name,
)
from loravc.export.gguf.common import directory_name as gguf_directory_name
from loravc.export.gguf.model import write_whole
from loravc.export.gguf.writer import write_lora
from loravc.export.staging import Exported, Job, Options, refuse_existing
from loravc.versions.catalogue import Version

FORMAT = "gguf-lora"


def directory_name(version: Version, options: Options) -> str:
    return gguf_directory_name(version, options, FORMAT)


def write(job: Job) -> Exported:
    if job.options.base_only:
        return write_whole(job, FORMAT)  # the base the LoRA GGUF applies to
    check_type(job.options.type)
    if job.options.type != "f16":
        raise UserError("--type applies to whole-model GGUFs (--format gguf, --base-only); a LoRA GGUF is F32")
    refuse_existing(job.dest)
    facts = read_facts(job, adapter_only=True)
    return export_gguf(job, FORMAT, lambda out: _write_adapter(job, facts, out))


def _write_adapter(job: Job, facts: Facts, out: Path) -> Written:
    vid = version_name(job.version)
    general = facts.general | {"general.name": f"{facts.basename} {vid} LoRA", "general.finetune": vid}
    tensors = write_lora(facts.adapter_dir, facts.config, facts.lora, out / ADAPTER_FILE, general)
    how = usage(ADAPTER_FILE)
    card = version_card(job.version, merged=False, gguf=True, directory=str(job.dest), how_to_load=how)
    return Written(BASE_FILE, facts.adapter_dir, {"tensors": tensors}, card, adapter=ADAPTER_FILE)


def usage(name: str) -> str:
    """The model card's "How to load it" for a LoRA GGUF: llama.cpp and Ollama, on the base GGUF."""
    return (
        f"`{name}` is the adapter alone as a llama.cpp LoRA GGUF (F32 A/B pairs, `adapter.lora.alpha`; "
        f"llama.cpp scales B A by alpha / r). It applies to the F16 base GGUF that `loravc export REF "
        f"--format gguf-lora --base-only` writes as `{BASE_FILE}`:\n\n"
        f"```\nllama-cli -m {BASE_FILE} --lora {name}\n"
        f"ollama create my-model -f Modelfile   # with {BASE_FILE} copied next to the Modelfile\n```\n\n"
        "See docs/deploy.md."
    )
