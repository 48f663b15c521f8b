"""GGUF files of a version for llama.cpp, Ollama and LM Studio: the merged model, the adapter alone, the base alone.

Written with the `gguf` package (GGUFWriter and its tensor-name maps), the way llama.cpp's own converters lay
them out: llama's q/k rows permuted for its rotary layout, norms in F32, the tokenizer (tokens, types, merges,
special ids, chat template) in `tokenizer.*`. A LoRA GGUF holds `<tensor>.lora_a` / `.lora_b` pairs and
`adapter.lora.alpha`; llama.cpp applies it to the base GGUF as W + alpha / r * B A.
"""

import json
import re
import shutil
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.data.records import CHAT_SHAPES

FORMATS = ("gguf", "gguf-lora")
ARCHITECTURES = {"LlamaForCausalLM": "llama"}  # transformers class -> llama.cpp architecture this writer supports
TYPES = ("f16", "q8_0")
# Largest |logit| difference, relative to the largest |logit|, between a GGUF read back by transformers and the
# fp32 model it was written from, on the probe text. The writer itself is exact (an F32 file reads back with
# difference 0); what remains is the rounding of the weights: F16 measured 9e-4 on SmolLM2 (0.031 on logits up
# to 34), Q8_0's blocks of 32 values lose more.
TOLERANCE = {"f16": 1e-2, "q8_0": 5e-2}
LORA_ALPHA_KEY = "adapter.lora.alpha"
BASE_FILE = "base.f16.gguf"  # what --base-only writes and a gguf-lora Modelfile's FROM names
ADAPTER_FILE = "adapter.gguf"
# general.* keys copied from the embedded base's own GGUF (made by llama.cpp) into every GGUF of its versions
BASE_GENERAL = ("general.basename", "general.organization", "general.license", "general.languages")


def check_writable(config: Any, lora: dict[str, Any] | None = None) -> str:
    """llama.cpp's architecture name for a model config; what this writer cannot write is a UserError."""
    architectures = list(getattr(config, "architectures", None) or [])
    arch = next((ARCHITECTURES[a] for a in architectures if a in ARCHITECTURES), None)
    if arch is None:
        raise UserError(
            f"GGUF export supports {', '.join(ARCHITECTURES)}; this base is {', '.join(architectures) or 'unknown'}: "
            "export it with --format peft (or merge it) and convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    if lora:
        unsupported = [
            key
            for key, present in (
                ("use_dora", lora.get("use_dora")),
                ("modules_to_save", lora.get("modules_to_save")),
                ("use_rslora", lora.get("use_rslora")),
                ("rank_pattern", lora.get("rank_pattern")),
                ("alpha_pattern", lora.get("alpha_pattern")),
                ("bias", lora.get("bias", "none") != "none"),
            )
            if present
        ]
        if unsupported:
            raise UserError(
                f"GGUF export does not support adapters with {', '.join(unsupported)} (llama.cpp applies plain "
                "LoRA pairs only): use --format peft"
            )
    return arch


def permute_rows(weight: Any, heads: int) -> Any:
    """llama.cpp's row order for q/k projections: each head's rotary halves interleaved (its converter's permute)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _heads(config: Any, hf_name: str) -> int | None:
    """Heads to permute by for a q/k projection's rows (k by the key/value heads), else None."""
    if ".self_attn.q_proj." in hf_name:
        return config.num_attention_heads
    if ".self_attn.k_proj." in hf_name:
        return config.num_key_value_heads or config.num_attention_heads
    return None


def _writer(path: Path, arch: str, config: Any, general: dict[str, Any], file_type: Any) -> Any:
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.MODEL)
    _add_general(writer, general)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"GGUF export supports the default rotary embedding; this base uses {rope['rope_type']!r}")
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(file_type)
    writer.add_vocab_size(config.vocab_size)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    return writer


def _add_general(writer: Any, general: dict[str, Any]) -> None:
    """general.name, .finetune and what is known of the base (basename, organization, license, languages)."""
    for key, value in general.items():
        if isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_string(key, str(value))


