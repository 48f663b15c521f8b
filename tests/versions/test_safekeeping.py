"""Versions you cannot lose by accident: `loravc list` says which versions the DVC remote lacks (or that no remote
is set), and `loravc gc` collects the cache's garbage keeping every version.

Each test works on its own copy of `versions_repo` (conftest: three versions, every one pushed to a directory
remote) and of that remote; the S3 test pushes its copy to a moto server (tests/versions/test_remote.py).
"""

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from loravc.cli.main import main
from loravc.versions.catalogue import Versions
from loravc.versions.remote import objects
from tests.conftest import dvc
from tests.versions.test_remote import s3_server  # noqa: F401 (a fixture)

NO_REMOTE = (
    "note: no DVC remote is set: every version lives only in this machine's DVC cache, one `dvc gc` or disk away "
    "from gone; set one with `dvc remote add -d storage <url>`, then `dvc push` (docs/remotes.md)"
)


def copy_of(versions_repo: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    """(repository, its directory remote): copies of versions_repo's, the copy's default remote the copied one."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    shutil.copytree(versions_repo["repo"], repo, symlinks=True)
    shutil.copytree(versions_repo["remote"], remote)
    use_remote(repo, "store", str(remote))
    return repo, remote


def use_remote(repo: Path, name: str, url: str, endpoint: str | None = None) -> None:
    """The default remote, in .dvc/config.local (what `dvc remote add --local -d` writes)."""
    section = f"[core]\n    remote = {name}\n['remote \"{name}\"']\n    url = {url}\n"
    section += f"    endpointurl = {endpoint}\n" if endpoint else ""
    (repo / ".dvc" / "config.local").write_text(section, encoding="utf-8")


def listed(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, str], list[str]]:
    """`loravc list`: {short revision: its table line}, and its stderr lines."""
    main(["-C", str(repo), "list"])
    out, err = capsys.readouterr()
    return {line.split()[0]: line for line in out.splitlines()[1:]}, err.splitlines()


def own_objects(repo: Path, ref: str, others: tuple[str, ...]) -> set[str]:
    """The DVC objects of `ref`'s version that no version of `others` shares (its manifest, its weights, ...)."""
    with Versions(repo) as versions:
        shared = set().union(*(objects(versions, versions.resolve(other)) for other in others))
        return objects(versions, versions.resolve(ref)) - shared


def test_list_marks_the_versions_the_remote_lacks(versions_repo: dict, tmp_path: Path, capsys) -> None:
    repo, remote = copy_of(versions_repo, tmp_path)
    r8, r4, exp = (versions_repo[key][:7] for key in ("r8", "r4", "exp"))
    lines, err = listed(repo, capsys)
    assert lines.keys() == {r8, r4, exp}
    assert all(line.endswith("  pushed") for line in lines.values()) and err == []

    own = own_objects(repo, "main", ("main~1", "rank-two"))
    assert own and all(not oid.startswith(".") for oid in own)
    for oid in own:  # main's own files leave the remote: they are now only in this machine's cache
        (remote / "files" / "md5" / oid[:2] / oid[2:]).unlink()
    lines, err = listed(repo, capsys)
    assert lines[r4].endswith("  local only")
    assert lines[r8].endswith("  pushed") and lines[exp].endswith("  pushed")
    assert err == [
        f"warning: 1 version has files only in this machine's DVC cache, not in DVC remote 'store' ({r4}): "
        "`dvc push --all-commits` sends those of every commit (docs/remotes.md)"
    ]
    main(["-C", str(repo), "list", "--json"])
    rows = {row["rev"][:7]: row["remote"] for row in json.loads(capsys.readouterr().out)}
    assert rows == {r8: "pushed", r4: "local only", exp: "pushed"}

    use_remote(repo, "store", str(tmp_path / "empty"))  # a remote that holds nothing: every version is local only
    lines, err = listed(repo, capsys)
    assert all(line.endswith("  local only") for line in lines.values())
    assert err[0].startswith("warning: 3 versions have files only in this machine's DVC cache, not in DVC remote ")
    assert f"'store' ({exp}, {r4}, {r8}): `dvc push --all-commits` sends those of every commit; " in err[0]
    assert err[0].endswith("`dvc exp push origin rank-two` sends experiment rank-two's (docs/remotes.md)")


def test_list_says_when_no_remote_is_set(versions_repo: dict, tmp_path: Path, capsys) -> None:
    repo, _ = copy_of(versions_repo, tmp_path)
    (repo / ".dvc" / "config.local").unlink()
    (repo / ".dvc" / "config").write_text("[core]\n    autostage = true\n", encoding="utf-8")  # the project's own
    lines, err = listed(repo, capsys)
    assert len(lines) == 3 and all(line.split()[-1] == "-" for line in lines.values())
    assert err == [NO_REMOTE]

    (repo / ".dvc" / "config").write_text(f"['remote \"store\"']\n    url = {tmp_path / 'remote'}\n", encoding="utf-8")
    _, err = listed(repo, capsys)
    assert err == [
        "note: no default DVC remote is set (configured: store), so nothing says which versions are pushed: "
        "`dvc remote default <name>` (docs/remotes.md)"
    ]


def test_list_checks_an_s3_remote_and_names_a_dead_one(
    versions_repo: dict,
    tmp_path: Path,
    s3_server: str,  # noqa: F811 (the fixture imported above)
    capsys,
) -> None:
    import boto3

    repo, _ = copy_of(versions_repo, tmp_path)
    # a prefix of its own: the moto server is the session's, and tests/versions/test_remote.py pushes every
    # version of the same repository to s3://models/loravc
    prefix = f"safekeeping-{tmp_path.name}"
    use_remote(repo, "s3", f"s3://models/{prefix}", s3_server)
    dvc(repo, "push", "-q")  # the workspace's version (the experiment's results) alone
    lines, err = listed(repo, capsys)
    exp = versions_repo["exp"][:7]
    assert lines[exp].endswith("  pushed")
    assert [rev for rev, line in lines.items() if line.endswith("  local only")] == [
        versions_repo["r4"][:7],
        versions_repo["r8"][:7],
    ]
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for oid in own_objects(repo, "rank-two", ("main", "main~1")):
        s3.delete_object(Bucket="models", Key=f"{prefix}/files/md5/{oid[:2]}/{oid[2:]}")
    lines, _ = listed(repo, capsys)
    assert lines[exp].endswith("  local only")

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    use_remote(repo, "dead", f"s3://models/{prefix}", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    lines, err = listed(repo, capsys)
    assert time.monotonic() - started < 30
    assert len(lines) == 3 and all(line.split()[-1] == "-" for line in lines.values())
    assert len(err) == 1 and err[0].startswith("warning: could not ask DVC remote 'dead' (")
    assert err[0].endswith("): the remote column is unknown")


def test_gc_keeps_every_version_and_removes_the_rest(versions_repo: dict, tmp_path: Path, capsys) -> None:
    repo, remote = copy_of(versions_repo, tmp_path)
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    stray = "0123456789abcdef0123456789abcdef"  # an object no commit, branch, tag or experiment names
    for store in (cache, remote / "files" / "md5"):
        (store / stray[:2]).mkdir(exist_ok=True)
        (store / stray[:2] / stray[2:]).write_text("garbage\n")
    before = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())

    main(["-C", str(repo), "gc", "--dry"])
    out = capsys.readouterr().out
    assert sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file()) == before  # --dry removes nothing

    main(["-C", str(repo), "gc"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("keeping the DVC files of the workspace and of ")
    assert "1 branch: main" in out[0] and "1 experiment: rank-two" in out[0] and "lora-adapter@v1.2.0" in out[0]
    assert out[1] == "that is every version, 3:"
    assert {line.split()[0] for line in out[2:5]} == {versions_repo[key][:7] for key in ("r8", "r4", "exp")}
    assert out[5] == "$ dvc gc --workspace --all-commits --all-experiments --all-branches --all-tags --force"
    assert not (cache / stray[:2] / stray[2:]).exists()
    assert (remote / "files" / "md5" / stray[:2] / stray[2:]).exists()  # the remote only with --cloud
    with Versions(repo) as versions:  # every version's adapter and base stay, each object of them
        kept = set().union(*(objects(versions, v) for v in versions.all))
    assert len(kept) > 10 and all((cache / oid[:2] / oid[2:]).is_file() for oid in kept)

    main(["-C", str(repo), "gc", "--cloud"])
    assert capsys.readouterr().out.splitlines()[5].endswith("--all-tags --cloud --force")
    assert not (remote / "files" / "md5" / stray[:2] / stray[2:]).exists()
    main(["-C", str(repo), "verify", "--all"])  # every version's adapter, whole in the cache
    assert capsys.readouterr().out.splitlines()[-1].startswith("3 checked: 3 ok, 0 damaged, 0 not in the local cache")
