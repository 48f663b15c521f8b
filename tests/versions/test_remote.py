"""Sharing versions through DVC remotes: push, fresh clones, `dvc repro --pull`, dead remotes, scale-out.

The session's tiny committed version (`built_repo_template`) is pushed with its run cache to a local
directory remote and its commits to a bare git "origin"; each test then works in fresh clones of
origin, as another machine would. The two-process train runs on a copy of the same version.
"""

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import dvc, git, lora_rank_from_weights, ran_stages, run, sha256_tree, update_params

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_MAX_ATTEMPTS": "1",  # a dead endpoint fails in seconds instead of after retries
}


@dataclass
class Published:
    repo: Path  # the clone that trained and pushed
    origin: Path  # bare git repository
    storage: Path  # local directory remote (the default remote in .dvc/config)
    unlocked_rev: str  # the project before its first run: no dvc.lock
    adapter: dict[str, str]  # sha256 of every file of models/adapter


def clone(published: Published, dest: Path, rev: str | None = None) -> Path:
    run(["git", "clone", "-q", str(published.origin), str(dest)], dest.parent)
    if rev:
        git(dest, "checkout", "-q", rev)
    return dest


def configure_remote(repo: Path, name: str, url: str, endpoint: str | None = None, default: bool = False) -> None:
    """What `dvc remote add --local [-d] NAME URL` (and `dvc remote modify --local NAME endpointurl`)
    write, without a DVC start-up per setting."""
    section = f"['remote \"{name}\"']\n    url = {url}\n"
    if endpoint:
        section += f"    endpointurl = {endpoint}\n"
    if default:
        section += f"[core]\n    remote = {name}\n"
    with (repo / ".dvc" / "config.local").open("a", encoding="utf-8") as f:
        f.write(section)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, built_repo_template: Path) -> Published:
    root = tmp_path_factory.mktemp("remote")
    origin, storage, repo = root / "origin.git", root / "storage", root / "trainer"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], root)
    shutil.copytree(built_repo_template, repo, symlinks=True)
    dvc(repo, "remote", "add", "-d", "storage", str(storage))
    git(repo, "commit", "-qm", "default remote", ".dvc/config")
    dvc(repo, "push", "--run-cache")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    unlocked_rev = git(repo, "rev-list", "--max-parents=0", "HEAD")
    return Published(repo, origin, storage, unlocked_rev, sha256_tree(repo / "models" / "adapter"))


