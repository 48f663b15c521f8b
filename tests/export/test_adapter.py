"""Exports: plain PEFT loads them on the exact base, moved or copied, with no repository; the card; nothing
overwritten.

The versions are the tiny ones of `versions_repo` (conftest), whose base is a local directory; a hub base
is checked by what the export writes (no network here).
"""

import dataclasses
import json
import os
import shutil
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

# Another process, no hub, the repository gone: the export moved out of it and a copy of that, loaded with
# AutoPeftModelForCausalLM (and transformers' own adapter loading) from the export's directory, with the card's
# PeftModel snippet from another one, where AutoPeftModelForCausalLM fails on the relative name and loads nothing.
LOAD = f"""
import os, sys
from pathlib import Path
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

moved, copied, elsewhere, out = (Path(arg) for arg in sys.argv[1:])
ids = AutoTokenizer.from_pretrained(moved)({PROBE!r}, return_tensors="pt")
logits = {{}}
with torch.no_grad():
    os.chdir(moved)
    logits["auto_peft"] = AutoPeftModelForCausalLM.from_pretrained(".").eval()(**ids).logits
    logits["transformers"] = AutoModelForCausalLM.from_pretrained(".").eval()(**ids).logits
    os.chdir(copied)
    logits["copy"] = AutoPeftModelForCausalLM.from_pretrained(str(copied)).eval()(**ids).logits
    os.chdir(elsewhere)
    base = AutoModelForCausalLM.from_pretrained(copied / "base")
    logits["peft_model"] = PeftModel.from_pretrained(base, copied).eval()(**ids).logits
    try:
        AutoPeftModelForCausalLM.from_pretrained(copied)
    except OSError as err:
        print(f"refused: {{err}}")
save_file({{name: value.contiguous() for name, value in logits.items()}}, out)
"""


def test_a_moved_or_copied_export_loads_with_plain_peft_and_no_repository(versions_repo: dict, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(versions_repo["repo"], repo, symlinks=True)  # a repository to delete afterwards
    with Versions(repo) as versions:
        version = versions.resolve("lora-adapter#prod")
        cached = versions.materialize(version, version.pins.adapter)
        before = sha256_tree(cached)
        target = export(versions, version)  # model_versions/v_<id>/, inside the repository
        assert sha256_tree(cached) == before  # the version's own files are only read
        versions.cache.check(version.rev, version.pins.adapter, cached)
    assert target.parent == repo / "model_versions"
    config = json.loads((target / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == ("./base", None)
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
    assert 'AutoPeftModelForCausalLM.from_pretrained(".")' in card.text

    model, tokenizer = load_version("lora-adapter#prod", repo=repo)
    with torch.no_grad():
        expected = model(**tokenizer(PROBE, return_tensors="pt")).logits
    moved, copied, elsewhere = tmp_path / "moved" / "prod", tmp_path / "copied" / "prod", tmp_path / "elsewhere"
    moved.parent.mkdir()
    elsewhere.mkdir()
    shutil.move(target, moved)
    shutil.copytree(moved, copied)
    shutil.rmtree(repo)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    out = tmp_path / "logits.safetensors"
    args = [sys.executable, "-c", LOAD, str(moved), str(copied), str(elsewhere), str(out)]
    result = subprocess.run(args, cwd=elsewhere, env=env, check=True, capture_output=True, text=True)
    assert "refused: Repo id must use alphanumeric chars" in result.stdout and "'./base'" in result.stdout
    got = load_file(out)  # safetensors: no pickle
    assert sorted(got) == ["auto_peft", "copy", "peft_model", "transformers"]
    for name, logits in got.items():
        assert logits.shape == expected.shape, name
        assert torch.allclose(logits, expected, atol=1e-5, rtol=0), name


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


def test_a_hub_base_at_no_pinned_revision_ships_like_a_local_one(versions_repo: dict, tmp_path: Path) -> None:
    with Versions(versions_repo["repo"]) as versions:
        version = versions.resolve("main")
        assert version.metadata is not None
        version.metadata.base_model = HUB_BASE | {"revision": None}  # the hub's `main` may have moved since
        target = export(versions, version, tmp_path / "unpinned")
    config = json.loads((target / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == ("./base", None)
    assert (target / "base" / "config.json").is_file()
    assert 'AutoPeftModelForCausalLM.from_pretrained(".")' in (target / "README.md").read_text()


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
