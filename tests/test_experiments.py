"""Experiments on the real pipeline and the tiny base: exp run, a queued sweep, kill and resume, plots.

One repository serves the module: the pipeline runs once (3 epochs of 6 steps) and is committed;
each test starts from the newest commit with a clean workspace.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import dvc, git, lora_rank_from_weights, sha256_tree, update_params

EPOCHS, STEPS_PER_EPOCH, LOGGING_STEPS = 3, 6, 4  # 24 training records, batch 4; epoch ends are no logging steps
CURVES = ("loss.tsv", "learning_rate.tsv", "eval/loss.tsv")  # dvclive/train/plots/metrics/...


@pytest.fixture(scope="module")
def exp_repo(tmp_path_factory: pytest.TempPathFactory, built_repo_template: Path) -> Path:
    repo = tmp_path_factory.mktemp("experiments") / "repo"
    shutil.copytree(built_repo_template, repo, symlinks=True)
    trainer = {"max_steps": -1, "num_train_epochs": EPOCHS, "logging_steps": LOGGING_STEPS}
    update_params(repo / "params.yaml", {"prepare": {"train_records": 24}, "train": {"trainer": trainer}})
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "r=8, three epochs")
    return repo


@pytest.fixture
def repo(exp_repo: Path) -> Path:
    """The module's repository at its newest commit, outputs checked out, no checkpoints."""
    git(exp_repo, "reset", "-q", "--hard")
    dvc(exp_repo, "checkout", "--force")
    shutil.rmtree(exp_repo / "checkpoints", ignore_errors=True)
    return exp_repo


