"""A committed version's model card: `loravc card`, and README.md of every export and merge.

The text is loravc.train.card's (the train stage writes the same card into each version); this adds
what a version has once committed: its commit, names, DVC hash and the evaluate stage's metrics.
"""

from typing import Any

from loravc.core.errors import UserError
from loravc.train.card import Committed, card_text
from loravc.versions.catalogue import Version


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
    return card_text(meta, done, merged=merged, gguf=gguf, directory=directory, how_to_load=how_to_load)


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