def add_tokenizer(writer: Any, tokenizer: Any, tokenizer_dir: Path, vocab_size: int, pre: str) -> None:
    """tokenizer.* as llama.cpp's converter writes a BPE tokenizer: tokens and types by id, merges, special ids."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = (
        backend is not None
        and type(backend.model).__name__ == "BPE"
        and not getattr(backend.model, "byte_fallback", False)
        and type(backend.decoder).__name__ == "ByteLevel"
    )
    if not byte_level:  # SentencePiece-style BPE (byte fallback, "▁" spaces) is llama.cpp's "llama" model, not gpt2
        raise UserError("GGUF export supports byte-level BPE tokenizers (gpt2-style); this base's is not one")
    vocab = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for token_id in range(vocab_size):
        token = vocab.get(token_id)
        if token is None:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            special = decoder[token_id].special or _looks_special(token)
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    ids = tokenizer("a")["input_ids"]  # what the tokenizer itself adds around a text
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id)
    writer.add_add_space_prefix(False)  # byte-level BPE encodes spaces itself
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)


SEQUENCE_MARKS = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
FULLWIDTH_BAR = "\uff5c"  # the bar of deepseek's special tokens


def _looks_special(token: str) -> bool:
    """An added token not flagged special that is still a control token, as llama.cpp's converter decides
    (`does_token_look_special`): <|...|> marks, their full-width-bar form, <unused...>, a few sequence marks."""
    bar = FULLWIDTH_BAR
    return (
        token in SEQUENCE_MARKS
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith(f"<{bar}") and token.endswith(f"{bar}>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def write_model(
    model: Any,
    tokenizer: Any,
    tokenizer_dir: Path,
    path: Path,
    *,
    quant: str,
    general: dict[str, Any],
    pre: str,
) -> int:
    """The whole model (merged, or the base alone) as one GGUF at `path`; returns its tensor count."""
    import gguf
    import numpy as np

    if quant not in TYPES:
        raise UserError(f"--type {quant!r}: choose one of {', '.join(TYPES)}")
    config = model.config
    arch = check_writable(config)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    writer = _writer(path, arch, config, general, file_type)
    writer.add_size_label(gguf.utility.size_label(sum(p.numel() for p in model.parameters()), 0, 0, 0))
    add_tokenizer(writer, tokenizer, tokenizer_dir, config.vocab_size, pre)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    count = 0
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reads the output projection from token_embd
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"GGUF export cannot name tensor {hf_name}: not a {arch} tensor llama.cpp knows")
        data = tensor.detach().float().cpu().numpy()
        if (heads := _heads(config, hf_name)) is not None:
            data = permute_rows(data, heads)
        if data.ndim == 1:
            writer.add_tensor(gguf_name, data.astype(np.float32))
        elif quant == "f16":
            writer.add_tensor(gguf_name, data.astype(np.float16))
        elif data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
            writer.add_tensor(gguf_name, data.astype(np.float16))  # no whole Q8_0 blocks: F16, as llama.cpp does
        else:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        count += 1
    _finish(writer)
    return count


def write_lora(adapter_dir: Path, config: Any, lora: dict[str, Any], path: Path, general: dict[str, Any]) -> int:
    """A PEFT LoRA adapter as llama.cpp's LoRA GGUF (F32 pairs, B's q/k rows permuted like the base's)."""
    import gguf
    from safetensors.torch import load_file  # torch reads bf16 (the gpu profile's adapters); numpy cannot

    arch = check_writable(config, lora)
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    _add_general(writer, general)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(LORA_ALPHA_KEY, float(lora["lora_alpha"]))
    count = 0
    for key in sorted(weights):
        match = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", key)
        if match is None:
            raise UserError(f"{adapter_dir}: tensor {key} is not a LoRA A/B pair: use --format peft")
        hf_name = f"{match[1]}.weight"
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise UserError(f"GGUF export cannot name tensor {hf_name}: not a {arch} tensor llama.cpp knows")
        data = weights[key].float().numpy()
        heads = _heads(config, hf_name)
        if match[2] == "B" and heads is not None:
            data = permute_rows(data, heads)
        writer.add_tensor(f"{gguf_name}.lora_{match[2].lower()}", data)
        count += 1
    _finish(writer)
    return count


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- Ollama --------------------------------------------------------------------------------------------------
# ChatML (SmolLM2, Qwen, ...) in Ollama's Go template syntax: the system message (Ollama passes a request's system
# message as .System; SYSTEM gives the default the Jinja template inserts), each other message, then the
# assistant's turn opened for the reply.
CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""
RAW_TEMPLATE = "{{ .Prompt }}"


