"""Using a version: load it (base + adapter on one device), generate with it. Exports: loravc.export.formats."""

from pathlib import Path
from typing import Any

from loravc.data.records import CHAT_SHAPES
from loravc.versions.catalogue import Version, Versions
from loravc.versions.refs import check_ref


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
