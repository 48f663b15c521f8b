"""The version library: find, resolve, read, load, export, merge, generate and verify versions.

All tests share `versions_repo` (three versions, built once); the ones that damage or strip a
cache work on their own `git clone` of it.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from loravc.core.errors import UserError
from loravc.core.metadata import VersionMetadata
from loravc.export.adapter import export
from loravc.export.merged import MERGE_TOLERANCE, merge
from loravc.export.use import load_version
from loravc.versions.catalogue import Version, Versions
from loravc.versions.inspection import compare, lora_facts
from loravc.versions.pins import Out, Pins
from loravc.versions.refs import Ref, check_ref
from loravc.versions.verify import verify
from tests.conftest import dvc, git, lora_rank_from_weights, sha256_tree


def workspace(repo: Path) -> tuple[str, dict[str, str], str]:
    """What a user sees: git status, every file under models/, and dvc.lock."""
    return git(repo, "status", "--porcelain"), sha256_tree(repo / "models"), (repo / "dvc.lock").read_text()


def clone(versions_repo: dict[str, Any], dest: Path, *, remote: bool = True) -> Path:
    """A fresh clone: no DVC cache, no experiment refs; optionally without access to the DVC remote."""
    git(dest.parent, "clone", "-q", str(versions_repo["repo"]), dest.name)
    if not remote:
        dvc(dest, "remote", "remove", "store")
    return dest


@pytest.mark.parametrize(
    "ref",
    ["--upload-pack=touch /tmp/pwned", "-n", "../../etc", "/etc/passwd", "a/../../b", "main:dvc.yaml", "HEAD@{1}",
     "main..exp", "with space", "", ".hidden", "x/", "refs/heads/main.lock"],
)  # fmt: skip
def test_bad_references_are_rejected_before_git_sees_them(ref: str, versions_repo: dict, monkeypatch) -> None:
    with pytest.raises(UserError, match="is not a version reference"):
        check_ref(ref)
    versions = Versions(versions_repo["repo"])

    def no_git(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"git was called with {args}")

    monkeypatch.setattr(versions.repo, "git", no_git)
    monkeypatch.setattr(versions.repo, "read_blobs", no_git)
    with pytest.raises(UserError, match="is not a version reference"):
        versions.resolve(ref)
    with pytest.raises(UserError, match="is not a version reference"):
        load_version(ref, repo=versions_repo["repo"])


@pytest.mark.parametrize(
    "ref",
    ["main", "HEAD~1", "97a8cef", "rank-two", "v_20261126_041912", "v_20261126_041912_a1b2c3", "lora-adapter@v1.2.0",
     "lora-adapter#prod"],
)  # fmt: skip
def test_good_references_pass_the_check(ref: str) -> None:
    assert check_ref(ref) == ref


def test_list_finds_every_version_without_touching_the_workspace(versions_repo: dict) -> None:
    repo = versions_repo["repo"]
    before = workspace(repo)
    found = Versions(repo).all
    assert workspace(repo) == before
    by_rev = {v.rev: v for v in found}
    assert set(by_rev) == {versions_repo["r8"], versions_repo["r4"], versions_repo["exp"]}
    r8, r4, exp = (by_rev[versions_repo[k]] for k in ("r8", "r4", "exp"))
    assert [v.row()["lora_r"] for v in (r8, r4, exp)] == [8, 4, 2]
    assert r4.names("branch") == ["main"] and exp.names("experiment") == ["rank-two"]
    assert {"lora-adapter@v1.2.0", "lora-adapter#prod"} <= set(r4.names("registry", "stage"))
    assert all(v.error is None and v.version_id.startswith("v_") for v in found)
    assert len({v.version_id for v in found}) == 3
    assert [v.metadata.created for v in found] == sorted((v.metadata.created for v in found), reverse=True)
    for v in found:  # metrics come from each revision, and belong to its own adapter
        assert v.test_perplexity == v.metrics["dvclive/evaluate/metrics.json:tuned_perplexity"] > 1
        assert v.row()["validation_loss"] == v.metadata.metrics.validation_loss


def test_every_kind_of_reference_resolves(versions_repo: dict) -> None:
    versions = Versions(versions_repo["repo"])
    r8, r4, exp = versions_repo["r8"], versions_repo["r4"], versions_repo["exp"]
    r8_id = next(v.version_id for v in versions.all if v.rev == r8)
    expected = {
        r8: r8,
        r8[:7]: r8,
        "main~1": r8,
        r8_id: r8,
        "main": r4,
        "HEAD": r4,
        "lora-adapter@v1.2.0": r4,
        "lora-adapter#prod": r4,
        "lora-adapter@latest": r4,
        "rank-two": exp,
    }
    for ref, commit in expected.items():
        assert versions.resolve(ref).rev == commit, ref


def test_unknown_version_names_the_nearest_and_how_to_list(versions_repo: dict) -> None:
    versions = Versions(versions_repo["repo"])
    with pytest.raises(UserError, match=r"no version 'rank-tow'.*nearest: rank-two.*loravc list"):
        versions.resolve("rank-tow")
    r8_id = next(v.version_id for v in versions.all if v.rev == versions_repo["r8"])
    typo = r8_id[:-1] + ("0" if r8_id[-1] != "0" else "1")
    with pytest.raises(UserError, match=rf"no version '{typo}'.*nearest: .*{r8_id}"):
        versions.resolve(typo)
    with pytest.raises(UserError, match=r"nearest: lora-adapter@v1\.2\.0"):
        versions.resolve("lora-adapter@v1.2.1")
    with pytest.raises(UserError, match="holds no trained adapter"):
        versions.resolve("main~2")  # the first commit: code only


def test_lora_facts_come_from_the_weights(versions_repo: dict) -> None:
    versions = Versions(versions_repo["repo"])
    result = compare(versions, versions.resolve("main~1"), versions.resolve("rank-two"))
    a, b = result["a"]["lora_weights"], result["b"]["lora_weights"]
    assert a["ranks"] == [8] and b["ranks"] == [2]
    assert a["rank_per_target"] == {m: [8] for m in ("k_proj", "o_proj", "q_proj", "v_proj")}
    assert a["modules"] == 8 and a["alpha"] == 16 and a["scaling"] == [2.0] and b["scaling"] == [8.0]
    # hidden size 16: each module's A (r x 16) and B (16 x r) hold 32 r parameters
    assert a["trainable_parameters"] == 8 * 32 * 8 == result["a"]["metadata"]["lora"]["trainable_parameters"]
    assert b["trainable_parameters"] == 8 * 32 * 2
    assert result["params"]["train.lora.r"] == [8, 2]
    ppl = "dvclive/evaluate/metrics.json:tuned_perplexity"
    assert result["metrics"][ppl] == [result["a"]["test_perplexity"], result["b"]["test_perplexity"]]
    adapter = versions.materialize(versions.resolve("main~1"), versions.resolve("main~1").pins.adapter)
    assert lora_rank_from_weights(adapter) == set(lora_facts(adapter)["ranks"])


def test_load_version_puts_the_adapter_on_one_device_and_leaves_the_workspace(versions_repo: dict) -> None:
    repo = versions_repo["repo"]
    before = workspace(repo)
    model, tokenizer = load_version("rank-two", device="cpu", repo=repo)
    assert workspace(repo) == before
    assert model.peft_config["default"].r == 2
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    ids = tokenizer("The assert statement", return_tensors="pt")
    with torch.no_grad():
        tuned = model(**ids).logits
        with model.disable_adapter():
            base = model(**ids).logits
    assert torch.isfinite(tuned).all() and not torch.equal(tuned, base)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_missing_device_is_a_clear_error(versions_repo: dict) -> None:
    with pytest.raises(UserError, match="device is 'cuda' but no CUDA device is visible"):
        load_version("main", device="cuda", repo=versions_repo["repo"])


def test_export_writes_its_own_directory_once(versions_repo: dict) -> None:
    repo = versions_repo["repo"]
    versions = Versions(repo)
    version = versions.resolve("lora-adapter#prod")
    target = export(versions, version)
    assert target == repo / "model_versions" / version.version_id
    files = sha256_tree(target)
    recorded = sha256_tree(versions.materialize(version, version.pins.adapter))
    # the card, and the base named (tests/export/test_adapter.py)
    rewritten = {"version.json", "README.md", "adapter_config.json"}
    assert {k: v for k, v in files.items() if k not in rewritten and not k.startswith("base/")} == {
        k: v for k, v in recorded.items() if k not in rewritten
    }
    shipped = {k.removeprefix("base/"): v for k, v in files.items() if k.startswith("base/")}
    assert rewritten | set(recorded) == set(files) - {f"base/{k}" for k in shipped}
    assert shipped == sha256_tree(versions.materialize(version, version.pins.base))  # the tiny base: a local dir
    assert json.loads((target / "metadata.json").read_text())["version_id"] == version.version_id
    assert json.loads((target / "version.json").read_text())["rev"] == version.rev
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    assert git(repo, "status", "--porcelain", "model_versions") == ""  # git-ignored
    with pytest.raises(UserError, match="already exists"):
        export(versions, versions.resolve("main~1"), target)
    assert sha256_tree(target) == files


def test_merged_model_matches_base_plus_adapter(versions_repo: dict, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    repo = versions_repo["repo"]
    versions = Versions(repo)
    record = merge(versions, versions.resolve("main~1"), tmp_path / "merged")
    merged_dir = tmp_path / "merged"
    assert record["logits_check"]["max_abs_difference"] <= MERGE_TOLERANCE
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "tokenizer.json").is_file()
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in merged_dir.iterdir())
    meta = json.loads((merged_dir / "metadata.json").read_text())
    assert meta["merged_from"]["rev"] == versions_repo["r8"] and meta["version"]["lora"]["r"] == 8
    card = ModelCard((merged_dir / "README.md").read_text())  # the card of a plain transformers model
    assert card.data.library_name == "transformers" and {"merged", meta["version"]["version_id"]} <= set(card.data.tags)
    assert f'AutoModelForCausalLM.from_pretrained("{merged_dir}")' in card.text

    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    adapted, _ = load_version("main~1", repo=repo)
    ids = tokenizer("When a class definition is executed,", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**ids).logits, adapted(**ids).logits, atol=MERGE_TOLERANCE, rtol=0)
    with pytest.raises(UserError, match="already exists"):
        merge(versions, versions.resolve("main"), merged_dir)


def test_verify_checks_hashes_loading_and_perplexity(versions_repo: dict) -> None:
    versions = Versions(versions_repo["repo"])
    report = verify(versions, versions.resolve("rank-two"), evaluate=True)
    lock = report["files"]
    assert set(lock) == {"models/adapter", "models/base", "data/prepared"}
    assert all(check["found"] == check["recorded"] for check in lock.values())
    assert report["loads"]["device"] == "cpu"
    assert report["eval"]["relative_difference"] <= report["eval"]["tolerance"]


def test_a_fresh_clone_reads_versions_from_the_remote(versions_repo: dict, tmp_path: Path) -> None:
    repo = clone(versions_repo, tmp_path / "clone")
    found = {v.rev: v for v in Versions(repo).all}  # no cache yet: metadata streams from the remote
    assert set(found) == {versions_repo["r8"], versions_repo["r4"]}  # experiments stay with their repo
    assert all(v.error is None for v in found.values())
    model, _ = load_version("lora-adapter#prod", repo=repo)  # fetches adapter and base into the clone's cache
    assert model.peft_config["default"].r == 4
    assert sorted(p.name for p in (repo / "models").iterdir()) == ["source.json"]  # git's; nothing checked out


def test_missing_metadata_names_the_file_and_dvc_pull(versions_repo: dict, tmp_path: Path) -> None:
    repo = clone(versions_repo, tmp_path / "clone", remote=False)
    with pytest.raises(UserError, match=r"models/adapter/metadata.json at \w{7} is not in the DVC cache.*dvc pull"):
        Versions(repo).resolve("main")
    rows = Versions(repo).all
    assert len(rows) == 2 and all("dvc pull" in v.error for v in rows)


def test_damaged_metadata_names_the_file_and_the_other_versions_still_work(versions_repo: dict, tmp_path: Path) -> None:
    repo = clone(versions_repo, tmp_path / "clone")
    dvc(repo, "fetch", "-q", "--all-commits")
    versions = Versions(repo)
    r8 = versions.resolve("main~1")
    damaged = versions.cache.path_of(r8.pins.adapter, "metadata.json")
    os.chmod(damaged, 0o644)
    damaged.write_text('{"version_id": "v_2026', encoding="utf-8")

    fresh = Versions(repo)
    rows = {v.rev: v for v in fresh.all}
    assert rows[versions_repo["r4"]].error is None and rows[versions_repo["r4"]].metadata.lora.r == 4
    error = rows[versions_repo["r8"]].error
    assert "models/adapter/metadata.json at" in error and str(damaged) in error and "dvc pull" in error
    with pytest.raises(UserError, match=r"metadata\.json at .* is damaged"):
        fresh.resolve("main~1")
    with pytest.raises(
        UserError, match=r"models/adapter/metadata\.json at \w{7} is damaged: its copy in the DVC cache"
    ):
        verify(fresh, r8)


def fake_version(rev: str, vid: str, *refs: str) -> Version:
    """A Version with only what resolving by id reads: its revision, names and metadata.json's version_id."""
    from tests.core.test_metadata import CURRENT

    pins = Pins(Out("models/adapter", f"{rev}.dir"), None, None, None, None, (), None, {})
    meta = VersionMetadata.from_dict(CURRENT | {"version_id": vid})
    return Version(rev * 40, pins, refs=[Ref("branch", r, rev * 40) for r in refs], metadata=meta)


