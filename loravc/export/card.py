"""A committed version's model card: `loravc card`, and README.md of every export and merge.

The text is loravc.train.card's (the train stage writes the same card into each version); this adds
what a version has once committed: its commit, names, DVC hash and the evaluate stage's metrics, and how an
export that ships its base (`ships_base`) loads.
"""

from typing import Any

from loravc.core.errors import UserError
from loravc.train.card import BASE_DIR, HUB, Committed, base_kind, card_text, in_repository, peft_load_code
from loravc.versions.catalogue import Version

SHIPPED_BASE = f"./{BASE_DIR}"  # how an export's adapter_config.json names the base it ships: relative to itself


def version_card(
    version: Version,
    *,
    merged: bool = False,
    gguf: bool = False,
    directory: str | None = None,
    how_to_load: str | None = None,
) -> str:
    """The model card (markdown with a YAML header) of a version, from its own records (metadata, metrics, pins).

    `merged`: the card of `loravc merge`'s directory (a plain transformers model) rather than of the adapter.
    `gguf`: the card of a GGUF export (`loravc export --format gguf|gguf-lora`; no base shipped).
    `directory`: the path the loading snippet names (default: where `loravc export` puts the version).
    `how_to_load`: that section's text for files other than PEFT's or transformers' (GGUF).
    """
    meta = version.metadata
    if meta is None:
        raise UserError(version.error or f"{version.short}: its metadata.json could not be read, so it has no card")
    done = committed(version)
    if how_to_load is None and not (merged or gguf) and ships_base(meta.base_model):
        how_to_load = shipped_load_text(version, directory or f"model_versions/{meta.version_id}")
    return card_text(meta, done, merged=merged, gguf=gguf, directory=directory, how_to_load=how_to_load)


def ships_base(identity: dict[str, Any]) -> bool:
    """Whether an export carries the base in base/: every base but a hub id pinned to a revision (the embedded
    GGUF build and a local directory are on no hub; an unpinned hub id's `main` may have moved since)."""
    return base_kind(identity) != HUB or not identity.get("revision")


def shipped_load_text(version: Version, where: str) -> str:
    """The card's "How to load it" for an export that ships its base, named `./base` in adapter_config.json."""
    here = [
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        'model = AutoPeftModelForCausalLM.from_pretrained(".")',
        'tokenizer = AutoTokenizer.from_pretrained(".")',
    ]
    return "\n".join(
        [
            f"An export ships the exact base in `{BASE_DIR}/`, and its adapter_config.json names it "
            f"`{SHIPPED_BASE}`. PEFT and transformers resolve that against the working directory, so from this "
            "directory, wherever it was copied or moved, and with no network:",
            "",
            "```python",
            *here,
            "```",
            "",
            "From any other directory, give PeftModel the base (from elsewhere, AutoPeftModelForCausalLM stops "
            f"with `Repo id must use alphanumeric chars ...: '{SHIPPED_BASE}'` and loads nothing):",
            "",
            "```python",
            *peft_load_code(where),
            "```",
            "",
            in_repository(version.version_id),
        ]
    )


def committed(version: Version) -> Committed:
    names = tuple(version.names("branch", "tag", "experiment", "registry", "stage")) if version.refs else ()
    adapter = f"`{version.pins.adapter.path}` (dvc md5 `{version.pins.adapter.md5}`)"
    return Committed(rev=version.rev, names=names, adapter=adapter, metrics=eval_metrics(version))


def eval_metrics(version: Version) -> dict[str, Any]:
    """The evaluate stage's metrics at the version's commit (unprefixed keys), if it ran on exactly this adapter."""
    if version.pins.eval_metrics is None or not version.evaluated:
        return {}
    prefix = version.pins.eval_metrics + ":"
    return {key.removeprefix(prefix): value for key, value in version.metrics.items() if key.startswith(prefix)}
