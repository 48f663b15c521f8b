"""prepare: splits from a file or a directory, and truncation made visible (counted, dropped, refused)."""

import hashlib
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from loravc.core.errors import UserError
from loravc.data import labels
from loravc.prepare.params import DataParams, PrepareInputs, PrepareParams
from loravc.prepare.preparation import prepare, report


def params(max_length: int) -> PrepareInputs:
    split = PrepareParams(test_records=2, validation_records=2, train_records=None)
    return PrepareInputs(DataParams(), split, max_length)


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_records_over_max_length_are_counted_and_those_left_with_nothing_to_learn_dropped(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    short = [{"prompt": f"Q{i}:", "completion": f" answer {i}."} for i in range(10)]
    long_prompt = {"prompt": "The assert statement " * 12, "completion": " ok."}  # the completion starts past 32
    long_answer = {"prompt": "Q:", "completion": " the assert statement" * 12}  # truncated, still trains
    source = write(tmp_path / "d.jsonl", [*short, long_prompt, long_answer])
    prepared = prepare(source, params(32), tok)
    s = prepared.summary
    rows = [r for split in prepared.splits.values() for r in split]
    assert long_prompt not in rows and long_answer in rows and len(rows) == 11
    assert sum(s[f"{n}_dropped_no_target"] for n in prepared.splits) == 1
    assert sum(s[f"{n}_over_max_length"] for n in prepared.splits) == 2
    assert prepared.info == {
        "source": str(source),
        "shape": "prompt-completion",
        "loss_on": "completion",
        "fixed_test": None,
        "files": {str(source): hashlib.sha256(source.read_bytes()).hexdigest()},
    }
    plan = labels.loss_plan("prompt-completion", tok)
    masks = [labels.encode(r, tok, plan, max_length=10**9)[1] for r in (long_prompt, long_answer)]
    cut = sum(s[f"{n}_trained_tokens_cut"] for n in prepared.splits)
    assert cut == sum(sum(mask[32:]) for mask in masks) > 0  # the answer tokens past 32: what truncation took
    line = report(prepared, params(32))
    assert "12 prompt-completion records" in line and " of " not in line.split(";")[0]  # no cap: all 8 train
    kept = sum(s[f"{n}_trained_tokens"] for n in prepared.splits)
    assert f"completion tokens: {kept}, and train.max_length (32) cut {cut} more from 2 records over it; 1 rec" in line
    only_long = write(tmp_path / "long.jsonl", [{**long_prompt, "completion": f" ok {i}."} for i in range(8)])
    with pytest.raises(UserError, match=r"no train record keeps a trained token within train\.max_length \(32\)"):
        prepare(only_long, params(32), tok)


def test_the_train_cap_is_said_with_what_it_left_out(tmp_path: Path, tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    source = write(tmp_path / "d.jsonl", [{"text": f"Record number {i} of the data."} for i in range(12)])
    inputs = params(64)
    capped = PrepareInputs(inputs.data, PrepareParams(test_records=2, validation_records=2, train_records=3), 64)
    prepared = prepare(source, capped, tok)
    assert prepared.summary["train_records"] == 3 and prepared.summary["train_available"] == 8
    assert "-> train 3 of 8, capped by prepare.train_records (3), validation 2, test 2 (" in report(prepared, capped)
    assert prepared.splits["test"] == prepare(source, inputs, tok).splits["test"]  # the cap moves no test record


def test_a_fixed_test_file_is_the_test_split(tmp_path: Path, tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    source = tmp_path / "mine"
    source.mkdir()
    write(source / "train.jsonl", [{"text": f"Record number {i} of the data."} for i in range(12)])
    write(source / "test.jsonl", [{"text": "Record number 3 of the data."}, {"text": "A held-out sentence."}])
    prepared = prepare(source, params(64), tok)
    assert prepared.splits["test"] == [{"text": "Record number 3 of the data."}, {"text": "A held-out sentence."}]
    assert {"text": "Record number 3 of the data."} not in prepared.splits["train"] + prepared.splits["validation"]
    assert prepared.info["fixed_test"] == str(source / "test.jsonl") and prepared.summary["train_records"] == 9
    assert "(test: fixed, " in report(prepared, params(64))


def test_a_record_the_chat_template_refuses_is_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (  # roles must alternate, as many templates insist
        "{% for m in messages %}{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}<{{ m['role'] }}>{{ m['content'] }}"
        "{% generation %}{% endgeneration %}{% endfor %}"
    )
    chat = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]} for i in range(9)
    ]
    twice = {"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}, chat[0]["messages"][1]]}
    source = write(tmp_path / "d.jsonl", [*chat, twice])
    with pytest.raises(
        UserError,
        match=r"d\.jsonl: \w+ record \d+ .* does not render with the base model's chat template: roles must alternate",
    ):
        prepare(source, params(64), tok)
