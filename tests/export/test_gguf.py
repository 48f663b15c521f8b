"""GGUF export: the merged model against llama.cpp's own SmolLM2 GGUF, read back by transformers, the LoRA GGUF
against the merged tensors, Modelfiles, refusals, and the CLI on a tiny version."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.project import run
from loravc.core.errors import UserError
from loravc.export.gguf import checks, common, ollama, writer

REPO = Path(__file__).resolve().parents[2]
PROBE = "The assert statement is a convenient way to insert debugging assertions into a program."


SLOW = pytest.mark.slow  # the real SmolLM2 base, from the default pipeline's run (conftest.default_repo)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory, default_repo: dict[str, Any]) -> dict[str, Any]:
    """The embedded SmolLM2 base (as the base stage wrote it) and a random rank-4 LoRA adapter on it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("smollm2")
    base_dir = default_repo["repo"] / "models" / "base"
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # B starts at zero: give the adapter weights that change the model
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    adapter_dir = root / "adapter"
    peft_model.save_pretrained(adapter_dir, safe_serialization=True)
    inputs = tokenizer(PROBE, return_tensors="pt")
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        logits = merged(**inputs).logits[0]
    pre, general = common.base_facts(common.read_identity(base_dir), None)
    return {
        "root": root,
        "base_dir": base_dir,
        "adapter_dir": adapter_dir,
        "merged": merged,
        "tokenizer": tokenizer,
        "inputs": inputs,
        "logits": logits,
        "pre": pre,
        "general": general,
        "lora": json.loads((adapter_dir / "adapter_config.json").read_text()),
    }


def write_merged(smollm2: dict[str, Any], quant: str) -> Path:
    path = smollm2["root"] / f"model.{quant}.gguf"
    if not path.exists():
        general = smollm2["general"] | {"general.name": "SmolLM2 test", "general.finetune": "v_test"}
        writer.write_model(
            smollm2["merged"], smollm2["tokenizer"], smollm2["base_dir"], path,
            quant=quant, general=general, pre=smollm2["pre"],
        )  # fmt: skip
    return path


def fields(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata key -> value, tensor name -> (shape, type name)) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(path)
    keys = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (tuple(int(n) for n in t.shape), t.tensor_type.name) for t in reader.tensors}
    return keys, tensors


@SLOW
def test_merged_gguf_matches_llama_cpps_smollm2_gguf_but_for_the_dtype(smollm2: dict[str, Any]) -> None:
    from loravc.base.model import embedded_gguf

    ours, our_tensors = fields(write_merged(smollm2, "f16"))
    theirs, their_tensors = fields(embedded_gguf())
    assert set(ours) == set(theirs)
    assert (ours["general.file_type"], theirs["general.file_type"]) == (1, 3)  # MOSTLY_F16 vs MOSTLY_Q4_1
    assert ours["general.finetune"] == "v_test" and ours["general.name"] == "SmolLM2 test"
    differ = {
        key for key in ours if not key.startswith("general.") and not np.array_equal(ours[key], theirs[key])
    }  # fmt: skip
    assert differ == set()  # every llama.* and tokenizer.* value: tokens, types, merges, ids, chat template
    assert len(ours["tokenizer.ggml.tokens"]) == 49152 and len(ours["tokenizer.ggml.merges"]) == 48900
    assert {name: shape for name, (shape, _) in our_tensors.items()} == {
        name: shape for name, (shape, _) in their_tensors.items()
    }
    assert {kind for name, (shape, kind) in our_tensors.items() if len(shape) == 1} == {"F32"}
    assert {kind for name, (shape, kind) in our_tensors.items() if len(shape) == 2} == {"F16"}


