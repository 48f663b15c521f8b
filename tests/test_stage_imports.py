"""The modules each pipeline stage really loaded lie within that stage's deps in dvc.yaml.

Every stage process of the session's pipeline runs records what it loaded (tests/stage_imports/sitecustomize.py):
the default params, harness tasks and the other options the suite's pipeline tests run; this module adds the train
stage with DoRA, PiSSA, and QLoRA with early stopping (their code is imported lazily), on a copy of
the built repository. The check runs last (conftest) and reads them all.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from conftest import STAGE_IMPORTS, dvc, update_params
from test_dvc_yaml import outside

STAGES = {"source", "base", "prepare", "train", "evaluate", "report"}


def project_files(files: list[str]) -> set[str]:
    """The project's own modules, as paths from the repository root (loravc/..., stages/...)."""
    found = set()
    for name in files:
        parts = Path(name).parts
        root = next((i for i, part in enumerate(parts) if part in ("loravc", "stages")), None)
        if root is not None and "site-packages" not in parts:
            found.add("/".join(parts[root:]))
    return found


def test_project_files_are_named_from_the_root() -> None:
    files = ["/tmp/x/repo/loravc/train/lora.py", "/tmp/x/repo/stages/train.py", "/usr/lib/python3/json/__init__.py"]
    assert project_files(files) == {"loravc/train/lora.py", "stages/train.py"}


# train.lora and train.quantization/early_stopping as params.yaml takes them (a QLoRA version's evaluation loads its
# base k-bit through loravc/core, in every stage's deps)
VARIANTS = {
    "dora": {"lora": {"use_dora": True}},
    "pissa": {"lora": {"init_lora_weights": "pissa"}},
    "qlora-early-stopping": {"quantization": {"bits": 4}, "early_stopping": {"patience": 1, "eval_steps": 1}},
}


def test_train_runs_with_each_peft_option_for_the_check(built_repo: Path) -> None:
    """Their records are read by the check below, which waits for every other test (this one runs beside them)."""
    params = built_repo / "params.yaml"
    built = params.read_text(encoding="utf-8")
    for train in VARIANTS.values():
        if "quantization" in train and importlib.util.find_spec("bitsandbytes") is None:
            continue  # not installed here (QLORA=1 scripts/setup.sh; CI has it): its lazy imports go unrecorded
        params.write_text(built, encoding="utf-8")
        update_params(params, {"train": train})
        assert "Running stage 'train'" in dvc(built_repo, "repro", "--single-item", "train").stdout  # train alone


@pytest.mark.slow  # it reads the pipeline runs of the slow tests
def test_every_stage_run_loaded_only_its_deps() -> None:
    records = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(STAGE_IMPORTS.glob("*.json"))]
    assert {r["stage"] for r in records} >= STAGES, "the built repository's run recorded every stage"
    problems = []
    for record in records:
        assert record["dvc_yaml"], f"{record['stage']} ran without a dvc.yaml in {record['cwd']}"
        deps = [str(d) for d in yaml.safe_load(record["dvc_yaml"])["stages"][record["stage"]]["deps"]]
        if extra := outside(project_files(record["files"]), deps):
            problems.append(f"{record['stage']} ({' '.join(record['argv'][1:])[:80]}): {sorted(extra)}")
    assert problems == []