def test_train_runs_under_accelerate_in_two_processes(built_repo_template: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(built_repo_template, repo, symlinks=True)
    update_params(repo / "params.yaml", {"train": {"processes": 2}})
    # HF_HOME without an accelerate config: the launch does not depend on this machine's settings
    out = run([sys.executable, "-m", "dvc", "repro", "train"], repo, env={"HF_HOME": str(tmp_path / "hf")}).stdout
    assert ran_stages(out) == {"train"}
    assert "train: 2 processes" in out and "accelerate.commands.launch --num_processes 2" in out
    assert out.count("train: v_") == 1  # only the main process reports (and writes)
    adapter = repo / "models" / "adapter"
    meta = json.loads((adapter / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["metrics"]["steps"] == 2
    assert meta["training"]["distributed"] == "MULTI_CPU"  # accelerate's DDP over gloo (FSDP: tests/train/test_fsdp.py)
    assert lora_rank_from_weights(adapter) == {8}
    assert json.loads((repo / "dvclive" / "train" / "metrics.json").read_text())["steps"] == 2


def test_local_remote_round_trip_in_a_fresh_clone(published: Published, tmp_path: Path) -> None:
    fresh = clone(published, tmp_path / "fresh")
    dvc(fresh, "pull")
    adapter = fresh / "models" / "adapter"
    assert sha256_tree(adapter) == published.adapter

    import torch

    from loravc.evaluate.evaluation import load_base_and_adapter

    model, tokenizer = load_base_and_adapter(fresh / "models" / "base", adapter, "cpu")
    batch = tokenizer("The assert statement", return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)
    assert lora_rank_from_weights(adapter) == {8}


def test_repro_pull_on_a_fresh_clone_trains_nothing(published: Published, tmp_path: Path) -> None:
    fresh = clone(published, tmp_path / "fresh")
    result = dvc(fresh, "repro", "--pull")
    assert ran_stages(result.stdout) == set()
    assert "Pulling data for stage: 'train'" in result.stdout or "Stage 'train' is cached" in result.stdout
    assert sha256_tree(fresh / "models" / "adapter") == published.adapter


def test_repro_pull_takes_results_from_the_run_cache(published: Published, tmp_path: Path) -> None:
    """The commit before the run has no dvc.lock: only the pushed run cache can answer it.

    Only for `base`: DVC 3 never uploads the `cache: false` outputs (the dvclive metrics) of a
    run-cache record, so `prepare` and `train` records restore only where they ran (README).
    """
    fresh = clone(published, tmp_path / "fresh", published.unlocked_rev)
    assert not (fresh / "dvc.lock").exists()
    configure_remote(fresh, "storage", str(published.storage), default=True)  # added to .dvc/config later
    result = dvc(fresh, "repro", "--pull", "base")
    assert ran_stages(result.stdout) == set()
    assert "Stage 'base' is cached - skipping run, checking out outputs" in result.stdout
    assert sha256_tree(fresh / "models" / "base") == sha256_tree(published.repo / "models" / "base")


@pytest.fixture
def s3_server() -> Iterator[str]:
    """A moto S3 server on a loopback port, with bucket `models`; yields its endpoint URL."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("dvc_s3")
    server_module = pytest.importorskip("moto.moto_server.threaded_moto_server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {key: os.environ.get(key) for key in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def add_s3_remote(repo: Path, name: str, endpoint: str) -> None:
    configure_remote(repo, name, "s3://models/loravc", endpoint)


def test_s3_remote_round_trip(published: Published, s3_server: str, tmp_path: Path) -> None:
    import boto3

    add_s3_remote(published.repo, "s3", s3_server)
    dvc(published.repo, "push", "-r", "s3")
    stored = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="models")["Contents"]
    assert any(obj["Key"].startswith("loravc/files/md5/") for obj in stored)

    fresh = clone(published, tmp_path / "fresh")
    add_s3_remote(fresh, "s3", s3_server)
    dvc(fresh, "pull", "-r", "s3")
    assert sha256_tree(fresh / "models" / "adapter") == published.adapter
    assert lora_rank_from_weights(fresh / "models" / "adapter") == {8}


def test_push_to_a_dead_remote_fails_clearly_and_loses_nothing(published: Published, tmp_path: Path) -> None:
    repo = published.repo
    port = free_port()  # closed again: nothing listens there
    add_s3_remote(repo, "dead", f"http://127.0.0.1:{port}")
    (tmp_path / "a-file").write_text("not a directory\n")
    configure_remote(repo, "broken", str(tmp_path / "a-file" / "store"))

    def snapshot() -> tuple[dict[str, str], dict[str, str], str]:
        return sha256_tree(repo / "models"), sha256_tree(repo / ".dvc" / "cache"), git(repo, "status", "--porcelain")

    before = snapshot()
    dead = run(["python", "-m", "dvc", "push", "-r", "dead"], repo, check=False, env=S3_ENV)
    assert dead.returncode != 0
    assert f'Could not connect to the endpoint URL: "http://127.0.0.1:{port}/models/loravc/' in dead.stderr
    broken = dvc(repo, "push", "-r", "broken", check=False)
    assert broken.returncode != 0
    assert f"Not a directory: '{tmp_path / 'a-file'}" in broken.stderr
    for result in (dead, broken):
        assert "Traceback" not in result.stderr and result.stderr.startswith("ERROR:")
    assert snapshot() == before
    assert sha256_tree(repo / "models" / "adapter") == published.adapter
