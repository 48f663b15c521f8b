"""The stage entry points: instant --help, and user errors as one clear line with exit code 2."""

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run

STAGES = ("base", "prepare", "train", "evaluate")


@pytest.mark.parametrize("stage", STAGES)
def test_help_does_not_import_heavy_libraries(stage: str) -> None:
    probe = (
        f"import sys, runpy; sys.argv = ['x', '--help']\n"
        f"try:\n    runpy.run_module('stages.{stage}', run_name='__main__')\n"
        f"except SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'dvc') if m in sys.modules))"
    )
    out = run([sys.executable, "-c", probe], ROOT).stdout
    assert "usage:" in out and "HEAVY []" in out


def test_bad_record_is_reported_by_file_and_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"prompt": "no completion"}) + "\n")
    args = ["--raw", str(raw), "--tokenizer", str(tiny_model_dir), "--out", str(tmp_path / "out")]
    result = run([sys.executable, "-m", "stages.prepare", *args, "--live", str(tmp_path / "live")], ROOT, check=False)
    assert result.returncode == 2
    assert f"error: {raw}:2: " in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_params_are_reported_by_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  source: smollm2\n  trust_remote_code: yes please\n")
    result = run(
        [sys.executable, "-m", "stages.base", "--out", str(tmp_path / "b"), "--params", str(params)], ROOT, check=False
    )
    assert result.returncode == 2 and "base.trust_remote_code must be bool" in result.stderr
    assert not (tmp_path / "b").exists()
