"""Format `gguf`: the merged model as one GGUF for llama.cpp, Ollama and LM Studio, at --type (F16 or Q8_0).

Before anything is kept, transformers reads the file back and its logits on a probe text are checked against
base + adapter (checks.check_read_back). `--base-only`: the version's base alone, checked against the base; it
is also what `--format gguf-lora --base-only` writes, the base a LoRA GGUF applies to.
"""

from pathlib import Path
from typing import Any

from loravc.export.card import version_card
from loravc.export.gguf.checks import check_read_back, probe_logits
from loravc.export.gguf.common import (
    BASE_FILE,
    Facts,
    Written,
    base_text,
    check_type,
    export_gguf,
    read_facts,
    version_name,
)
from loravc.export.gguf.common import directory_name as gguf_directory_name
from loravc.export.gguf.writer import write_model
from loravc.export.staging import Exported, Job, Options, refuse_existing
from loravc.versions.catalogue import Version

FORMAT = "gguf"


def directory_name(version: Version, options: Options) -> str:
    return gguf_directory_name(version, options, FORMAT)


def write(job: Job) -> Exported:
    return write_whole(job, FORMAT)


def write_whole(job: Job, fmt: str) -> Exported:
    """The merged model, or with --base-only the base alone, as export `fmt` (its name in version.json)."""
    check_type(job.options.type)
    refuse_existing(job.dest)
    facts = read_facts(job, adapter_only=False)
    return export_gguf(job, fmt, lambda out: _write_checked(job, facts, out))


def _write_checked(job: Job, facts: Facts, out: Path) -> Written:
    from loravc.export.use import load

    quant, base_only, vid = job.options.type, job.options.base_only, version_name(job.version)
    peft_model, tokenizer = load(job.versions, job.version, "cpu", quantized=False)  # QLoRA: the full-precision base
    if base_only:
        with peft_model.disable_adapter():
            expected = probe_logits(peft_model, tokenizer)  # the base alone
        model = peft_model.unload()  # the base's own weights: adapter layers removed, nothing merged
        general = facts.general | {"general.name": facts.basename}
        model_file, tokenizer_dir = (BASE_FILE if quant == "f16" else f"base.{quant}.gguf"), facts.base_dir
    else:
        expected = probe_logits(peft_model, tokenizer)  # base + adapter, before merging
        model = peft_model.merge_and_unload()
        general = facts.general | {"general.name": f"{facts.basename} {vid}", "general.finetune": vid}
        model_file, tokenizer_dir = f"model.{quant}.gguf", facts.adapter_dir
    path = out / model_file
    tensors = write_model(model, tokenizer, tokenizer_dir, path, quant=quant, general=general, pre=facts.pre)
    record: dict[str, Any] = {"tensors": tensors, "logits_check": check_read_back(expected, tokenizer, path, quant)}
    how = usage(model_file, base_only, str(job.dest))
    if base_only:
        card = f"# {facts.basename}: the base of {vid}\n\n{base_text(facts.identity)}\n\n## How to load it\n\n{how}\n"
    else:
        card = version_card(job.version, merged=True, gguf=True, directory=str(job.dest), how_to_load=how)
    return Written(model_file, tokenizer_dir, record, card)


def usage(name: str, base_only: bool, where: str) -> str:
    """The model card's "How to load it" for a whole-model GGUF: llama.cpp, Ollama, and transformers."""
    what = "the version's base alone" if base_only else "the merged model (base + adapter)"
    return (
        f"`{name}` is {what} for llama.cpp, Ollama and LM Studio:\n\n"
        f"```\nllama-cli -m {name}\nollama create my-model -f Modelfile\n```\n\n"
        "transformers reads it too (dequantized to fp32):\n\n"
        f"```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{where}", gguf_file="{name}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{where}", gguf_file="{name}")\n```\n\n'
        "See docs/deploy.md."
    )
