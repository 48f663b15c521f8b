"""The reference pages and params.yaml's comments are made from the code, and stay current."""

import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from loravc.cli import reference
from loravc.cli.reference import comment_params_yaml, generated, keys, main
from loravc.core.schema import parse_yaml


@pytest.fixture(scope="module")
def made() -> dict[Path, str]:
    return generated(ROOT)


@pytest.mark.parametrize("name", ["params.yaml", "docs/reference/params.md", "docs/reference/cli.md"])
def test_each_generated_file_is_current(made: dict[Path, str], name: str) -> None:
    assert (ROOT / name).read_text(encoding="utf-8") == made[ROOT / name], (
        f"{name} is stale: run `python -m loravc.cli.reference` and commit what it writes"
    )


def test_every_key_has_help_and_params_yaml_has_every_section_key() -> None:
    found = {key.path: key for key in keys()}
    assert [path for path, key in found.items() if not key.help] == []
    shipped = parse_yaml((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for path, key in found.items():
        if not key.section and "." in path:  # every leaf key of the schema is written out in params.yaml
            section, *rest = path.split(".")
            value = shipped[section]
            for part in rest:
                value = value[part]


def test_comments_are_the_help_and_values_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "# a header the file keeps\n\n"
        "prepare:   # an old comment\n"
        "  seed: 7            # a wrong comment\n"
        "                     # and its stray continuation\n"
        "  test_records: 3 \n"
        "train:\n"
        "  trainer:\n"
        "    learning_rate: 2.0e-4\n"
        "    weird: 'a # not a comment'   # gone\n"
    )
    out = comment_params_yaml(text)
    assert parse_yaml(out) == parse_yaml(text)  # the values as DVC reads them
    lines = out.splitlines()
    assert lines[:2] == ["# a header the file keeps", ""]
    seed = next(key.help for key in keys() if key.path == "prepare.seed")
    assert (
        lines[3] == "  seed: 7".ljust(reference.COMMENT_COLUMN) + f"# {seed}"
        and "stray" not in out
        and "wrong" not in out
    )
    assert lines[2].startswith("prepare:") and "# how the data becomes" in lines[2]
    assert "learning_rate: 2.0e-4    # the initial learning rate for AdamW" in out  # trl.SFTConfig's own help
    assert "    weird: 'a # not a comment'" in out  # a key SFTConfig lacks: no help, value whole
    assert comment_params_yaml(out) == out


def test_a_changed_help_makes_the_files_stale_and_check_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    shutil.copytree(ROOT / "docs" / "reference", root / "docs" / "reference")
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, root / name)
    assert main(["--check", "--root", str(root)]) == 0
    real = reference.keys
    edited = [
        reference.Key(k.path, k.type, k.default, "a new meaning" if k.path == "train.lora.r" else k.help, k.section)
        for k in real()
    ]
    monkeypatch.setattr(reference, "keys", lambda: iter(edited))
    assert main(["--check", "--root", str(root)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"stale: {root / 'docs/reference/params.md'}",
        f"stale: {root / 'params.yaml'}",
    ]
    assert main(["--root", str(root)]) == 0  # writes them
    assert "    r: 4                     # a new meaning" in (root / "params.yaml").read_text(encoding="utf-8")
    assert main(["--check", "--root", str(root)]) == 0


def test_outside_the_repository_it_says_where_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--root", str(tmp_path)]) == 2
    said = capsys.readouterr().err
    assert said == f"error: {tmp_path} holds no params.yaml and dvc.yaml: run it from the repository root\n"
