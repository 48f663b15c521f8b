"""The versioning acceptance test: every committed version comes back byte for byte."""

import json
from pathlib import Path

from loravc.metadata import VERSION_ID_RE
from tests.conftest import dvc, git, lora_rank_from_weights, sha256_tree, update_params


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_commit_change_rank_and_restore_each_version(pipeline_repo: Path) -> None:
    """The full user story from an empty repository (the other tests start from a built copy)."""
    repo = pipeline_repo
    adapter = repo / "models" / "adapter"

    first = dvc(repo, "repro")
    assert ran_stages(first.stdout) == {"base", "prepare", "train", "evaluate"}
    assert "perplexity base" in first.stdout
    meta = json.loads((adapter / "metadata.json").read_text())
    assert meta["lora"]["r"] == 8 and VERSION_ID_RE.fullmatch(meta["version_id"])
    for stage in ("prepare", "train", "evaluate"):
        assert (repo / "dvclive" / stage / "metrics.json").is_file()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "r=8")
    rev_r8, files_r8 = git(repo, "rev-parse", "HEAD"), sha256_tree(adapter)
    assert lora_rank_from_weights(adapter) == {8}
    assert "dvc.lock" in git(repo, "show", "--name-only", "HEAD")

    metrics = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "tuned_perplexity" in json.dumps(metrics)

    update_params(repo / "params.yaml", {"train": {"lora": {"r": 4}}})
    second = dvc(repo, "repro")
    assert ran_stages(second.stdout) == {"train", "evaluate"}
    git(repo, "commit", "-qam", "r=4")
    files_r4 = sha256_tree(adapter)
    assert lora_rank_from_weights(adapter) == {4} and files_r4 != files_r8

    git(repo, "checkout", "-q", rev_r8)
    dvc(repo, "checkout")
    assert sha256_tree(adapter) == files_r8
    assert lora_rank_from_weights(adapter) == {8}

    git(repo, "checkout", "-q", "main")
    dvc(repo, "checkout")
    assert sha256_tree(adapter) == files_r4 and lora_rank_from_weights(adapter) == {4}
    assert "Stage 'train' didn't change" in dvc(repo, "repro").stdout


def test_bad_params_fail_clearly_and_the_version_survives(built_repo: Path) -> None:
    repo = built_repo
    before = sha256_tree(repo / "models" / "adapter")

    update_params(repo / "params.yaml", {"train": {"lora": {"r": -1}}})
    failed = dvc(repo, "repro", check=False)
    assert failed.returncode != 0
    assert "train.lora.r must be a positive integer" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr + failed.stdout

    git(repo, "checkout", "-q", "--", "params.yaml")
    dvc(repo, "checkout")
    assert sha256_tree(repo / "models" / "adapter") == before
