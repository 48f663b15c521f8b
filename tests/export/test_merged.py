"""Format `merged`: `loravc export --format merged` is `loravc merge` through the format table; what both print."""

import json
from pathlib import Path

import pytest

from loravc.cli.main import main, run
from loravc.export import merged


def test_merge_says_when_a_qlora_version_merged_into_the_full_precision_base() -> None:
    record = {
        "merged_from": {"version_id": "v_1", "rev": "abcdef0123"},
        "logits_check": {"max_abs_difference": 2.0e-6, "tolerance": 1.0e-4},
    }
    assert merged.summary(record | {"trained_on_bits": None}, "out").startswith(
        "merged v_1 (abcdef0) into its base -> out"
    )
    qlora = merged.summary(record | {"trained_on_bits": 4}, "out")
    assert qlora.startswith("merged v_1 (abcdef0) into its full-precision base (it trained on the 4-bit one) -> out")


def test_export_format_merged_writes_what_merge_writes(
    versions_repo: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = str(versions_repo["repo"])
    by_merge, by_export = tmp_path / "by-merge", tmp_path / "by-export"
    main(["-C", repo, "merge", "rank-two", str(by_merge)])
    merge_out = capsys.readouterr().out.splitlines()
    main(["-C", repo, "export", "rank-two", str(by_export), "--format", "merged"])
    export_out = capsys.readouterr().out.splitlines()
    assert merge_out[0].startswith("merged v_") and merge_out[0].endswith(f"-> {by_merge}")
    assert export_out[:-1] == [merge_out[0].replace(str(by_merge), str(by_export)), merge_out[1]]
    assert export_out[-1].startswith("exported v_") and export_out[-1].endswith(f"-> {by_export}")
    names = sorted(p.name for p in by_merge.iterdir())
    assert {"metadata.json", "README.md", "model.safetensors", "config.json"} <= set(names)
    assert sorted(p.name for p in by_export.iterdir()) == names
    weights = "model.safetensors"
    assert (by_export / weights).read_bytes() == (by_merge / weights).read_bytes()
    record = json.loads((by_export / "metadata.json").read_text())
    assert record["merged_from"]["rev"] == versions_repo["exp"] and record["base"] == "float32"
    assert "library_name: transformers" in (by_export / "README.md").read_text()


def test_merged_takes_no_gguf_option(versions_repo: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(versions_repo["repo"])
    with pytest.raises(SystemExit) as stopped:
        run(["-C", repo, "export", "main", str(tmp_path / "m"), "--format", "merged", "--base-only"])
    assert stopped.value.code == 2
    assert "go with --format gguf or gguf-lora" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
