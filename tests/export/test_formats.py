"""The format table and the staging every format shares: a format is one module and one line in FORMATS, and
`loravc export` offers, documents and dispatches whatever the table holds."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from loravc.cli.main import main, parser, run
from loravc.core.errors import UserError
from loravc.export import formats, staging
from loravc.export.staging import Exported, Job, Options, Staged, stage

# --- a format of its own: this module is it (directory_name and write), PLAIN its line in the table ----------------
PLAIN = formats.Format("plain", __name__, "the version id in a text file")


def directory_name(version, options: Options) -> str:
    return f"{version.version_id}-plain"


def write(job: Job) -> Exported:
    def fill(out: Path) -> Staged:
        out.mkdir()
        (out / "id.txt").write_text(job.version.version_id)
        return Staged(f"# {job.version.version_id}\n", job.version.provenance() | {"device": job.device})

    return Exported(job.dest, stage(job.dest, fill), "wrote id.txt")


# --- the table ---------------------------------------------------------------------------------------------------
def test_the_table_names_each_format_once_with_its_module() -> None:
    assert formats.names() == ("peft", "merged", "gguf", "gguf-lora")
    for fmt in formats.FORMATS:
        module = formats.module(fmt)
        assert callable(module.write) and callable(module.directory_name), fmt.name
    assert formats.help_text() == (
        "peft: adapter + metadata (default); merged: base + adapter merged (like `loravc merge`); "
        "gguf: the merged model; gguf-lora: the adapter for llama.cpp --lora"
    )
    with pytest.raises(UserError, match="--format 'onnx': choose one of peft, merged, gguf, gguf-lora"):
        formats.lookup("onnx")


@pytest.mark.parametrize(
    ("name", "options", "directory"),
    [
        ("peft", Options(), "v_1"),
        ("merged", Options(), "v_1-merged"),
        ("gguf", Options(), "v_1-gguf-f16"),
        ("gguf", Options(type="q8_0"), "v_1-gguf-q8_0"),
        ("gguf", Options(base_only=True), "v_1-base-f16"),
        ("gguf-lora", Options(), "v_1-gguf-lora"),
        ("gguf-lora", Options(base_only=True, type="q8_0"), "v_1-base-q8_0"),
    ],
)
def test_each_format_names_its_default_directory(name: str, options: Options, directory: str) -> None:
    version = SimpleNamespace(version_id="v_1", short="abc1234")
    assert formats.module(formats.lookup(name)).directory_name(version, options) == directory


def test_options_a_format_does_not_take_are_refused_naming_those_that_do() -> None:
    for name in ("peft", "merged"):
        for given in (Options(type="q8_0"), Options(base_only=True), Options(tokenizer_pre="gpt2")):
            with pytest.raises(UserError) as refused:
                formats.refuse_options(formats.lookup(name), given)
            assert str(refused.value) == "--type, --base-only and --tokenizer-pre go with --format gguf or gguf-lora"
        formats.refuse_options(formats.lookup(name), Options())
    formats.refuse_options(formats.lookup("gguf"), Options(type="q8_0", base_only=True, tokenizer_pre="gpt2"))


# --- staging -----------------------------------------------------------------------------------------------------
def files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def test_stage_writes_the_files_card_and_record_then_renames_into_place(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "new"

    def fill(out: Path) -> Staged:
        assert not out.exists() and out.parent.parent == target.parent  # a sibling's child: one file system
        out.mkdir()
        (out / "weights.bin").write_text("w")
        return Staged("# card\n", {"rev": "abc"}, "metadata.json")

    assert stage(target, fill) == {"rev": "abc"}
    assert files(target) == {"README.md": "# card\n", "metadata.json": '{\n  "rev": "abc"\n}\n', "weights.bin": "w"}
    assert [p.name for p in target.parent.iterdir()] == ["new"]  # no scratch left
    stage(tmp_path / "made", lambda out: Staged("c", {}))  # a fill that writes nothing still gets a directory
    assert sorted(files(tmp_path / "made")) == ["README.md", "version.json"]


def test_stage_refuses_an_existing_target_and_leaves_nothing_when_a_fill_fails(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    called = []
    with pytest.raises(UserError, match="taken already exists: choose another directory"):
        stage(taken, lambda out: called.append(out))  # type: ignore[arg-type,func-returns-value]
    assert called == []

    def failing(out: Path) -> Staged:
        out.mkdir()
        (out / "half.bin").write_text("half")
        raise UserError("damaged base")

    with pytest.raises(UserError, match="damaged base"):
        stage(tmp_path / "new", failing)

    def made_meanwhile(out: Path) -> Staged:
        out.mkdir()
        (tmp_path / "raced").mkdir()
        (tmp_path / "raced" / "theirs.txt").write_text("theirs")
        return Staged("c", {})

    with pytest.raises(UserError, match="raced already exists"):
        stage(tmp_path / "raced", made_meanwhile)

    def no_space(out: Path) -> Staged:
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match=r"cannot write .*full: No space left on device; nothing was written"):
        stage(tmp_path / "full", no_space)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raced", "taken"]  # no scratch, no half directory
    assert files(taken) == {"mine.txt": "keep"} and files(tmp_path / "raced") == {"theirs.txt": "theirs"}


# --- a new format: one module, one line ---------------------------------------------------------------------------
def test_a_format_added_to_the_table_is_offered_documented_and_dispatched(
    versions_repo: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(versions_repo["repo"])
    with pytest.raises(SystemExit):  # not in the table: not a choice
        run(["-C", repo, "export", "main", str(tmp_path / "before"), "--format", "plain"])
    assert "invalid choice: 'plain'" in capsys.readouterr().err

    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, PLAIN))
    assert sys.modules[__name__] is formats.module(PLAIN)
    with pytest.raises(SystemExit):
        parser().parse_args(["export", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "{peft,merged,gguf,gguf-lora,plain}" in shown and "plain: the version id in a text file" in shown

    main(["-C", repo, "export", "main", str(tmp_path / "plain"), "--format", "plain"])
    out = capsys.readouterr().out.splitlines()
    version_id = (tmp_path / "plain" / "id.txt").read_text()
    assert out == ["wrote id.txt", f"exported {version_id} ({versions_repo['r4'][:7]}) -> {tmp_path / 'plain'}"]
    assert sorted(files(tmp_path / "plain")) == ["README.md", "id.txt", "version.json"]
    record = json.loads((tmp_path / "plain" / "version.json").read_text())
    assert (record["rev"], record["device"]) == (versions_repo["r4"], "cpu")

    monkeypatch.setattr(staging, "EXPORT_DIR", str(tmp_path / "home"))  # absolute: the repository stays clean
    main(["-C", repo, "export", "main", "--format", "plain"])
    assert (tmp_path / "home" / f"{version_id}-plain" / "id.txt").read_text() == version_id
    capsys.readouterr()

    with pytest.raises(SystemExit) as stopped:  # it takes none of the GGUF options
        run(["-C", repo, "export", "main", str(tmp_path / "typed"), "--format", "plain", "--type", "q8_0"])
    assert stopped.value.code == 2
    assert "go with --format gguf or gguf-lora" in capsys.readouterr().err
    assert not (tmp_path / "typed").exists()
