"""The registry: GTO tags on version commits, readable by `gto` and `dvc artifacts get`."""

import json
from pathlib import Path

import pytest

from loravc.cli.main import main
from loravc.core.errors import UserError
from loravc.versions.catalogue import Versions
from loravc.versions.registry import promote, register
from tests.conftest import git, run, sha256_tree


def test_registered_and_promoted_version_is_visible_to_gto(versions_repo: dict) -> None:
    from gto.api import find_versions_in_stage, show

    repo = versions_repo["repo"]
    tags = git(repo, "tag", "-l", "-n1").splitlines()
    assert any(t.startswith("lora-adapter@v1.2.0") and "LoRA r=4" in t for t in tags)
    assert any(t.startswith("lora-adapter#prod#1") for t in tags)
    registered = {v["version"]: v["commit_hexsha"] for v in show(str(repo), "lora-adapter")}
    assert registered["v1.2.0"] == versions_repo["r4"]
    (prod,) = find_versions_in_stage(str(repo), "lora-adapter", "prod")
    assert prod.version == "v1.2.0"
    table = run(["gto", "show"], repo).stdout
    assert "lora-adapter" in table and "v1.2.0" in table


def test_dvc_artifacts_get_downloads_the_registered_version(versions_repo: dict, tmp_path: Path) -> None:
    repo = versions_repo["repo"]
    out = tmp_path / "adapter"
    run(["dvc", "artifacts", "get", str(repo), "lora-adapter", "--rev", "v1.2.0", "-o", str(out)], tmp_path)
    versions = Versions(repo)
    version = versions.resolve("lora-adapter@v1.2.0")
    assert sha256_tree(out) == sha256_tree(versions.materialize(version, version.pins.adapter))
    assert json.loads((out / "metadata.json").read_text())["lora"]["r"] == 4


def test_register_and_promote_from_the_command_line(versions_repo: dict, tmp_path: Path, capsys) -> None:
    from dvc.repo import Repo
    from gto.api import find_versions_in_stage

    git(tmp_path, "clone", "-q", str(versions_repo["repo"]), "clone")
    repo = tmp_path / "clone"
    main(["-C", str(repo), "register", "main~1", "--version", "v1.0.0"])
    assert "registered lora-adapter@v1.0.0 -> " + versions_repo["r8"][:7] in capsys.readouterr().out
    main(["-C", str(repo), "promote", "lora-adapter", "--version", "v1.0.0", "--stage", "prod"])
    assert "tag lora-adapter#prod#3" in capsys.readouterr().out  # after lora-adapter#prod!#2 took it from v1.2.0
    main(["-C", str(repo), "promote", "lora-adapter", "--version", "v1.0.0", "--stage", "prod"])
    assert "already is the prod version" in capsys.readouterr().out
    versions = Versions(repo)
    assert versions.resolve("lora-adapter#prod").rev == versions_repo["r8"]
    assert versions.resolve("lora-adapter@latest").rev == versions_repo["r4"]  # the highest version
    assert [v.version for v in find_versions_in_stage(str(repo), "lora-adapter", "prod")] == ["v1.0.0"]
    with Repo(str(repo)) as dvc_repo:  # what `dvc artifacts get . lora-adapter --stage prod` downloads
        assert dvc_repo.artifacts.get_rev("lora-adapter", stage="prod") == versions_repo["r8"]
    main(["-C", str(repo), "list", "--json"])
    rows = {row["rev"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[versions_repo["r8"]]["registry"] == ["lora-adapter@v1.0.0", "lora-adapter#prod"]
    assert rows[versions_repo["r4"]]["registry"] == ["lora-adapter@v1.2.0"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda v: register(v, "main~1", "1.0"), "must be a semantic version"),
        (lambda v: register(v, "main~1", "v1.2.0"), "registry: .*v1.2.0"),  # taken by main
        (lambda v: register(v, "main", "v9.0.0"), "registry: .*already"),  # main has a version
        (lambda v: register(v, "main~1", "v1.0.0", name="other"), "declares no artifact 'other'"),
        (lambda v: register(v, "mian", "v1.0.0"), "nearest: main"),
        (lambda v: promote(v, "lora-adapter", "v3.0.0", "prod"), "not registered .*lora-adapter@v1.2.0"),
        (lambda v: promote(v, "lora-adapter", "v1.2.0", "-prod"), "--stage '-prod' must be"),
        (lambda v: promote(v, "../x", "v1.2.0", "prod"), "artifact name '../x' must be"),
    ],
)
def test_registry_mistakes_are_clear_and_change_nothing(versions_repo: dict, call, message: str) -> None:
    repo = versions_repo["repo"]
    tags = git(repo, "tag", "-l")
    with pytest.raises(UserError, match=message):
        call(Versions(repo))
    assert git(repo, "tag", "-l") == tags