@pytest.fixture(scope="module")
def killed(exp_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The committed run of train again (`dvc repro --force --single-item train`), killed with SIGKILL in epoch 2.

    Returns a copy of the checkpoints it left behind and what the committed, uninterrupted run made.
    """
    repo = exp_repo
    git(repo, "reset", "-q", "--hard")
    dvc(repo, "checkout", "--force")
    committed = {
        "adapter": sha256_tree(repo / "models" / "adapter"),
        "metadata": metadata(repo),
        "curves": curves(repo),
    }
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    marker = repo / "checkpoints" / "train" / f"checkpoint-{STEPS_PER_EPOCH}" / "loravc-checkpoint.json"
    loss_curve = repo / "dvclive" / "train" / "plots" / "metrics" / "loss.tsv"
    while not (marker.is_file() and logged_steps(loss_curve)[-1:] > [STEPS_PER_EPOCH]):  # a step of epoch 2 logged
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert time.monotonic() - started < 300, "no epoch-1 checkpoint after 300 s"
        time.sleep(0.02)
    children = psutil.Process(proc.pid).children(recursive=True)
    (train,) = [p for p in children if p.cmdline()[1:3] == ["-m", "stages.train"]]
    train.send_signal(signal.SIGKILL)
    output = proc.communicate(timeout=120)[0].decode()
    # Killed by SIGKILL: -9 when the shell DVC starts execs the command (bash), 137 when it forks (dash).
    assert proc.returncode != 0 and re.search(r"exited with (-9|137)\b", output), output
    saved = tmp_path_factory.mktemp("killed") / "train"
    shutil.copytree(repo / "checkpoints" / "train", saved)
    return {"checkpoints": saved, "committed": committed, "kill_after_s": time.monotonic() - started}


def curves(repo: Path) -> dict[str, str]:
    """The loss and learning-rate curves (step and value: no timings, so a rerun gives the same bytes)."""
    metrics = repo / "dvclive" / "train" / "plots" / "metrics"
    return {name: (metrics / name).read_text() for name in CURVES}


def logged_steps(tsv: Path) -> list[int]:
    try:
        return [int(line.split("\t")[0]) for line in tsv.read_text().splitlines()[1:]]
    except (FileNotFoundError, ValueError):
        return []


def put_back(checkpoints: Path, repo: Path) -> None:
    shutil.rmtree(repo / "checkpoints" / "train", ignore_errors=True)
    shutil.copytree(checkpoints, repo / "checkpoints" / "train")


def metadata(repo: Path) -> dict[str, Any]:
    return json.loads((repo / "models" / "adapter" / "metadata.json").read_text())


def experiments(repo: Path) -> dict[str, dict[str, Any]]:
    """name -> {"params": train section, "metrics": {file: values}} for the experiments of HEAD."""
    (baseline,) = json.loads(dvc(repo, "exp", "show", "--json", "--hide-workspace", "-n", "1").stdout)
    found = {}
    for exp in baseline.get("experiments") or []:
        (rev,) = exp["revs"]
        data = rev["data"]
        found[rev["name"]] = {
            "params": data["params"]["params.yaml"]["data"]["train"],
            "metrics": {name: m.get("data", {}) for name, m in data["metrics"].items()},
        }
    return found


def test_killed_run_resumes_and_ends_exactly_as_an_uninterrupted_run(repo: Path, killed: dict[str, Any]) -> None:
    assert sorted(p.name for p in killed["checkpoints"].glob("checkpoint-*")) == [f"checkpoint-{STEPS_PER_EPOCH}"]
    put_back(killed["checkpoints"], repo)

    started = time.monotonic()
    out = dvc(repo, "repro", "--force", "--single-item", "train").stdout  # forced: else DVC's run cache restores it
    resume_s = time.monotonic() - started
    print(f"\nkill after {killed['kill_after_s']:.1f} s (epoch 2 of {EPOCHS}); resumed run {resume_s:.1f} s")

    total = EPOCHS * STEPS_PER_EPOCH
    where = f"checkpoints/train/checkpoint-{STEPS_PER_EPOCH}"
    assert f"train: resuming from {where} (epoch 1, step {STEPS_PER_EPOCH} of {total})" in out
    meta, committed = metadata(repo), killed["committed"]
    assert meta["training"]["resumed_from_step"] == STEPS_PER_EPOCH and meta["metrics"]["steps"] == total
    marker = killed["checkpoints"] / f"checkpoint-{STEPS_PER_EPOCH}" / "loravc-checkpoint.json"
    assert 0 < json.loads(marker.read_text())["train_seconds"] < meta["metrics"]["train_seconds"]  # the whole run's
    # Weights, optimizer, scheduler and RNG state all come back: the same adapter bytes, the same
    # whole-run loss and the same curves (nothing the killed run logged after its checkpoint) as the
    # committed run, which trained without interruption.
    adapter = sha256_tree(repo / "models" / "adapter")
    assert adapter["adapter_model.safetensors"] == committed["adapter"]["adapter_model.safetensors"]
    for key in ("train_loss", "validation_loss", "train_tokens", "steps"):
        assert meta["metrics"][key] == committed["metadata"]["metrics"][key], key
    assert curves(repo) == committed["curves"]
    assert not (repo / "checkpoints" / "train").exists()  # a finished run leaves no checkpoint behind

    # The checkpoints are no stage output, so train keeps DVC's run cache.
    shutil.rmtree(repo / "models" / "adapter")
    assert "Stage 'train' is cached - skipping run" in dvc(repo, "repro", "train").stdout
    assert sha256_tree(repo / "models" / "adapter") == adapter

    git(repo, "checkout", "HEAD", "--", "dvc.lock", "dvclive")
    dvc(repo, "checkout", "--force")
    assert sha256_tree(repo / "models" / "adapter") == committed["adapter"]  # the committed version, intact


def test_exp_run_discards_a_checkpoint_of_another_rank_and_shows_in_exp_show(
    repo: Path, killed: dict[str, Any], tmp_path: Path
) -> None:
    put_back(killed["checkpoints"], repo)  # made with r=8

    lr, one_epoch = "train.trainer.learning_rate=1.0e-4", "train.trainer.num_train_epochs=1"
    out = dvc(repo, "exp", "run", "-S", "train.lora.r=4", "-S", lr, "-S", one_epoch).stdout
    assert f"train: discarding checkpoint checkpoints/train/checkpoint-{STEPS_PER_EPOCH}: made with different" in out
    assert "train.lora.r 8 -> 4" in out and "resuming" not in out
    assert metadata(repo)["training"]["resumed_from_step"] is None
    assert lora_rank_from_weights(repo / "models" / "adapter") == {4}

    ((name, exp),) = [(n, e) for n, e in experiments(repo).items() if e["params"]["lora"]["r"] == 4]
    assert exp["params"]["trainer"]["learning_rate"] == 1.0e-4
    assert exp["metrics"]["dvclive/train/metrics.json"]["steps"] == STEPS_PER_EPOCH
    applied = metadata(repo)  # the experiment's results stay in the workspace
    assert exp["metrics"]["dvclive/train/metrics.json"]["validation_loss"] == applied["metrics"]["validation_loss"]
    evaluated = exp["metrics"]["dvclive/evaluate/metrics.json"]
    assert evaluated["tuned_perplexity"] == pytest.approx(math.exp(evaluated["tuned_loss"]), rel=1e-4)

    html_dir = tmp_path / "plots"
    diff = dvc(repo, "plots", "diff", "main", name, "-o", str(html_dir), check=False)
    assert diff.returncode == 0, diff.stderr
    page = (html_dir / "index.html").read_text()
    assert '"rev": "main"' in page and f'"rev": "{name}"' in page
    for title in ("Loss (training per logged step", "Learning rate", "Test perplexity, base vs fine-tuned"):
        assert title in page


BAD_VALUES = {  # a `dvc exp run -S` value -> the error stage `source` stops with; one of each kind of check that
    # source makes (the schema's types, TRL's and PEFT's settings, the base's modules): each check's every
    # message is tested in tests/train/test_preflight.py and tests/core/test_params.py
    "+train.lora.use_dora=maybe": "train.lora.use_dora must be true or false, got 'maybe'",
    "+train.trainer.learnin_rate=0.001": "train.trainer.learnin_rate is not a trl.SFTConfig setting (did you mean "
    "learning_rate?)",
    "train.lora.target_modules=[q_proj,query]": "train.lora.target_modules: query is not a module of the base",
}


def test_a_bad_value_stops_exp_run_before_any_output_is_removed(repo: Path) -> None:
    kept = {name: sha256_tree(repo / name) for name in ("models/adapter", "dvclive", "reports", "data/prepared")}
    for value, message in BAD_VALUES.items():
        run = dvc(repo, "exp", "run", "-S", value, check=False)
        assert run.returncode != 0, value
        errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: params.yaml: {message}"), (value, run.stderr)
        assert "Running stage 'source'" in run.stdout and "Running stage 'train'" not in run.stdout, value
        assert {name: sha256_tree(repo / name) for name in kept} == kept, value  # byte for byte
        # DVC wrote the value into params.yaml before the stage ran: the error says how to put it back
        hint = "params.yaml differs from the last commit (your edit, or `dvc exp run -S` wrote it)"
        assert hint in run.stderr and "`git checkout HEAD -- params.yaml`" in run.stderr, value
        git(repo, "checkout", "HEAD", "--", "params.yaml")
        assert git(repo, "status", "--porcelain", "params.yaml") == "", value


def test_queued_sweep_runs_each_rank_and_the_best_is_promoted(repo: Path) -> None:
    before, refs = set(experiments(repo)), len(experiment_refs(repo))
    # Only the train stage, one epoch: what matters here is that each queued run trains its own rank.
    dvc(repo, "exp", "run", "--queue", "train", "-S", "train.lora.r=2,16", "-S", "train.trainer.num_train_epochs=1")
    dvc(repo, "queue", "start", "-j", "2")  # its workers inherit the output pipe: this may wait for them
    wait_for_queue(repo, until=refs + 2)
    sweep = {n: e for n, e in experiments(repo).items() if n not in before}
    assert sorted(e["params"]["lora"]["r"] for e in sweep.values()) == [2, 16]
    # two workers that may finish in the same second still give two version ids, each with its random part
    from loravc.versions.catalogue import Versions

    with Versions(repo) as versions:
        ids = [v.version_id for v in versions.all if set(v.names("experiment")) & set(sweep)]
    assert len(ids) == len(set(ids)) == 2 and all(re.fullmatch(r"v_\d{8}_\d{6}_[0-9a-f]{6}", i) for i in ids)

    for name, exp in sorted(sweep.items(), key=lambda item: -validation_loss(item[1])):  # the best one last
        dvc(repo, "exp", "apply", name)
        assert lora_rank_from_weights(repo / "models" / "adapter") == {exp["params"]["lora"]["r"]}
        assert metadata(repo)["lora"]["r"] == exp["params"]["lora"]["r"]
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"promote {name}")
    assert "train" not in dvc(repo, "status", "train").stdout  # the commit pins the applied experiment


def validation_loss(exp: dict[str, Any]) -> float:
    return exp["metrics"]["dvclive/train/metrics.json"]["validation_loss"]


def wait_for_queue(repo: Path, until: int, timeout: float = 600) -> None:
    """Until `until` experiments exist; `dvc queue status` (slower) only to catch a failure early."""
    started, checked = time.monotonic(), time.monotonic()
    while len(experiment_refs(repo)) < until:
        if time.monotonic() - checked > 15:
            status, checked = dvc(repo, "queue", "status").stdout, time.monotonic()
            assert "Failed" not in status, status
        assert time.monotonic() - started < timeout, dvc(repo, "queue", "status").stdout
        time.sleep(0.5)


def experiment_refs(repo: Path) -> list[str]:
    """refs/exps/<baseline sha split 2/38>/<name>: one per finished experiment (not the queue's own refs)."""
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").splitlines()
    return [ref for ref in refs if len(ref.split("/")) == 5 and len(ref.split("/")[2]) == 2]
