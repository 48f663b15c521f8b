"""The GGUF writer: a transformers Llama model, or a PEFT LoRA adapter, as the GGUF llama.cpp's converters write.

Written with the `gguf` package (GGUFWriter and its tensor-name maps): llama's q/k rows permuted for its rotary
layout, norms in F32, the tokenizer (tokens, types, merges, special ids, chat template) in `tokenizer.*`. A LoRA
GGUF holds `<tensor>.lora_a` / `.lora_b` pairs and `adapter.lora.alpha`; llama.cpp applies it to the base GGUF as
W + alpha / r * B A.
"""

import re
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError

ARCHITECTURES = {"LlamaForCausalLM": "llama"}  # transformers class -> llama.cpp architecture this writer supports
TYPES = ("f16", "q8_0")
LORA_ALPHA_KEY = "adapter.lora.alpha"


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
