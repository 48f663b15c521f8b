"""The DVC cache as evidence: every read of metadata.json is checked against its hash, and
`loravc verify --all` rehashes every version's adapter files in the cache.

One copy of `versions_repo` is damaged three ways, once for the module: r8's metadata.json is
replaced by a valid-looking fake, the experiment's LoRA weights gain a byte, and r4's directory
manifest is altered. The untouched `versions_repo` is the intact case.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from loravc.cli.main import run
from loravc.core.metadata import METADATA_FILE
from loravc.versions.catalogue import Versions


@pytest.fixture(scope="module")
def damaged(versions_repo: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    repo = tmp_path_factory.mktemp("damaged") / "repo"
    shutil.copytree(versions_repo["repo"], repo, symlinks=True)
    versions = Versions(repo)
    by_rev = {v.rev: v for v in versions.all}
    r8, r4, exp = (by_rev[versions_repo[k]] for k in ("r8", "r4", "exp"))

    def overwrite(path: Path, data: bytes) -> Path:
        os.chmod(path, 0o644)  # DVC keeps cache files read-only; a root process (or a hardlink) writes anyway
        path.write_bytes(data)
        return path

    fake = r8.metadata.to_dict() | {"version_id": "v_20261126_000000"}  # valid JSON, valid schema
    metadata = overwrite(versions.cache.path_of(r8.pins.adapter, METADATA_FILE), json.dumps(fake).encode())
    weights = versions.cache.path_of(exp.pins.adapter, "adapter_model.safetensors")
    overwrite(weights, weights.read_bytes() + b"x")
    manifest = versions.cache.cache_path(r4.pins.adapter.md5)
    entries = json.loads(manifest.read_bytes())
    overwrite(manifest, json.dumps([e for e in entries if e["relpath"] != "README.md"]).encode())  # a file dropped
    versions.close()
    return {"repo": repo, "r8": r8, "r4": r4, "exp": exp, "metadata": metadata, "weights": weights} | {
        "manifest": manifest
    }


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the console entry point."""
    try:
        run(list(argv))
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_a_valid_looking_fake_metadata_json_is_reported_as_damaged(damaged: dict, capsys) -> None:
    repo, r8 = str(damaged["repo"]), damaged["r8"]
    code, out, err = cli(capsys, "-C", repo, "list")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "(unreadable: see below)" in rows[r8.short] and "v_20261126_000000" not in out
    assert damaged["exp"].version_id in rows[damaged["exp"].short]  # the other versions still list
    warning = next(line for line in err.splitlines() if f"metadata.json at {r8.short}" in line)
    found = hashlib.md5(damaged["metadata"].read_bytes()).hexdigest()
    recorded = Versions(repo).cache.recorded_md5(r8.pins.adapter)[METADATA_FILE]
    assert warning == (
        f"warning: models/adapter/metadata.json at {r8.short} is damaged: its copy in the DVC cache, "
        f"{damaged['metadata']}, hashes to {found}, not the recorded {recorded}; delete that cache file, "
        "then `dvc pull` restores it (`dvc fetch --all-commits` for an older version), and `dvc checkout --relink` "
        "the workspace copy"
    )
    for ref in ("main~1", r8.rev):
        code, _, err = cli(capsys, "-C", repo, "show", ref)
        assert code == 2 and err == "error: " + warning.removeprefix("warning: ") + "\n"
    code, _, err = cli(capsys, "-C", repo, "show", "v_20261126_000000")  # the fake id names nothing
    assert code == 2 and err.startswith("error: no version 'v_20261126_000000'")


