"""Scratch copies of this project as fresh git + DVC repositories, and running tools in them.

What the benchmarks (bench/) and the tests (tests/) both build on: the files a clone holds, a
params.yaml editor that keeps comments, the smoke-size params, and git/dvc commands run with this
interpreter's tools first on PATH, offline and quiet. No torch or transformers imports here.
"""

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loravc.core.tools import dvc_cmd, tool_env

ROOT = Path(__file__).resolve().parents[1]
"""The repository root of this checkout (where dvc.yaml and params.yaml are)."""

PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
    "stages",
    "loravc",
    "data/raw",
    "data/pydoc_qa",
    "data/harness",
)
"""What a fresh clone holds that the pipeline needs (no models, no DVC cache), relative to ROOT."""

STDERR_LOG = "LORAVC_STDERR_LOG"
"""Environment variable naming a directory: `run` keeps there what each dvc, stage or loravc process printed on
stderr (the test session sets it: tests/test_quiet_runs.py reads them)."""


def run(
    cmd: Sequence[str], cwd: Path, *, check: bool = True, env: Mapping[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command in cwd under tool_env(env), output captured as text; with `check`, a non-zero exit
    raises RuntimeError naming the command, the directory and both outputs."""
    result = subprocess.run(list(cmd), cwd=cwd, env=tool_env(env), capture_output=True, text=True, **kwargs)
    keep_stderr(cmd, cwd, result)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode} in {cwd}\n{result.stdout}\n{result.stderr}")
    return result


def project_command(cmd: Sequence[str]) -> bool:
    """dvc, a pipeline stage or loravc: `python -m dvc|stages.<stage>|loravc ...`, or `dvc ...`."""
    args = list(cmd)
    name = args[2] if len(args) > 2 and args[1] == "-m" else Path(args[0]).name if args else ""
    return name in ("dvc", "loravc") or name.startswith("stages.")


def keep_stderr(cmd: Sequence[str], cwd: Path, result: subprocess.CompletedProcess[str]) -> None:
    """With STDERR_LOG set, a project command's argv, directory, exit status and stderr as one JSON file there."""
    folder = os.environ.get(STDERR_LOG)
    if not folder or not project_command(cmd):
        return
    record = {"argv": list(cmd), "cwd": str(cwd), "returncode": result.returncode, "stderr": result.stderr or ""}
    path = Path(folder) / f"{time.time_ns()}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".partial").write_text(json.dumps(record), encoding="utf-8")
    path.with_suffix(".partial").replace(path)


def git(repo: Path, *args: str) -> str:
    """`git ARGS` in repo; its stdout, stripped."""
    return run(["git", *args], repo).stdout.strip()


def copy_project_files(dest: Path) -> None:
    """Copy those of PROJECT_FILES that exist in ROOT into dest (no __pycache__)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def update_params(path: Path, changes: Mapping[str, Any]) -> None:
    """Merge `changes` (nested dicts) into a params.yaml keeping its comments and key order (ruamel round-trip,
    YAML 1.2, as DVC does): a key whose old and new values are both mappings is merged, any other is replaced."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(path.read_text(encoding="utf-8"))
    merge_params(doc, changes)
    with path.open("w", encoding="utf-8") as f:
        yaml.dump(doc, f)


def merge_params(node: Any, changes: Mapping[str, Any]) -> Any:
    """Merge `changes` into the mapping `node` in place (a key whose old and new values are both mappings is
    merged, any other replaced); returns `node`."""
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(node.get(key), Mapping):
            merge_params(node[key], value)
        else:
            node[key] = value
    return node


def smoke_params(base: Path) -> dict[str, Any]:
    """params.yaml changes that shrink the default pipeline to seconds on a tiny base model directory.

    They train on the text set: text records have no answers to generate, which keeps each run to
    seconds (the tests that need chat or prompt-completion data switch data.train themselves)."""
    return {
        "base": {"source": str(base)},
        "data": {"train": "data/raw/pydoc_topics.jsonl"},
        "prepare": {"test_records": 6, "validation_records": 4, "train_records": 16},
        "train": {
            "device": "cpu",
            "max_length": 64,
            "trainer": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
        },
        "evaluate": {"device": "cpu", "max_new_tokens": 4},
    }


def init_repo(dest: Path) -> Path:
    """Make dest (created if missing) a git repository on branch main with a committer, and a DVC
    repository with core.autostage on, as this project's own .dvc/config has it. Nothing committed."""
    dest.mkdir(parents=True, exist_ok=True)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "config", "user.email", "loravc@example.com")
    git(dest, "config", "user.name", "loravc")
    run(dvc_cmd("init", "-q"), dest)
    run(dvc_cmd("config", "core.autostage", "true"), dest)
    return dest


def project_repo(dest: Path, params: Mapping[str, Any] | None = None) -> Path:
    """A fresh git + DVC repository in dest holding the project's files as a clone would (no models, no
    DVC cache), with `params` merged into its params.yaml: one commit, "project". Returns dest."""
    copy_project_files(dest)
    if params:
        update_params(dest / "params.yaml", params)
    init_repo(dest)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project")
    return dest