@SLOW
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_transformers_reads_the_gguf_back_as_the_merged_model(smollm2: dict[str, Any], quant: str) -> None:
    """Top-1 token at every position and logits within the stated bound of the fp32 merged model; and, for F16,
    exactly the merged model with its matrices rounded to F16 (so the layout, q/k permutation included, is
    right)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = write_merged(smollm2, quant)
    read = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        got = read(**smollm2["inputs"]).logits[0]
    expected = smollm2["logits"]
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    relative = float((got - expected).abs().max() / expected.abs().max())
    assert relative <= checks.TOLERANCE[quant]
    assert relative > 1e-5  # a real rounding happened: the file is not F32

    if quant == "f16":  # the file is exactly the model with its matrices rounded (Q8_0 only quantizes differently)
        rounded = AutoModelForCausalLM.from_pretrained(smollm2["base_dir"], dtype=torch.float32)
        rounded.load_state_dict(smollm2["merged"].state_dict(), strict=False)
        with torch.no_grad():
            for param in rounded.parameters():
                if param.ndim == 2:
                    param.copy_(param.half().float())
            same = rounded(**smollm2["inputs"]).logits[0]
        assert float((got - same).abs().max()) <= 1e-4


@SLOW
def test_lora_gguf_applied_to_the_base_gguf_gives_the_merged_tensors(smollm2: dict[str, Any]) -> None:
    """W + alpha / r * B A, with W from the F16 base GGUF and A, B from the LoRA GGUF, equals the merged F16 GGUF's
    tensors within F16 rounding, in llama.cpp's layout (B's q/k rows permuted as the base's)."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM

    root, config = smollm2["root"], AutoConfig.from_pretrained(smollm2["base_dir"])
    lora_path, base_path = root / "adapter.gguf", root / "base.f16.gguf"
    general = smollm2["general"] | {"general.name": "lora"}
    pairs = writer.write_lora(smollm2["adapter_dir"], config, smollm2["lora"], lora_path, general)
    base = AutoModelForCausalLM.from_pretrained(smollm2["base_dir"])
    writer.write_model(
        base, smollm2["tokenizer"], smollm2["base_dir"], base_path, quant="f16", general=general, pre=smollm2["pre"]
    )
    lora = gguf.GGUFReader(lora_path)
    keys = {k: f.contents() for k, f in lora.fields.items()}
    assert (keys["general.type"], keys["adapter.type"], keys["adapter.lora.alpha"]) == ("adapter", "lora", 16.0)
    assert pairs == 240  # 30 layers x 4 projections x (A, B)
    tensors = {t.name: np.array(t.data) for t in lora.tensors}
    base_tensors = {t.name: np.array(t.data, dtype=np.float32) for t in gguf.GGUFReader(base_path).tensors}
    merged = {t.name: np.array(t.data, dtype=np.float32) for t in gguf.GGUFReader(write_merged(smollm2, "f16")).tensors}
    checked = 0
    for name in tensors:
        if not name.endswith(".lora_a"):
            continue
        target = name.removesuffix(".lora_a")
        a, b = tensors[name], tensors[f"{target}.lora_b"]
        assert a.shape[0] == b.shape[1] == 4  # rank; llama.cpp's scale is alpha / rank
        applied = base_tensors[target] + (16.0 / 4) * (b @ a)
        bound = 2 * 2.0**-11 * np.abs(merged[target]).max() + 1e-6  # both sides rounded to F16 once
        assert np.abs(applied - merged[target]).max() <= bound, target
        assert np.abs(base_tensors[target] - merged[target]).max() > bound  # the adapter changed this tensor
        checked += 1
    assert checked == 120

    # q/k permutation and layout against llama.cpp's own file: the base weights are the Q4_1 file's, dequantized
    from loravc.base.model import embedded_gguf

    theirs = {t.name: t for t in gguf.GGUFReader(embedded_gguf()).tensors}
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.29.attn_q.weight", "blk.29.attn_k.weight"):
        dequantized = gguf.quants.dequantize(theirs[name].data, theirs[name].tensor_type)
        assert np.abs(base_tensors[name] - dequantized).max() <= 2.0**-11 * np.abs(dequantized).max(), name

    # an adapter saved in bf16 (the gpu profile's) is written with the same values
    from safetensors.torch import load_file, save_file

    bf16_dir = root / "adapter-bf16"
    bf16_dir.mkdir()
    weights = load_file(smollm2["adapter_dir"] / "adapter_model.safetensors")
    save_file({k: v.bfloat16() for k, v in weights.items()}, bf16_dir / "adapter_model.safetensors")
    writer.write_lora(bf16_dir, config, smollm2["lora"], root / "bf16.gguf", general)
    bf16 = {t.name: np.array(t.data) for t in gguf.GGUFReader(root / "bf16.gguf").tensors}
    a = weights["base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight"].bfloat16().float().numpy()
    assert np.array_equal(bf16["blk.0.attn_v.weight.lora_a"], a)


def test_what_the_writer_does_not_support_is_refused() -> None:
    from transformers import GPT2Config, LlamaConfig

    with pytest.raises(UserError, match="GGUF export supports LlamaForCausalLM; this base is GPT2LMHeadModel"):
        writer.check_writable(GPT2Config(architectures=["GPT2LMHeadModel"]))
    llama = LlamaConfig(architectures=["LlamaForCausalLM"])
    assert writer.check_writable(llama, {"use_dora": False, "modules_to_save": None, "bias": "none"}) == "llama"
    with pytest.raises(UserError, match=r"adapters with use_dora \(llama.cpp .* use --format peft"):
        writer.check_writable(llama, {"use_dora": True})
    with pytest.raises(UserError, match="adapters with modules_to_save"):
        writer.check_writable(llama, {"modules_to_save": ["embed_tokens"]})

    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    sentencepiece_like = Tokenizer(models.BPE(vocab={"▁a": 0, "<0x41>": 1}, merges=[], byte_fallback=True))
    sentencepiece_like.decoder = decoders.Metaspace()
    with pytest.raises(UserError, match="supports byte-level BPE tokenizers"):
        writer.add_tokenizer(None, PreTrainedTokenizerFast(tokenizer_object=sentencepiece_like), Path("."), 2, "x")


