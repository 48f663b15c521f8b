"""Reading pins fast: libyaml with YAML 1.2 types reads every dvc.yaml and dvc.lock as ruamel (DVC) does; the index
of parsed pins by blob ids is used, rebuilt and never trusted across parser changes."""

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loravc.core.schema import parse_yaml
from loravc.versions import catalogue as versions_module
from loravc.versions.pins import load_yaml12, parse_pins, pins_from_dict, pins_to_dict
from tests.conftest import ROOT


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (nan equals nan), recursively."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def history_blobs() -> list[tuple[str, bytes]]:
    """Every version of dvc.yaml and dvc.lock in this repository's history."""
    git = ["git", "-C", str(ROOT)]
    found = []
    for name in ("dvc.yaml", "dvc.lock"):
        commits = subprocess.run(
            [*git, "log", "--format=%H", "--", name], capture_output=True, text=True
        ).stdout.split()
        for commit in commits:
            blob = subprocess.run([*git, "show", f"{commit}:{name}"], capture_output=True).stdout
            if blob:
                found.append((f"{commit[:7]}:{name}", blob))
    return found


def test_every_dvc_file_in_the_history_reads_as_ruamel_reads_it() -> None:
    blobs = history_blobs()
    assert len(blobs) > 30  # this repository's own history: every pinned version's dvc.lock and its dvc.yaml
    differ = [name for name, blob in blobs if not same(load_yaml12(blob), parse_yaml(blob))]
    assert differ == []


def test_yaml_11_and_12_differences_read_as_yaml_12() -> None:
    text = """
    strings: [no, on, yes, off, 1:20, '1e-3', 0x]
    numbers: [1e-3, 2e-4, .5, -.5, 3., 1_000, 010, 0o17, 0x1f, -0x1f, +12, .inf, -.inf]
    other: [~, null, '', true, False, 2026-11-29]
    ruamel: [0b101, +_1, .5e3, +.5e3, .5e+3, 017, -0b11, 1_0, '0', -0, +.inf, NaN, Null, 1e3]
    base: &base {x: 1}
    merged: {<<: *base, y: 3}
    """
    ours, theirs = load_yaml12(text), parse_yaml(text)
    assert same(ours, theirs)
    assert ours["strings"][:4] == ["no", "on", "yes", "off"] and ours["numbers"][:2] == [0.001, 0.0002]
    assert ours["numbers"][6] == 10  # YAML 1.1 reads 010 as octal 8
    assert ours["merged"] == {"x": 1, "y": 3}  # merge keys, as in a hand-written dvc.yaml
    assert same(load_yaml12("x: .nan"), parse_yaml("x: .nan"))


def test_pins_survive_the_index_unchanged() -> None:
    yaml, lock = (ROOT / "dvc.yaml").read_bytes(), (ROOT / "dvc.lock").read_bytes()
    pins = parse_pins(load_yaml12(yaml), load_yaml12(lock))
    assert pins is not None and pins == parse_pins(parse_yaml(yaml), parse_yaml(lock))
    assert pins_from_dict(json.loads(json.dumps(pins_to_dict(pins)))) == pins
    assert pins_from_dict(pins_to_dict(None)) is None


def test_the_index_is_used_warm_and_dropped_when_the_parser_changes(
    versions_repo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORAVC_STORE", str(tmp_path / "store"))  # this test's own index
    repo = versions_repo["repo"]
    with versions_module.Versions(repo) as cold:
        listed = [v.version_id for v in cold.all]
    index = json.loads((tmp_path / "store" / versions_module.INDEX_FILE).read_text())
    assert len(index["pins"]) >= 3

    parsed = []
    real = versions_module.load_yaml12
    monkeypatch.setattr(versions_module, "load_yaml12", lambda blob: parsed.append(1) or real(blob))
    with versions_module.Versions(repo) as warm:
        assert [v.version_id for v in warm.all] == listed
    assert parsed == []  # every commit's pins came from the index

    monkeypatch.setattr(versions_module, "_parser_id", lambda: "another parser")
    with versions_module.Versions(repo) as changed:
        assert [v.version_id for v in changed.all] == listed
    assert parsed  # a parser change rebuilds the index rather than trusting it

    index_file = tmp_path / "store" / versions_module.INDEX_FILE
    index_file.write_text("{damaged")
    with versions_module.Versions(repo) as damaged:
        assert [v.version_id for v in damaged.all] == listed
    assert json.loads(index_file.read_text())["pins"] == index["pins"]  # a damaged index is rewritten whole


def test_pins_json_cannot_hold_exactly_stay_out_of_the_index() -> None:
    import dataclasses
    import datetime

    yaml, lock = (ROOT / "dvc.yaml").read_bytes(), (ROOT / "dvc.lock").read_bytes()
    pins = parse_pins(load_yaml12(yaml), load_yaml12(lock))
    assert versions_module._indexable(pins) == pins_to_dict(pins)
    dated = dataclasses.replace(pins, params=pins.params | {"data.snapshot": datetime.date(2026, 11, 29)})
    assert versions_module._indexable(dated) is False  # parsed again each time, never stored as a string
