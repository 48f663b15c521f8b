"""Format `peft`: a version's adapter directory on its own, loadable by PEFT from anywhere.

Besides the adapter's files (metadata.json included) it holds version.json (revision, DVC hashes) and
README.md (the model card). Its adapter_config.json names the very base the version was trained on: a hub
base pinned to a revision by id and revision; any other (the embedded GGUF build, a local directory, a hub
id at no pinned revision) is copied into `base/` and named `./base`. PEFT and transformers resolve a local
base against the working directory and nowhere else, so no name survives a move from every directory: the
relative one loads from the export's own directory wherever it is copied or moved, never depends on the
directory it was exported to, and, not being a valid hub id, never reaches the network. The model card says
how to load it from anywhere else (PeftModel on `base/`). The version in DVC's cache is only read.
"""

import json
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.core.metadata import utc_now
from loravc.export.card import SHIPPED_BASE, ships_base, version_card
from loravc.export.staging import Exported, Job, Options, Staged, default_target, refuse_existing, stage
from loravc.versions.catalogue import Version, Versions


def directory_name(version: Version, options: Options) -> str:
    return str(version.version_id)


def export(versions: Versions, version: Version, dest: Path | None = None) -> Path:
    """Export a version's adapter directory to `dest` (default: model_versions/v_<id>); returns where it is.
    The directory appears whole or not at all; an existing one is refused."""
    target = dest or default_target(versions, directory_name(version, Options()))
    return write(Job(versions, version, target)).target


def write(job: Job) -> Exported:
    from loravc.train.card import BASE_DIR

    version, target = job.version, job.dest
    refuse_existing(target)
    card = version_card(version, directory=str(target))
    assert version.metadata is not None  # version_card refuses a version without one
    identity = version.metadata.base_model
    ships = ships_base(identity)
    if ships and version.pins.base is None:
        raise UserError(f"{version.short}: dvc.lock names no base model for stage `train`: nothing to ship with it")

    def fill(out: Path) -> Staged:
        job.versions.materialize(version, version.pins.adapter, dest=out)
        if ships:
            assert version.pins.base is not None
            job.versions.materialize(version, version.pins.base, dest=out / BASE_DIR)
            base = {"base_model_name_or_path": SHIPPED_BASE, "revision": None}
        else:
            base = {"base_model_name_or_path": identity["id"], "revision": identity["revision"]}
        _name_base(out / "adapter_config.json", base)
        return Staged(card, version.provenance() | {"exported": utc_now().isoformat(), "adapter_config": base})

    return Exported(target, stage(target, fill), _summary(target, identity, ships))


def _summary(target: Path, identity: dict[str, Any], ships: bool) -> str:
    if ships:
        return (
            f"the base ships in base/, named {SHIPPED_BASE} (from the working directory): "
            f"AutoPeftModelForCausalLM loads it in {target}; from elsewhere, as its README.md says"
        )
    return f"the base is {identity['id']} at revision {identity['revision']} on the hub"


def _name_base(config_file: Path, base: dict[str, Any]) -> None:
    """adapter_config.json with the base named as `base` says (in the version: models/base, inside the repo)."""
    config = json.loads(config_file.read_text(encoding="utf-8")) | base
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