def test_modelfile_translates_chatml_to_ollamas_go_template() -> None:
    from loravc.data.labels import SMOLLM2_CHATML

    chat = ollama.modelfile("model.f16.gguf", chat=True, chat_template=SMOLLM2_CHATML, eos="<|im_end|>")
    assert chat.splitlines()[0] == "FROM ./model.f16.gguf"
    assert '{{- range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}' in chat
    assert "{%" not in chat  # no Jinja left
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in chat
    assert 'PARAMETER stop "<|im_end|>"' in chat and 'PARAMETER stop "<|im_start|>"' in chat
    raw = ollama.modelfile("model.f16.gguf", chat=False, chat_template=SMOLLM2_CHATML, eos="<|endoftext|>")
    assert 'TEMPLATE """{{ .Prompt }}"""' in raw and "SYSTEM" not in raw
    qwen = (  # Qwen2.5's: the system branch built from the message first, the default with escaped newlines
        "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
        "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
        "helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    )
    assert ollama.default_system(qwen) == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert ollama.default_system("{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>' }}") is None
    lora = ollama.modelfile("base.f16.gguf", chat=False, chat_template=None, eos=None, adapter="adapter.gguf")
    assert lora.splitlines()[:2] == ["FROM ./base.f16.gguf", "ADAPTER ./adapter.gguf"]
    other = ollama.modelfile("m.gguf", chat=True, chat_template="{{ '[INST]' }}", eos="</s>")
    assert "TEMPLATE" not in other.replace("# TEMPLATE", "") and 'PARAMETER stop "</s>"' in other


def loravc(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`loravc -C repo ARGS` in its own process, offline (tests/test_quiet_runs.py reads its stderr)."""
    return run([sys.executable, "-m", "loravc", "-C", str(repo), *args], REPO, check=False)


def main(args: list[str]) -> None:
    from loravc.cli.main import main as cli_main

    cli_main(args)


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one `error:` line `loravc` prints for arguments it refuses (exit 2), run in this process."""
    from loravc.cli.main import run

    with pytest.raises(SystemExit) as stopped:
        run(list(args))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "error: " in err.splitlines()[-1]
    return err


def test_cli_exports_a_tiny_version_and_never_overwrites(
    versions_repo: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(versions_repo["repo"])
    target = tmp_path / "gguf"
    done = loravc(Path(repo), "export", "HEAD", str(target), "--format", "gguf", "--tokenizer-pre", "gpt2")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == ["Modelfile", "README.md", "model.f16.gguf", "version.json"]
    assert "read back by transformers: top-1 token" in done.stdout
    record = json.loads((target / "version.json").read_text())
    assert record["format"] == "gguf" and record["logits_check"]["relative_difference"] <= 1e-2
    assert 'gguf_file="model.f16.gguf"' in (target / "README.md").read_text()
    lora, base = tmp_path / "lora", tmp_path / "base"
    main(["-C", repo, "export", "HEAD", str(lora), "--format", "gguf-lora"])
    assert sorted(p.name for p in lora.iterdir()) == ["Modelfile", "README.md", "adapter.gguf", "version.json"]
    assert (lora / "Modelfile").read_text().splitlines()[:2] == ["FROM ./base.f16.gguf", "ADAPTER ./adapter.gguf"]
    main(["-C", repo, "export", "HEAD", str(base), "--format", "gguf-lora", "--base-only", "--tokenizer-pre", "gpt2"])
    assert sorted(p.name for p in base.iterdir()) == ["Modelfile", "README.md", "base.f16.gguf", "version.json"]
    assert "library_name: gguf" in (lora / "README.md").read_text() and "base/" not in (lora / "README.md").read_text()
    assert "F32" in refused(capsys, "-C", repo, "export", "HEAD", str(tmp_path / "q"), "--format", "gguf-lora",
                            "--type", "q8_0")  # fmt: skip
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    again = refused(capsys, "-C", repo, "export", "HEAD", str(target), "--format", "gguf-lora")
    assert "already exists" in again
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
    assert "--tokenizer-pre" in refused(capsys, "-C", repo, "export", "HEAD", str(tmp_path / "x"), "--format", "gguf")
    assert not (tmp_path / "x").exists()
    mixed = refused(capsys, "-C", repo, "export", "HEAD", str(tmp_path / "y"), "--type", "q8_0")
    assert "go with --format gguf" in mixed
    assert "invalid choice: 'onnx'" in refused(capsys, "-C", repo, "export", "HEAD", "--format", "onnx")
