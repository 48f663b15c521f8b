"""The modules each pipeline stage really loaded lie within that stage's deps in dvc.yaml.

Every stage process of the session's pipeline runs records what it loaded (tests/stage_imports/sitecustomize.py):
the default params, and the runs with DoRA, PiSSA, QLoRA, early stopping and harness tasks that other tests
make. This test runs last (conftest) and reads them all; run alone, it still has the built repository's run.
"""

import json
from pathlib import Path

import yaml
from conftest import STAGE_IMPORTS
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


def test_every_stage_run_loaded_only_its_deps(built_repo_template: Path) -> None:
    records = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(STAGE_IMPORTS.glob("*.json"))]
    assert {r["stage"] for r in records} >= STAGES, "the built repository's run recorded every stage"
    problems = []
    for record in records:
        dvc_yaml = yaml.safe_load((Path(record["cwd"]) / "dvc.yaml").read_text(encoding="utf-8"))
        deps = [str(d) for d in dvc_yaml["stages"][record["stage"]]["deps"]]
        if extra := outside(project_files(record["files"]), deps):
            problems.append(f"{record['stage']} ({' '.join(record['argv'][1:])[:80]}): {sorted(extra)}")
    assert problems == []
