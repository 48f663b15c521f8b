"""Using a version: load it (base + adapter on one device), export it, merge it, generate with it."""

import json
import shutil
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.metadata import utc_now, write_json
from loravc.data.records import CHAT_SHAPES
from loravc.versions.cache import scratch_dir
from loravc.versions.catalogue import Version, Versions
from loravc.versions.refs import check_ref

EXPORT_DIR = "model_versions"  # git-ignored home of exported versions
MERGE_TOLERANCE = 1e-4  # max |logit difference| between merged weights and base + adapter (fp32)


def load(versions: Versions, version: Version, device: str = "cpu", *, quantized: bool = True) -> tuple[Any, Any]:
    """(PeftModel, tokenizer) of a version on one device; a missing device is a clear error up front. A version
    trained on a k-bit base loads on that base quantized the same way (`quantized=False`: full precision)."""
    from loravc.core.devices import resolve_device
    from loravc.evaluate.evaluation import load_base_and_adapter

    resolved = resolve_device(device, "device")
    base_dir, adapter_dir = versions.directories(version)
    return load_base_and_adapter(base_dir, adapter_dir, resolved, quantized=quantized)


def load_version(ref: str, device: str = "cpu", repo: str | Path = ".") -> tuple[Any, Any]:
    """(model, tokenizer) of the version `ref` names, adapter applied, model on `device`.

    `ref` is a git revision, branch, tag, experiment name, version id (`v_...`) or registry
    reference (`lora-adapter@v1.2.0`, `lora-adapter#prod`). Reads from DVC's cache (fetching
    from the remote if needed) and never touches the workspace. `model.disable_adapter()` is a
    context manager that gives the base model back.
    """
    check_ref(ref)
    with Versions(repo) as versions:
        return load(versions, versions.resolve(ref), device)


def export(versions: Versions, version: Version, dest: Path | None = None) -> Path:
    """Copy a version's adapter directory to its own directory, loadable by PEFT from anywhere.

    Besides the adapter's files (metadata.json included) it holds version.json (revision, DVC hashes) and
    README.md (the model card). Its adapter_config.json names the base so that
    `AutoPeftModelForCausalLM.from_pretrained(dir)` loads the very base the version was trained on: a hub
    base by id and revision; any other (the embedded GGUF build, a local directory) is copied into `base/`
    and named by that directory's absolute path. The directory appears whole or not at all; an existing
    one is refused. The version in DVC's cache is only read.
    """
    from loravc.export.card import version_card
    from loravc.train.card import BASE_DIR, HUB, base_kind

    target = dest or versions.root / EXPORT_DIR / str(version.version_id)
    if target.exists():
        raise UserError(f"{target} already exists: choose another directory (nothing was overwritten)")
    card = version_card(version, directory=str(target))
    assert version.metadata is not None  # version_card refuses a version without one
    hub = base_kind(version.metadata.base_model) == HUB
    if not hub and version.pins.base is None:
        raise UserError(f"{version.short}: dvc.lock names no base model for stage `train`: nothing to ship with it")
    scratch = scratch_dir(target)
    try:
        staged = scratch / "export"  # filled, then renamed into place
        versions.materialize(version, version.pins.adapter, dest=staged)
        identity = version.metadata.base_model
        if hub:
            base = {"base_model_name_or_path": identity["id"], "revision": identity.get("revision")}
        else:
            assert version.pins.base is not None
            versions.materialize(version, version.pins.base, dest=staged / BASE_DIR)
            base = {"base_model_name_or_path": str(target.resolve() / BASE_DIR), "revision": None}
        config_file = staged / "adapter_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) | base
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (staged / "README.md").write_text(card, encoding="utf-8")
        source = version.provenance() | {"exported": utc_now().isoformat(), "adapter_config": base}
        (staged / "version.json").write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # made while this export ran
            raise UserError(f"{target} already exists: choose another directory (nothing was overwritten)")
        staged.rename(target)
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror or err}; nothing was written") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def merge(versions: Versions, version: Version, dest: Path, device: str = "cpu") -> dict[str, Any]:
    """Merge the adapter into the base and save it (safetensors, tokenizer, metadata.json, README.md: the card).

    Before saving, the merged model's logits on a probe sentence must match base + adapter within
    MERGE_TOLERANCE; the measured difference goes into the metadata. A version trained on a k-bit base
    (QLoRA) merges into the full-precision base, and the record says so (`base`).
    """
    import torch

    from loravc.core.base_files import save_tokenizer
    from loravc.evaluate.evaluation import PROBE_TEXT
    from loravc.export.card import version_card

    if dest.exists():
        raise UserError(f"{dest} already exists: choose another directory (nothing was overwritten)")
    card = version_card(version, merged=True, directory=str(dest))
    model, tokenizer = load(versions, version, device, quantized=False)  # k-bit weights do not merge exactly
    quantized = (version.metadata.training.quantization if version.metadata else None) or {}
    inputs = tokenizer(PROBE_TEXT, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        expected = model(**inputs).logits
        merged = model.merge_and_unload()
        got = merged(**inputs).logits
    difference = float((expected - got).abs().max())
    if not difference <= MERGE_TOLERANCE:
        raise UserError(f"merged logits differ from base + adapter by {difference:.3g} > {MERGE_TOLERANCE}: not saved")
    scratch = scratch_dir(dest)
    try:
        merged.save_pretrained(scratch, safe_serialization=True)
        save_tokenizer(tokenizer, scratch)
        record = {
            "merged_from": version.provenance(),
            "merged": utc_now().isoformat(),
            "logits_check": {"max_abs_difference": difference, "tolerance": MERGE_TOLERANCE, "probe": PROBE_TEXT},
            "base": "float32",  # the dtype the merged weights are saved in
            "trained_on_bits": quantized.get("bits"),  # QLoRA: the k-bit base it trained on; None: this one
            "version": version.metadata.to_dict() if version.metadata else None,
        }
        write_json(scratch, record)
        (scratch / "README.md").write_text(card, encoding="utf-8")
        scratch.rename(dest)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return record


def generate(
    versions: Versions, version: Version, prompt: str, max_new_tokens: int, device: str = "cpu", raw: bool = False
) -> tuple[bool, str]:
    """(whether it was a chat, the version's greedy reply or continuation). A version trained on conversations
    gets `prompt` as a user message through its chat template, unless `raw`."""
    from loravc.data.labels import chat_prompt
    from loravc.evaluate.evaluation import generate as greedy

    shape = version.metadata.data.shape if version.metadata else None
    chat = not raw and shape in CHAT_SHAPES
    model, tokenizer = load(versions, version, device)
    text = chat_prompt(prompt, tokenizer) if chat else prompt
    return chat, greedy(model, tokenizer, [text], max_new_tokens, templated=chat)[0]
