"""The record of checks that passed: a key passes again only while what it was made of is unchanged."""

import json
from pathlib import Path

from loravc.core import memo


def test_a_key_holds_once_added_and_the_newest_are_kept(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "tmp" / "checked.json"
    assert not memo.holds(path, "a")  # no file yet
    memo.add(path, "a")
    assert memo.holds(path, "a") and not memo.holds(path, "b")
    monkeypatch.setattr(memo, "KEEP", 3)
    for key in "bcd":
        memo.add(path, key)
    assert json.loads(path.read_text()) == ["b", "c", "d"]  # "a", the oldest, went
    memo.add(path, "b")  # seen again: the newest now, once
    assert json.loads(path.read_text()) == ["c", "d", "b"]


def test_a_damaged_memo_holds_nothing_and_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "checked.json"
    path.write_text("{not json")
    assert not memo.holds(path, "a")
    memo.add(path, "a")
    assert json.loads(path.read_text()) == ["a"]


def test_a_memo_that_cannot_be_written_is_skipped(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    path = blocked / "checked.json"  # its folder is a file: mkdir fails with an OSError
    memo.add(path, "a")  # no error: the check passed, it is only not remembered
    assert not memo.holds(path, "a")


def test_keys_follow_every_part_of_what_they_are_made_of() -> None:
    what = {"train": {"lr": 1e-3, "targets": ["q_proj"]}, "base": Path("models/base")}
    assert memo.key_of(what) == memo.key_of(dict(reversed(list(what.items()))))  # order does not matter
    assert memo.key_of(what) != memo.key_of({**what, "train": {"lr": 1e-3, "targets": ["k_proj"]}})


def test_the_code_hash_changes_with_any_module(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "loravc"
    (package / "train").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "train" / "lora.py").write_text("RULE = 1\n")
    monkeypatch.setattr(memo.loravc, "__file__", str(package / "__init__.py"))
    before = memo.code_sha256()
    (package / "train" / "lora.py").write_text("RULE = 2\n")
    assert memo.code_sha256() != before