def default_system(chat_template: str) -> str | None:
    """The system message a ChatML template inserts when a conversation has none, if it is a literal string
    (a newline written as is or as the escape \\n); None when it is built from variables or there is none."""
    for found in re.finditer(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", chat_template, re.S):
        if not any(mark in found[1] for mark in ("'", '"', "{{", "{%", "+")):
            return found[1].replace("\\n", "\n")
    return None


def modelfile(
    model_file: str, *, chat: bool, chat_template: str | None, eos: str | None, adapter: str | None = None
) -> str:
    """An Ollama Modelfile for a GGUF: FROM (and ADAPTER), TEMPLATE in Go syntax, SYSTEM, stop tokens.

    A version trained on conversations gets its chat template translated (ChatML only; other families keep
    the GGUF's own `tokenizer.chat_template`, which Ollama reads for the families it knows); a version trained
    on plain text or prompt-completion pairs gets the prompt as is, as it was trained.
    """
    lines = [f"FROM ./{model_file}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    stops = [eos] if eos else []
    if chat and chat_template and "<|im_start|>" in chat_template:
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        if default := default_system(chat_template):
            lines.append(f'SYSTEM """{default}"""')
        stops = list(dict.fromkeys(["<|im_end|>", "<|im_start|>", *stops]))
    elif chat:
        lines.append("# TEMPLATE: left to Ollama, which reads the GGUF's tokenizer.chat_template for known families")
    else:
        lines.append(f'TEMPLATE """{RAW_TEMPLATE}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


# --- a version's GGUF export -------------------------------------------------------------------------------------
def read_identity(base_dir: Path) -> dict[str, Any]:
    """The base.json the base stage wrote next to the weights ({} when absent)."""
    from loravc.core.base_files import IDENTITY_FILE

    path = base_dir / IDENTITY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


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


def export(
    versions: Any,
    version: Any,
    dest: Path,
    *,
    fmt: str = "gguf",
    quant: str = "f16",
    base_only: bool = False,
    pre: str | None = None,
) -> dict[str, Any]:
    """Write a version as GGUF into the new directory `dest`, with an Ollama Modelfile, README.md and version.json.

    `gguf`: the merged model at `quant`, read back by transformers and checked against base + adapter on a probe
    text before anything is kept (`base_only`: the base alone, checked against the base). `gguf-lora`: the
    adapter alone (F32), for the base GGUF that `base_only` writes. Nothing is written when a check fails or
    `dest` exists.
    """
    from transformers import AutoConfig

    from loravc.core.metadata import utc_now
    from loravc.export.card import version_card
    from loravc.export.use import load
    from loravc.versions.cache import scratch_dir

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of peft, {', '.join(FORMATS)}")
    if quant not in TYPES:
        raise UserError(f"--type {quant!r}: choose one of {', '.join(TYPES)}")
    adapter_only = fmt == "gguf-lora" and not base_only
    if adapter_only and quant != "f16":
        raise UserError("--type applies to whole-model GGUFs (--format gguf, --base-only); a LoRA GGUF is F32")
    if dest.exists():
        raise UserError(f"{dest} already exists: choose another directory (nothing was overwritten)")
    base_dir, adapter_dir = versions.directories(version)
    config = AutoConfig.from_pretrained(base_dir)
    lora = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    check_writable(config, lora if adapter_only else None)  # merging handles what llama.cpp's LoRA cannot
    identity = read_identity(base_dir)
    pre, general = base_facts(identity, pre, need_pre=not adapter_only)  # a LoRA GGUF has no tokenizer
    vid = str(version.version_id or version.short)
    basename = general.get("general.basename", "model")
    meta = version.metadata
    record: dict[str, Any] = {"format": fmt, "type": quant, "base_only": base_only}
    scratch = scratch_dir(dest)
    try:
        if adapter_only:
            general |= {"general.name": f"{basename} {vid} LoRA", "general.finetune": vid}
            record["tensors"] = write_lora(adapter_dir, config, lora, scratch / ADAPTER_FILE, general)
            files, model_file, adapter, tokenizer_dir = [ADAPTER_FILE], BASE_FILE, ADAPTER_FILE, adapter_dir
        else:
            peft_model, tokenizer = load(versions, version, "cpu", quantized=False)  # QLoRA: the full-precision base
            if base_only:
                with peft_model.disable_adapter():
                    expected = probe_logits(peft_model, tokenizer)  # the base alone
                model = peft_model.unload()  # the base's own weights: adapter layers removed, nothing merged
                general |= {"general.name": basename}
                model_file, tokenizer_dir = (BASE_FILE if quant == "f16" else f"base.{quant}.gguf"), base_dir
            else:
                expected = probe_logits(peft_model, tokenizer)  # base + adapter, before merging
                model = peft_model.merge_and_unload()
                general |= {"general.name": f"{basename} {vid}", "general.finetune": vid}
                model_file, tokenizer_dir = f"model.{quant}.gguf", adapter_dir
            record["tensors"] = write_model(
                model, tokenizer, tokenizer_dir, scratch / model_file, quant=quant, general=general, pre=pre
            )
            record["logits_check"] = check_read_back(expected, tokenizer, scratch / model_file, quant)
            files, adapter = [model_file], None
        eos, chat_template = tokenizer_facts(tokenizer_dir)
        chat = bool(not base_only and meta and meta.data.shape in CHAT_SHAPES)
        text = modelfile(model_file, chat=chat, chat_template=chat_template, eos=eos, adapter=adapter)
        (scratch / "Modelfile").write_text(text, encoding="utf-8")
        how = usage(files[0], fmt, base_only, str(dest))
        if base_only:
            card = f"# {basename}: the base of {vid}\n\n{base_text(identity)}\n\n## How to load it\n\n{how}\n"
        else:
            card = version_card(version, merged=fmt == "gguf", gguf=True, directory=str(dest), how_to_load=how)
        (scratch / "README.md").write_text(card, encoding="utf-8")
        record |= {"files": files, "exported_from": version.provenance(), "exported": utc_now().isoformat()}
        (scratch / "version.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if dest.exists():  # made while this export ran
            raise UserError(f"{dest} already exists: choose another directory (nothing was overwritten)")
        scratch.rename(dest)
    except OSError as err:
        shutil.rmtree(scratch, ignore_errors=True)
        raise UserError(f"cannot write {dest}: {err.strerror or err}; nothing was written") from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return record


def usage(name: str, fmt: str, base_only: bool, where: str) -> str:
    """The model card's "How to load it" for a GGUF export: llama.cpp, Ollama, and transformers for a whole model."""
    if fmt == "gguf-lora" and not base_only:
        return (
            f"`{name}` is the adapter alone as a llama.cpp LoRA GGUF (F32 A/B pairs, `adapter.lora.alpha`; "
            f"llama.cpp scales B A by alpha / r). It applies to the F16 base GGUF that `loravc export REF "
            f"--format gguf-lora --base-only` writes as `{BASE_FILE}`:\n\n"
            f"```\nllama-cli -m {BASE_FILE} --lora {name}\n"
            f"ollama create my-model -f Modelfile   # with {BASE_FILE} copied next to the Modelfile\n```\n\n"
            "See docs/deploy.md."
        )
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


def base_text(identity: dict[str, Any]) -> str:
    """A base-only GGUF's card: which base this is, as the base stage recorded it."""
    lines = [f"- {key}: `{identity[key]}`" for key in ("id", "source", "revision", "sha256") if identity.get(key)]
    weights = identity.get("weights_sha256") or {}
    lines += [f"- weights `{name}` sha256 `{digest}`" for name, digest in weights.items()]
    return "\n".join(lines) or "- (no base.json recorded)"


def tokenizer_facts(directory: Path) -> tuple[str | None, str | None]:
    """(eos token, chat template) of a saved tokenizer directory."""
    config_file, template_file = directory / "tokenizer_config.json", directory / "chat_template.jinja"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    eos = config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else config.get("chat_template")
    return eos, template if isinstance(template, str) else None


def probe_logits(model: Any, tokenizer: Any) -> Any:
    """A model's fp32 logits on the probe text (the reference a GGUF read back is compared with)."""
    import torch

    from loravc.evaluate.evaluation import PROBE_TEXT

    with torch.no_grad():
        return model.float()(**tokenizer(PROBE_TEXT, return_tensors="pt")).logits[0]


def check_read_back(expected: Any, tokenizer: Any, path: Path, quant: str) -> dict[str, Any]:
    """Load the GGUF with transformers (`gguf_file=`) and compare its logits on the probe text with `expected`
    (the model's before merging), and its tokenizer's ids on the probe text and a conversation with `tokenizer`'s.

    F16 must give the same top-1 token at every position and logits within TOLERANCE["f16"] of the largest;
    Q8_0 within its looser bound. A failed check is a UserError, so nothing is kept.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from loravc.evaluate.evaluation import PROBE_TEXT

    inputs = tokenizer(PROBE_TEXT, return_tensors="pt")
    read = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        got = read(**inputs).logits[0]
    check_tokenizer(tokenizer, path)
    difference = float((expected - got).abs().max())
    relative = difference / float(expected.abs().max())
    same_top1 = int((expected.argmax(-1) == got.argmax(-1)).sum())
    positions = int(expected.shape[0])
    tolerance = TOLERANCE[quant]
    if not relative <= tolerance or (quant == "f16" and same_top1 != positions):
        raise UserError(
            f"{path.name} read back by transformers differs from the model: logits by {difference:.3g} "
            f"({relative:.3g} of the largest, bound {tolerance}), top-1 token at {positions - same_top1} of "
            f"{positions} positions: not saved"
        )
    return {
        "max_abs_difference": difference,
        "relative_difference": relative,
        "tolerance": tolerance,
        "top1_agreement": f"{same_top1}/{positions}",
        "probe": PROBE_TEXT,
    }


def check_tokenizer(tokenizer: Any, path: Path) -> None:
    """The GGUF's tokenizer, as transformers builds it from tokenizer.*, encodes like the version's own: the probe
    text, and a conversation through the chat template when there is one. A UserError otherwise."""
    from transformers import AutoTokenizer

    from loravc.evaluate.evaluation import PROBE_TEXT

    read = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = [PROBE_TEXT, " leading space,\ttabs\n\nnewlines and numbers 12345 ünïcödé"]
    if tokenizer.chat_template:
        conversation = [{"role": "user", "content": PROBE_TEXT}, {"role": "assistant", "content": "assert"}]
        texts.append(tokenizer.apply_chat_template(conversation, tokenize=False))
    for text in texts:
        want, got = tokenizer.encode(text, add_special_tokens=False), read.encode(text, add_special_tokens=False)
        if want != got:
            raise UserError(
                f"{path.name}: its tokenizer encodes {text[:40]!r} differently from the version's "
                f"({got[:8]}... vs {want[:8]}...): not saved"
            )