def test_a_damaged_manifest_is_reported_with_its_cache_file(damaged: dict, capsys) -> None:
    repo, r4 = str(damaged["repo"]), damaged["r4"]
    code, out, err = cli(capsys, "-C", repo, "list")
    assert "(unreadable: see below)" in next(line for line in out.splitlines() if line.startswith(r4.short))
    message = f"the manifest of models/adapter ({r4.pins.adapter.md5}) is damaged: its copy in the DVC cache, "
    assert f"warning: {message}{damaged['manifest']}, hashes to " in err
    code, _, err = cli(capsys, "-C", repo, "show", "main")
    assert code == 2 and err.startswith(f"error: {message}{damaged['manifest']}") and "dvc pull" in err


def test_verify_all_names_each_damaged_cache_file(damaged: dict, capsys) -> None:
    code, out, err = cli(capsys, "-C", str(damaged["repo"]), "verify", "--all")
    assert code == 2
    assert err == (
        "error: 3 damaged files in the DVC cache, in 3 of 3 versions (named above): delete that cache file, then "
        "`dvc pull` restores it (`dvc fetch --all-commits` for an older version), and `dvc checkout --relink` the "
        "workspace copy\n"
    )
    lines = out.splitlines()
    status = {line.split()[1]: line.split()[0] for line in lines[1:] if line.split()[0] in ("ok", "damaged", "missing")}
    r8, r4, exp = damaged["r8"], damaged["r4"], damaged["exp"]
    assert status == {r8.short: "damaged", r4.short: "damaged", exp.short: "damaged"}
    for what, cache_file in [
        (f"models/adapter/{METADATA_FILE}", damaged["metadata"]),
        ("models/adapter/adapter_model.safetensors", damaged["weights"]),
        ("models/adapter/(manifest)", damaged["manifest"]),
    ]:
        assert any(line.strip().startswith(f"{what}: cache file {cache_file} hashes to ") for line in lines), what
    assert lines[-1].startswith("3 checked: 0 ok, 3 damaged, 0 not in the local cache")


def test_verify_all_passes_an_intact_cache_quickly(versions_repo: dict, capsys) -> None:
    code, out, err = cli(capsys, "-C", str(versions_repo["repo"]), "verify", "--all")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["ok"] * 3
    assert lines[-1].startswith("3 checked: 3 ok, 0 damaged, 0 not in the local cache")
    code, out, _ = cli(capsys, "-C", str(versions_repo["repo"]), "verify", "--all", "--json")
    report = json.loads(out)
    assert code == 0 and (report["checked"], report["ok"]) == (3, 3)
    assert {v["rev"] for v in report["versions"]} == {versions_repo[k] for k in ("r8", "r4", "exp")}
    assert all(v["files"] >= 5 and not v["damaged"] and not v["missing"] for v in report["versions"])


def test_loading_a_version_checks_every_file_it_loads(
    damaged: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("LORAVC_STORE", str(tmp_path / "store"))  # assembled afresh from the damaged cache
    repo, exp = str(damaged["repo"]), damaged["exp"]
    code, _, err = cli(capsys, "-C", repo, "generate", "rank-two", "The assert", "--max-new-tokens", "2")
    assert code == 2
    assert err.startswith(f"error: models/adapter/adapter_model.safetensors at {exp.short} is damaged: ")
    assert str(damaged["weights"]) in err and "dvc pull" in err


def test_a_reused_directory_is_checked_again(versions_repo: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    """A file of an assembled (hard-linked, reused) directory changed after it was assembled: named on the next load."""
    repo = tmp_path / "repo"
    shutil.copytree(versions_repo["repo"], repo, symlinks=True)
    monkeypatch.setenv("LORAVC_STORE", str(tmp_path / "store"))
    with Versions(repo) as versions:
        version = versions.resolve("main")
        base, _ = versions.directories(version)  # assembled and checked: intact
        config = base / "config.json"
        os.chmod(config, 0o644)
        config.write_text(config.read_text() + " ")  # through the hard link, as root can
    code, _, err = cli(capsys, "-C", str(repo), "generate", "main", "The assert", "--max-new-tokens", "2")
    assert code == 2 and err.startswith(f"error: models/base/config.json at {version.short} is damaged: ")
