"""The package's folders keep docs/layout.md's rules: imports point one way, no cycle, no module or function too long.

Every `from loravc... import` counts, also those inside functions (imported lazily for a fast --help) and
under TYPE_CHECKING: each is a dependency all the same.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "loravc"
STAGES = ("base", "data", "prepare", "train", "evaluate", "report")
# What each folder may import besides itself (docs/layout.md): cli -> tools -> stages' folders -> core.
MAY_IMPORT = {
    "core": set(),
    "base": {"core"},
    "data": {"core"},
    "prepare": {"core", "data"},
    "train": {"core", "data"},
    "evaluate": {"core", "data"},
    "report": {"core"},
    "params": {"core", "base", "prepare", "train", "evaluate", "tune"},  # loravc/params.py: all of params.yaml
    "versions": {"core", "data", "evaluate"},
    "export": {"core", "data", "base", "train", "evaluate", "versions"},
    "tune": {"core", "train", "params", "versions"},
    "cli": {"core", "params", "report", "versions", "export", "tune", "train"},
    "__main__": {"cli"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "loravc":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "loravc"}
    return found


def folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_folder_has_its_rule() -> None:
    assert {folder(m) for m in modules()} - {"__init__"} == set(MAY_IMPORT)


@pytest.mark.parametrize("name", sorted(MAY_IMPORT))
def test_imports_point_one_way(name: str) -> None:
    wrong = {
        f"{module} -> {target}"
        for module, targets in graph().items()
        if folder(module) == name
        for target in targets
        if folder(target) not in MAY_IMPORT[name] | {name, "__init__"}
    }
    assert wrong == set()


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle() -> None:
    # a package's __init__ is imported by its modules' imports, not a cycle of code
    edges = {m: {t for t in targets if t != "loravc"} for m, targets in graph().items()}
    assert cycles(edges) == []


def test_cycles_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_and_functions_stay_small() -> None:
    long_modules, long_functions = [], []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "stages").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{where}:{node.lineno} {node.name}: {lines} lines")
    assert long_modules == []
    assert long_functions == []
