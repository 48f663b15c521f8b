"""The stage entry points: instant --help, and user errors as one clear line with exit code 2."""

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run

STAGES = ("base", "prepare", "train", "evaluate", "report")


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


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
UNMARKABLE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"


@pytest.mark.parametrize(
    ("rows", "setup", "message"),
    [
        ([{"text": "fine"}, {"prompt": "no completion"}], None, r"{data}:2: has \"prompt\" but no \"completion\""),
        ([CHAT, {"messages": CHAT["messages"][:1]}], None, r"{data}:2: the last message of 'messages' must be"),
        ([CHAT] * 3, "unmarkable", r"neither loravc nor TRL can mark .* set data\.loss_on: all"),
        ([{"text": "fine"}], "missing", r"data\.train: {data} does not exist"),
    ],
    ids=["bad record", "no assistant turn", "unknown chat template family", "missing data"],
)
def test_bad_data_is_one_line_naming_file_or_key_and_nothing_is_written(
    rows: list, setup: str | None, message: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    import re
    import shutil

    data, tokenizer = tmp_path / "raw.jsonl", tiny_model_dir
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if setup == "missing":
        data.unlink()
    if setup == "unmarkable":  # a base whose chat template TRL does not know either
        tokenizer = Path(shutil.copytree(tiny_model_dir, tmp_path / "tok"))
        (tokenizer / "chat_template.jinja").write_text(UNMARKABLE, encoding="utf-8")
    args = ["--data", str(data), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "out")]
    result = run([sys.executable, "-m", "stages.prepare", *args, "--live", str(tmp_path / "live")], ROOT, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.fullmatch(r"error: .*" + message.format(data=re.escape(str(data))) + r".*\n", result.stderr, re.DOTALL)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "live").exists()


def test_bad_params_are_reported_by_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("base:\n  source: smollm2\n  trust_remote_code: yes please\n")
    result = run(
        [sys.executable, "-m", "stages.base", "--out", str(tmp_path / "b"), "--params", str(params)], ROOT, check=False
    )
    assert result.returncode == 2 and "base.trust_remote_code must be true or false" in result.stderr
    assert not (tmp_path / "b").exists()
