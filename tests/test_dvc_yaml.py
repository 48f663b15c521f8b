"""dvc.yaml stays precise: each stage depends on exactly the repository code it imports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
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


@pytest.mark.parametrize("stage", sorted(DVC_YAML["stages"]))
def test_code_deps_equal_imports(stage: str) -> None:
    module = DVC_YAML["stages"][stage]["cmd"].split()[2]
    result = subprocess.run([sys.executable, "-c", PROBE, module], cwd=ROOT, capture_output=True, text=True, check=True)
    imported = {f for f in json.loads(result.stdout)}
    declared = {d for d in DVC_YAML["stages"][stage]["deps"] if d.endswith(".py")}
    assert declared == imported


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
