"""Exports: a plain PEFT call loads them from any directory, on the exact base; the card; nothing overwritten.

The versions are the tiny ones of `versions_repo` (conftest), whose base is a local directory; a hub base
is checked by what the export writes (no network here).
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import sha256_tree
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from loravc.core.errors import UserError
from loravc.export.adapter import export
from loravc.export.use import load_version
from loravc.versions.catalogue import Versions

PROBE = "When a class definition is executed,"
HUB_BASE = {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "source": "HuggingFaceTB/SmolLM2-135M-Instruct"}
HUB_BASE["revision"] = "12fd25f77366fa6b3b4b768ec3050bf629380bac"

# Another process, another working directory, no hub: AutoPeftModelForCausalLM on the export as written,
# then the card's snippet on the same directory moved elsewhere.
LOAD = f"""
import shutil, sys
from pathlib import Path
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

export, moved, out = (Path(arg) for arg in sys.argv[1:])
ids = AutoTokenizer.from_pretrained(export)({PROBE!r}, return_tensors="pt")
with torch.no_grad():
    direct = AutoPeftModelForCausalLM.from_pretrained(export).eval()(**ids).logits
    shutil.move(export, moved)
    base = AutoModelForCausalLM.from_pretrained(moved / "base")
    after_move = PeftModel.from_pretrained(base, moved).eval()(**ids).logits
save_file({{"direct": direct.contiguous(), "moved": after_move.contiguous()}}, out)
"""


def test_an_export_loads_with_plain_peft_from_anywhere(versions_repo: dict, tmp_path: Path) -> None:
    repo = versions_repo["repo"]
    with Versions(repo) as versions:
        version = versions.resolve("lora-adapter#prod")
        cached = versions.materialize(version, version.pins.adapter)
        before = sha256_tree(cached)
        target = export(versions, version, tmp_path / "exports" / "prod")
        assert sha256_tree(cached) == before  # the version's own files are only read
        versions.cache.check(version.rev, version.pins.adapter, cached)
    config = json.loads((target / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == (str(target.resolve() / "base"), None)
    assert json.loads((cached / "adapter_config.json").read_text())["base_model_name_or_path"] == "models/base"
    assert json.loads((target / "base" / "base.json").read_text()) == version.metadata.base_model  # the exact base
    recorded = json.loads((target / "version.json").read_text())
    assert (recorded["rev"], recorded["adapter_config"]) == (
        version.rev,
        {k: config[k] for k in ("base_model_name_or_path", "revision")},
    )
    card = ModelCard((target / "README.md").read_text())
    assert card.data.library_name == "peft" and version.version_id in card.data.tags
    assert f'directory = "{target}"' in card.text and "PeftModel.from_pretrained(base, directory)" in card.text

    model, tokenizer = load_version("lora-adapter#prod", repo=repo)
    with torch.no_grad():
        expected = model(**tokenizer(PROBE, return_tensors="pt")).logits
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "logits.pt"
    elsewhere.mkdir()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    moved = tmp_path / "moved" / "copy"
    subprocess.run([sys.executable, "-c", LOAD, str(target), str(moved), str(out)], cwd=elsewhere, env=env, check=True)
    got = load_file(out)  # safetensors: no pickle
    assert got["direct"].shape == expected.shape
    assert torch.allclose(got["direct"], expected, atol=1e-5, rtol=0)
    assert torch.allclose(got["moved"], expected, atol=1e-5, rtol=0)


def test_a_hub_base_is_named_by_id_and_revision(versions_repo: dict, tmp_path: Path) -> None:
    with Versions(versions_repo["repo"]) as versions:
        version = versions.resolve("main")
        assert version.metadata is not None
        version.metadata.base_model = dict(HUB_BASE)  # as the base stage records a hub id
        target = export(versions, version, tmp_path / "hub")
    config = json.loads((target / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == (HUB_BASE["id"], HUB_BASE["revision"])
    assert not (target / "base").exists()
    card = ModelCard((target / "README.md").read_text())
    assert (card.data.base_model, card.data.license) == (HUB_BASE["id"], "apache-2.0")
    assert f"at revision `{HUB_BASE['revision']}`" in card.text


def test_a_refused_or_failed_export_writes_nothing(versions_repo: dict, tmp_path: Path, monkeypatch) -> None:
    exports = tmp_path / "exports"
    (exports / "taken").mkdir(parents=True)
    (exports / "taken" / "mine.txt").write_text("keep")
    with Versions(versions_repo["repo"]) as versions:
        version = versions.resolve("main")
        with pytest.raises(UserError, match="already exists: choose another directory"):
            export(versions, version, exports / "taken")
        no_base = dataclasses.replace(version, pins=dataclasses.replace(version.pins, base=None))
        with pytest.raises(UserError, match="names no base model"):
            export(versions, no_base, exports / "new")
        materialize = versions.materialize

        def fail_on_the_base(v, out, dest=None):  # the adapter copies, then the base fails
            if out == version.pins.base:
                raise UserError("damaged base")
            return materialize(v, out, dest)

        monkeypatch.setattr(versions, "materialize", fail_on_the_base)
        with pytest.raises(UserError, match="damaged base"):
            export(versions, version, exports / "new")
    assert [p.name for p in exports.iterdir()] == ["taken"]  # no partial directory, no scratch left
    assert [p.name for p in (exports / "taken").iterdir()] == ["mine.txt"]
    assert (exports / "taken" / "mine.txt").read_text() == "keep"
