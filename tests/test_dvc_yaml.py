"""dvc.yaml stays precise: each stage depends on its own code folders, and on nothing it does not import."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
CODE = ("loravc", "stages")
PROBE = """
import importlib, importlib.util, json, sys
from pathlib import Path
root = Path.cwd().resolve()
mod = importlib.import_module(sys.argv[1])
# main() imports lazily (fast --help): also import what its source names
import ast
tree = ast.parse(Path(mod.__file__).read_text())
for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] in ('loravc', 'stages'):
        package = importlib.import_module(node.module)
        for alias in node.names:
            if hasattr(package, "__path__") and importlib.util.find_spec(f"{node.module}.{alias.name}"):
                importlib.import_module(f"{node.module}.{alias.name}")
files = sorted(
    str(Path(m.__file__).resolve().relative_to(root))
    for m in list(sys.modules.values())
    if getattr(m, '__file__', None) and Path(m.__file__).resolve().is_relative_to(root)
    and Path(m.__file__).resolve().relative_to(root).parts[0] in ('loravc', 'stages')
)
print(json.dumps(files))
"""


def code_deps(stage: str) -> list[str]:
    """The stage's deps that are repository code: files and folders under loravc/ or stages/."""
    return [str(d) for d in DVC_YAML["stages"][stage]["deps"] if str(d).split("/")[0] in CODE]


def outside(files: set[str], deps: list[str]) -> set[str]:
    """The files that no dep covers (a dep covers itself and, if a folder, everything under it)."""
    return {f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)}


def unused(files: set[str], deps: list[str]) -> set[str]:
    """The deps that cover none of the files."""
    return {d for d in deps if not any(f == d or f.startswith(d.rstrip("/") + "/") for f in files)}


@pytest.mark.parametrize("stage", sorted(DVC_YAML["stages"]))
def test_code_deps_cover_imports_and_only_them(stage: str) -> None:
    module = DVC_YAML["stages"][stage]["cmd"].split()[2]
    result = subprocess.run([sys.executable, "-c", PROBE, module], cwd=ROOT, capture_output=True, text=True, check=True)
    imported = set(json.loads(result.stdout))
    deps = code_deps(stage)
    assert outside(imported, deps) == set(), "imported, yet not a dependency: an edit there would not rerun"
    assert unused(imported, deps) == set(), "a dependency it never imports: an edit there reruns it for nothing"


def test_stage_code_is_folders_by_stage() -> None:
    """Stages depend on the core and their own folders, as directories; only `source` (which checks every
    section of params.yaml) names single files of other stages' folders."""
    for name in DVC_YAML["stages"]:
        deps = code_deps(name)
        assert deps[:3] == [f"stages/{name}.py", "loravc/__init__.py", "loravc/core"]
        if name != "source":
            assert all(not d.endswith(".py") for d in deps[2:]), deps


def test_outside_and_unused_see_folders() -> None:
    deps = ["stages/train.py", "loravc/core", "loravc/train"]
    files = {"stages/train.py", "loravc/core/errors.py", "loravc/tune/params.py"}
    assert outside(files, deps) == {"loravc/tune/params.py"}
    assert unused(files, deps) == {"loravc/train"}
    assert outside({"loravc/trainer/x.py"}, ["loravc/train"]) == {"loravc/trainer/x.py"}


def test_stage_names_match_modules_and_params_sections() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    # stage `source` records what the `base` section names; `report` draws dvclive's files and reads no params
    reads = {"source": "base", "report": None}
    for name, stage in DVC_YAML["stages"].items():
        assert stage["cmd"].split()[2] == f"stages.{name}"
        section = reads.get(name, name)
        if section is None:
            assert "params" not in stage
            continue
        assert section in params
        assert any(str(p).split(".")[0] == section for p in stage["params"])


def test_model_artifact_is_declared() -> None:
    (artifact,) = DVC_YAML["artifacts"].values()
    assert artifact["type"] == "model" and artifact["path"] == "models/adapter"


def test_byte_compiled_files_are_not_dependencies() -> None:
    ignored = (ROOT / ".dvcignore").read_text(encoding="utf-8").splitlines()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def changed_stages(repo: Path) -> set[str]:
    """The stages `dvc status` says would rerun, but `source` (always changed)."""
    from conftest import dvc

    return set(json.loads(dvc(repo, "status", "--json").stdout or "{}")) - {"source"}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_edits_rerun_only_the_stages_whose_code_they_touch(built_repo: Path) -> None:
    """Code edits that once retrained (tune's checks, an evaluate param, a version tool) rerun nothing, or
    only evaluate; a train edit reruns train, so the check can see a rerun."""
    from conftest import dvc, ran_stages

    repo = built_repo
    assert changed_stages(repo) == set()
    edit(repo / "loravc/tune/params.py", '"must be at least 1")', '"must be 1 or more")')
    edit(repo / "loravc/export/use.py", '"""', '"""Edited. ')
    edit(repo / "loravc/versions/catalogue.py", '"""', '"""Edited. ')
    edit(repo / "loravc/cli/render.py", '"""', '"""Edited. ')
    assert changed_stages(repo) == set()
    new_key = '    note: str = knob("", "a new evaluate key")\n'
    edit(repo / "loravc/evaluate/params.py", "    device: str", new_key + "    device: str")
    assert changed_stages(repo) == {"evaluate"}
    assert ran_stages(dvc(repo, "repro").stdout) <= {"evaluate", "report"}
    assert changed_stages(repo) == set()
    edit(repo / "loravc/train/checkpoints.py", '"""', '"""Edited. ')
    assert changed_stages(repo) == {"train"}