def test_a_version_id_names_one_version_and_several_matches_are_listed(versions_repo: dict) -> None:
    versions = Versions(versions_repo["repo"])
    old_a, old_b = fake_version("a", "v_20261126_085715", "main"), fake_version("b", "v_20261126_085715")
    new = fake_version("c", "v_20261126_090000_a1b2c3", "rank-two")
    same_second = [fake_version("d", "v_20261127_000000_aaaaaa"), fake_version("e", "v_20261127_000000_bbbbbb")]
    versions.__dict__["all"] = [old_a, old_b, new, *same_second]  # the catalogue, without reading a repository

    assert versions.resolve("v_20261126_090000_a1b2c3") is new  # the exact id
    assert versions.resolve("v_20261126_090000") is new  # its timestamp alone, matching one version
    assert versions.resolve("v_20261127_000000_bbbbbb") is same_second[1]
    with pytest.raises(UserError) as err:
        versions.resolve("v_20261126_085715")  # two versions from the old scheme share it
    assert str(err.value) == (
        "version id 'v_20261126_085715' matches 2 versions: revision aaaaaaa (main) has v_20261126_085715, "
        "revision bbbbbbb has v_20261126_085715; name one by its revision (`loravc show aaaaaaa`)"
    )
    both = "revision ddddddd has v_20261127_000000_aaaaaa, revision eeeeeee has v_20261127_000000_bbbbbb"
    with pytest.raises(UserError, match=f"'v_20261127_000000' matches 2 versions: {both}"):
        versions.resolve("v_20261127_000000")
    with pytest.raises(UserError, match=r"no version 'v_20261126_090000_a1b2c4'.*nearest: v_20261126_090000_a1b2c3"):
        versions.resolve("v_20261126_090000_a1b2c4")  # a new id is matched exactly, never by prefix


