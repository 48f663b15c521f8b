"""Property-based: whatever bytes a data file holds, reading it gives records or one clear UserError.

`read_jsonl` and `read_source` are fed random bytes (invalid UTF-8, NUL, CR, deep `[[[[` nesting, lone
surrogate escapes) and random JSON values, some of them shaped almost like records. They must return
records that the prepare stage can write back as UTF-8 JSON, or raise UserError naming the file first,
and the line when a line is at fault. Any other exception escaping is a bug.
"""

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loravc.core.errors import UserError
from loravc.data import records as data

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["text", "prompt", "completion", "messages", "role", "content", "source"]
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(data.ROLES)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner),
    max_leaves=12,
)
message = st.fixed_dictionaries({"role": st.sampled_from([*data.ROLES, "robot"]), "content": st.text(max_size=8)})
near_records = st.one_of(  # shaped almost like records
    st.fixed_dictionaries({"text": st.text(max_size=12)}),
    st.fixed_dictionaries({"prompt": st.text(max_size=8), "completion": st.text(max_size=8)}),
    st.fixed_dictionaries({"messages": st.lists(message, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"prompt": st.lists(message, max_size=2), "completion": st.lists(message, max_size=2)}),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3),
)
words = st.text(min_size=1, max_size=12).filter(str.strip)
valid_records = st.one_of(  # records that read, so that files get past line 1 and mix shapes
    st.fixed_dictionaries({"text": words}),
    st.fixed_dictionaries({"prompt": words, "completion": words}),
    st.fixed_dictionaries(
        {
            "messages": st.tuples(
                st.just({"role": "user", "content": "hi"}), message.map(lambda m: m | {"role": "assistant"})
            )
        }
    ),
)
json_lines = (json_values | near_records | valid_records | valid_records).map(
    lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8")
)
hostile = st.sampled_from(
    [
        b"[" * 100_000,  # deeper than any recursion limit
        b'{"text": ' + b"[" * 5_000,
        b'{"text": "a", "x": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"messages": [{"role": "assistant", "content": "\\udfff"}]}',
        b'{"text": "NUL\x00inside"}',
        b"\x00",
        b"\xff\xfe{}",
        b'{"text": "caf\xe9"}',  # latin-1
        b"\xef\xbb\xbf" + b'{"text": "after a BOM"}',
        b'{"text": NaN}',
        b'{"text": "' + b"9" * 5_000 + b'"}',
        b'{"text": ' + b"9" * 5_000 + b"}",  # over int's digit limit
        b"",
        b"   ",
    ]
)
lines = st.lists(json_lines | json_lines | hostile | st.binary(max_size=40), max_size=6)
separators = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n"])
contents = st.one_of(st.binary(max_size=200), st.builds(lambda ls, sep: sep.join(ls), lines, separators))


def check_file(path: Path, raw: bytes) -> None:
    """read_jsonl(path) returns writable records or raises a UserError that names the file (and the bad line)."""
    try:
        records = data.read_jsonl(path)
    except UserError as err:
        message = str(err)
        assert message.startswith(f"{path}:"), message
        line = re.match(rf"{re.escape(str(path))}:(\d+): ", message)
        if line is None:
            assert message == f"{path}: no records", message
            return
        number, split = int(line.group(1)), raw.splitlines()
        assert 1 <= number <= len(split), message
        assert split[number - 1].strip(), f"blames blank line {number}: {message}"
        before = path.with_name("before.jsonl")
        before.write_bytes(b"\n".join(split[: number - 1]))
        try:  # everything before the blamed line reads, so the first bad line is the one named
            data.read_jsonl(before)
        except UserError as earlier:
            assert str(earlier) == f"{before}: no records", f"{message} but already {earlier}"
        return
    assert records and all(set(r) in ({"text"}, {"prompt", "completion"}, {"messages"}) for r in records)
    for record in records:  # what prepare does next with them: dedupe (json.dumps) and write as UTF-8
        json.dumps(record, ensure_ascii=False).encode("utf-8")


@FUZZ
@given(contents)
def test_read_jsonl_returns_records_or_a_user_error_naming_file_and_line(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_bytes(raw)
        check_file(path, raw)


@FUZZ
@given(st.dictionaries(st.sampled_from(["train.jsonl", "more.jsonl", "test.jsonl", "notes.txt"]), contents))
def test_read_source_of_a_directory_returns_a_source_or_a_user_error_naming_it(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "source"
        directory.mkdir()
        for name, raw in files.items():
            (directory / name).write_bytes(raw)
        try:
            source = data.read_source(directory)
        except UserError as err:
            assert str(err).startswith(f"{directory}"), str(err)
            return
        jsonl = {str(directory / n) for n in files if n.endswith(".jsonl")}
        assert set(source.files) == jsonl and source.train
        assert (source.test is not None) == ("test.jsonl" in files)
        for record in source.train + (source.test or []):
            assert data.record_shape(record) == source.shape
            json.dumps(record, ensure_ascii=False).encode("utf-8")


def test_a_lone_surrogate_escape_is_refused_with_its_line(tmp_path: Path) -> None:
    """JSON parses "\\ud800", but no UTF-8 file can hold it: prepare would crash writing the splits."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "fine \\ud83d\\ude00 pair"}\n{"text": "lone \\ud800"}\n')
    try:
        data.read_jsonl(path)
    except UserError as err:
        assert str(err) == (
            f'{path}:2: "\\ud800" is a lone surrogate escape, not a character: '
            "write the character itself (or both halves of its pair)"
        )
    else:
        raise AssertionError("a lone surrogate was accepted")
    path.write_bytes(b'{"text": "fine \\ud83d\\ude00 pair", "source": "\\ud800 in a dropped key"}\n')
    assert data.read_jsonl(path) == [{"text": "fine \U0001f600 pair"}]
