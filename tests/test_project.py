"""bench.project: the scratch-project scaffolding the tests and the benchmarks share."""

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import project
from bench.project import PROJECT_FILES, ROOT, copy_project_files, run, smoke_params, update_params
from loravc.core.schema import parse_yaml, read_yaml
from loravc.core.tools import tool_env


def merged(tree: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The plain-dict meaning of update_params: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(tree)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


def test_update_params_merges_nested_keys_and_keeps_every_comment(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")
    before = parse_yaml(original)
    changes = {
        "train": {"lora": {"r": before["train"]["lora"]["r"] + 1}, "trainer": {"max_steps": 3}},
        "evaluate": {"batch_size": before["evaluate"]["batch_size"] + 1},
        "added": {"nested": {"key": [1, 2]}},
    }
    update_params(path, changes)
    text = path.read_text(encoding="utf-8")
    # every other value kept (train.lora.alpha, train.trainer.*, ...), the changed ones changed, new keys added
    assert parse_yaml(text) == merged(before, changes)
    assert parse_yaml(text)["train"]["lora"]["alpha"] == before["train"]["lora"]["alpha"]
    assert list(parse_yaml(text)) == [*before, "added"]  # a round trip keeps the order, new keys go last
    comments = [line[line.index("#") :] for line in original.splitlines() if "#" in line]
    assert [line[line.index("#") :] for line in text.splitlines() if "#" in line] == comments


def test_update_params_replaces_what_is_not_a_mapping_on_both_sides(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("a:\n  b: 1  # kept\n  c: 2\nd: 3\nlist: [1, 2]\n", encoding="utf-8")
    update_params(path, {"a": {"c": {"deep": True}}, "d": {"now": "a mapping"}, "list": [3]})
    assert read_yaml(path) == {"a": {"b": 1, "c": {"deep": True}}, "d": {"now": "a mapping"}, "list": [3]}
    assert "b: 1  # kept" in path.read_text(encoding="utf-8")


def test_update_params_reads_and_writes_yaml_1_2_floats(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 2e-4  # YAML 1.2: a float, YAML 1.1: a string\n  wd: 1.0e-5\n", encoding="utf-8")
    update_params(path, {"train": {"warmup": 3e-5, "big": 1e20, "plain": 0.5}})
    text = path.read_text(encoding="utf-8")
    assert "lr: 2e-4  # YAML 1.2" in text and "wd: 1.0e-5" in text  # untouched values written as they were
    train = read_yaml(path)["train"]  # as DVC reads params.yaml
    assert train == {"lr": 2e-4, "wd": 1.0e-5, "warmup": 3e-5, "big": 1e20, "plain": 0.5}
    assert all(type(value) is float for value in train.values())


def test_smoke_params_are_a_valid_shrink_of_params_yaml(tmp_path: Path) -> None:
    from loravc.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    update_params(path, smoke_params(tmp_path / "tiny"))
    params = load_params(path)
    assert params.train.trainer["max_steps"] == 2 and params.train.max_length == 64
    assert read_yaml(path)["base"]["source"] == str(tmp_path / "tiny")


def test_copy_project_files_copies_exactly_the_project_files_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    present = {
        "dvc.yaml": "stages: {}\n",
        "params.yaml": "a: 1  # comment\n",
        ".gitignore": "/models/\n",
        "stages/train.py": "print('train')\n",
        "loravc/__init__.py": "",
        "loravc/sub/mod.py": "x = 1\n",
        "data/raw/records.jsonl": "{}\n",
    }
    skipped = {
        "README.md": "not a project file\n",
        "models/base/config.json": "{}\n",
        "data/prepared/train.jsonl": "{}\n",
        "loravc/__pycache__/mod.cpython-311.pyc": "bytecode",
        "loravc/sub/__pycache__/mod.cpython-311.pyc": "bytecode",
    }
    for rel, content in {**present, **skipped}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content, encoding="utf-8")
    monkeypatch.setattr(project, "ROOT", root)  # pyproject.toml and .dvcignore are missing: skipped, no error
    dest = tmp_path / "dest" / "repo"
    copy_project_files(dest)
    assert files_under(dest) == set(present)
    assert all((dest / rel).read_text(encoding="utf-8") == content for rel, content in present.items())
    assert not list(dest.rglob("__pycache__"))


def test_copy_project_files_of_this_checkout(tmp_path: Path) -> None:
    copy_project_files(tmp_path)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            expected = {rel for rel in files_under(src) if "__pycache__" not in Path(rel).parts}
            assert files_under(tmp_path / name) == expected, name
        else:
            assert (tmp_path / name).read_bytes() == src.read_bytes(), name
    assert {p.name for p in tmp_path.iterdir()} == {
        name.split("/")[0] for name in PROJECT_FILES if (ROOT / name).exists()
    }


def test_tool_env_puts_this_interpreter_first_and_runs_quiet() -> None:
    env = tool_env({"DVC_NO_ANALYTICS": "0", "EXTRA": "yes"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1" and env["DVCLIVE_OPEN"] == "false"
    assert env["DVC_NO_ANALYTICS"] == "0" and env["EXTRA"] == "yes"  # the caller's variables win


def test_run_captures_output_and_names_a_failed_command(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd(), os.environ['EXTRA']); sys.exit(int(sys.argv[1]))"
    assert run([sys.executable, "-c", code, "0"], tmp_path, env={"EXTRA": "x"}).stdout.split() == [str(tmp_path), "x"]
    assert run([sys.executable, "-c", code, "3"], tmp_path, check=False, env={"EXTRA": "x"}).returncode == 3
    with pytest.raises(RuntimeError, match=re.escape(f"exited 3 in {tmp_path}\n{tmp_path} x")):
        run([sys.executable, "-c", code, "3"], tmp_path, env={"EXTRA": "x"})


def test_project_repo_is_one_clean_commit_with_the_params_merged(tmp_path: Path) -> None:
    repo = project.project_repo(tmp_path / "repo", {"train": {"lora": {"r": 2}}})
    assert project.git(repo, "log", "--format=%s") == "project"
    assert project.git(repo, "status", "--porcelain") == ""
    assert project.git(repo, "config", "user.email") and (repo / ".dvc" / "config").is_file()
    assert "autostage = true" in (repo / ".dvc" / "config").read_text()
    assert read_yaml(repo / "params.yaml")["train"]["lora"]["r"] == 2
    tracked = set(project.git(repo, "ls-files").splitlines())
    assert {"dvc.yaml", "params.yaml", "stages/train.py", "data/raw/pydoc_topics.jsonl", ".dvc/config"} <= tracked