def test_two_committed_versions_with_the_same_old_style_id(versions_repo: dict, tmp_path: Path, capsys) -> None:
    """A repository where two commits pin adapters whose metadata.json share an id of the old scheme."""
    from loravc.cli.main import run

    repo = tmp_path / "repo"
    shutil.copytree(versions_repo["repo"], repo, symlinks=True)  # its workspace holds the rank-two results
    meta_file = repo / "models" / "adapter" / "metadata.json"
    for created in ("2026-11-26T08:57:15+00:00", "2026-11-26T08:57:16+00:00"):
        meta = json.loads(meta_file.read_text()) | {"version_id": "v_20261126_085715", "created": created}
        os.chmod(meta_file, 0o644)
        meta_file.write_text(json.dumps(meta, indent=2) + "\n")
        dvc(repo, "commit", "-f", "-q", "train")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"same id, created {created}")
    first, second = git(repo, "rev-parse", "HEAD~1").strip()[:7], git(repo, "rev-parse", "HEAD").strip()[:7]
    found = Versions(repo).all
    assert sorted(v.short for v in found if v.version_id == "v_20261126_085715") == sorted([first, second])

    with pytest.raises(SystemExit) as exit_info:
        run(["-C", str(repo), "show", "v_20261126_085715"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "matches 2 versions" in err and f"revision {second} (main) has" in err and f"revision {first} has" in err
    exp = next(v for v in found if v.names("experiment") == ["rank-two"])
    assert Versions(repo).resolve(exp.version_id[: len("v_YYYYMMDD_HHMMSS")]).rev == exp.rev  # timestamp alone


def test_a_missing_file_whose_path_has_spaces_reads_as_absent(versions_repo: dict) -> None:
    from loravc.versions.gitrepo import GitRepo

    repo = GitRepo(versions_repo["repo"])
    found = repo.read_blobs(["HEAD:my metrics.json", "HEAD:dvc.yaml"])
    assert found["HEAD:my metrics.json"] is None and found["HEAD:dvc.yaml"].startswith(b"stages:")
