"""Format `merged` (and `loravc merge`): the adapter merged into its base, a standalone transformers model.

The directory holds the merged weights (safetensors), the tokenizer, metadata.json (the merge's record) and
README.md (the card). Before anything is written, the merged model's logits on a probe sentence must match
base + adapter within MERGE_TOLERANCE; the measured difference goes into the record. A version trained on a
k-bit base (QLoRA) merges into the full-precision base, and the record says so (`trained_on_bits`).
"""

from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.metadata import METADATA_FILE, utc_now
from loravc.export.card import version_card
from loravc.export.staging import Exported, Job, Options, Staged, refuse_existing, stage
from loravc.export.use import load
from loravc.versions.catalogue import Version, Versions

MERGE_TOLERANCE = 1e-4  # max |logit difference| between merged weights and base + adapter (fp32)


def directory_name(version: Version, options: Options) -> str:
    return f"{version.version_id or version.short}-merged"


def merge(versions: Versions, version: Version, dest: Path, device: str = "cpu") -> dict[str, Any]:
    """Merge the adapter into the base and save it in the new directory `dest`; returns the merge's record."""
    return write(Job(versions, version, dest, device=device)).record


def write(job: Job) -> Exported:
    import torch

    from loravc.core.base_files import save_tokenizer
    from loravc.evaluate.evaluation import PROBE_TEXT

    version, dest = job.version, job.dest
    refuse_existing(dest)
    card = version_card(version, merged=True, directory=str(dest))
    model, tokenizer = load(job.versions, version, job.device, quantized=False)  # k-bit weights do not merge exactly
    quantized = (version.metadata.training.quantization if version.metadata else None) or {}
    inputs = tokenizer(PROBE_TEXT, return_tensors="pt").to(next(model.parameters()).device)
    with torch.no_grad():
        expected = model(**inputs).logits
        merged = model.merge_and_unload()
        got = merged(**inputs).logits
    difference = float((expected - got).abs().max())
    if not difference <= MERGE_TOLERANCE:
        raise UserError(f"merged logits differ from base + adapter by {difference:.3g} > {MERGE_TOLERANCE}: not saved")

    def fill(out: Path) -> Staged:
        merged.save_pretrained(out, safe_serialization=True)
        save_tokenizer(tokenizer, out)
        record = {
            "merged_from": version.provenance(),
            "merged": utc_now().isoformat(),
            "logits_check": {"max_abs_difference": difference, "tolerance": MERGE_TOLERANCE, "probe": PROBE_TEXT},
            "base": "float32",  # the dtype the merged weights are saved in
            "trained_on_bits": quantized.get("bits"),  # QLoRA: the k-bit base it trained on; None: this one
            "version": version.metadata.to_dict() if version.metadata else None,
        }
        return Staged(card, record, METADATA_FILE)

    record = stage(dest, fill)
    return Exported(dest, record, summary(record, str(dest)))


def summary(record: dict[str, Any], dest: str) -> str:
    """What `loravc merge` (and `export --format merged`) prints: the version, the base, the logits check."""
    source, check = record["merged_from"], record["logits_check"]
    bits = record.get("trained_on_bits")
    into = f"its full-precision base (it trained on the {bits}-bit one)" if bits else "its base"
    return (
        f"merged {source['version_id']} ({source['rev'][:7]}) into {into} -> {dest}\n"
        f"logits match base + adapter: max |difference| {check['max_abs_difference']:.2e} "
        f"<= {check['tolerance']:.0e}"
    )
