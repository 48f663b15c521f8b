import json
from pathlib import Path

import pytest

from loravc.core.errors import UserError
from loravc.data import records as data

ROOT = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("record", "shape"),
    [
        ({"text": "hello"}, "text"),
        ({"prompt": "Q?", "completion": " A."}, "prompt-completion"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "messages"),
    ],
)
def test_three_shapes(record: dict, shape: str) -> None:
    assert data.record_shape(record) == shape


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "Expecting property name"),
        ('["a list"]', "JSON object"),
        ('{"prompt": "only a prompt"}', 'no "completion"'),
        ('{"text": ""}', "non-empty"),
        ('{"text": "a", "messages": []}', "exactly one"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "assistant"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', "role"),
    ],
)
def test_bad_record_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, line])
    with pytest.raises(UserError) as err:
        data.read_jsonl(path)
    assert f"{path}:2:" in str(err.value) and message in str(err.value)


def test_mixed_shapes_are_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"prompt": "p", "completion": "c"}])
    with pytest.raises(UserError, match=":2:"):
        data.read_jsonl(path)


def test_extra_keys_are_dropped_and_duplicates_removed(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "topic": "x"}, {"text": "b"}, {"text": "a", "topic": "y"}])
    records = data.read_jsonl(path)
    assert records == [{"text": "a"}, {"text": "b"}, {"text": "a"}]
    assert data.dedupe(records) == [{"text": "a"}, {"text": "b"}]


def test_split_is_deterministic_disjoint_and_independent_of_train_cap() -> None:
    records = [{"text": f"r{i}"} for i in range(50)]
    a = data.split(records, seed=1, test=5, validation=4, train=None)
    b = data.split(records, seed=1, test=5, validation=4, train=10)
    c = data.split(records, seed=2, test=5, validation=4, train=None)
    assert a == data.split(records, seed=1, test=5, validation=4, train=None)
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (41, 4, 5)
    assert a["test"] == b["test"] and a["validation"] == b["validation"] and b["train"] == a["train"][:10]
    assert a["test"] != c["test"]
    texts = [r["text"] for rows in a.values() for r in rows]
    assert len(texts) == len(set(texts)) == 50


def test_split_too_small_says_which_params() -> None:
    with pytest.raises(UserError, match=r"prepare\.test_records"):
        data.split([{"text": "a"}] * 3, seed=0, test=2, validation=1, train=None)


def test_shipped_dataset_is_valid_and_has_its_licence_noted() -> None:
    records = data.read_jsonl(ROOT / "data" / "raw" / "pydoc_topics.jsonl")
    unique = data.dedupe(records)
    assert (len(records), len(unique)) == (464, 376)  # data/README.md: 88 paragraphs repeat another one
    assert len({r["text"] for r in unique}) == len(unique) and data.dedupe(unique) == unique
    assert "PSF" in (ROOT / "data" / "README.md").read_text(encoding="utf-8")


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
CHAT_PC = {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}


def test_conversational_prompt_completion_is_its_own_shape() -> None:
    assert data.record_shape(CHAT_PC) == data.CHAT_PROMPT_COMPLETION
    with pytest.raises(ValueError, match="last message of 'completion' must be the assistant's"):
        data.record_shape({"prompt": CHAT_PC["prompt"], "completion": [{"role": "user", "content": "x"}]})
    with pytest.raises(ValueError, match=r"prompt\[0\]\.role"):
        data.record_shape({"prompt": [{"role": "robot", "content": "x"}], "completion": CHAT_PC["completion"]})


def test_a_byte_that_is_not_utf8_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=rf"{path}:2: not UTF-8 \(byte 0xe9 at column 14\)"):
        data.read_jsonl(path)


def test_a_directory_source_reads_every_file_and_holds_test_jsonl_out(tmp_path: Path) -> None:
    source = tmp_path / "mine"
    source.mkdir()
    write_jsonl(
        source / "a.jsonl", [CHAT, {"messages": [*CHAT["messages"][:1], {"role": "assistant", "content": "1"}]}]
    )
    write_jsonl(
        source / "b.jsonl", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "2"}]}]
    )
    (source / "notes.txt").write_text("not data", encoding="utf-8")
    write_jsonl(source / "test.jsonl", [CHAT])
    found = data.read_source(source)
    assert found.shape == data.MESSAGES and found.test == [CHAT] and len(found.train) == 3
    assert set(found.files) == {str(source / n) for n in ("a.jsonl", "b.jsonl", "test.jsonl")}
    split = data.split(found.train, seed=0, test=99, validation=1, train=None, fixed_test=found.test)
    assert split["test"] == [CHAT] and CHAT not in split["train"] + split["validation"]  # never trained on
    assert len(split["train"]) + len(split["validation"]) == 2


def test_a_source_of_mixed_shapes_or_nothing_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "mine"
    source.mkdir()
    with pytest.raises(UserError, match=r"no training data \(\*\.jsonl besides test\.jsonl\)"):
        data.read_source(source)
    write_jsonl(source / "a.jsonl", [CHAT])
    write_jsonl(source / "test.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(UserError, match=r"every file must hold one shape of record, found a\.jsonl: messages"):
        data.read_source(source)
    with pytest.raises(UserError, match=r"data\.train: .*/nowhere does not exist"):
        data.read_source(tmp_path / "nowhere")


def test_a_conversation_needs_something_to_answer() -> None:
    with pytest.raises(ValueError, match="needs a message before the assistant's reply"):
        data.record_shape({"messages": [{"role": "assistant", "content": "yo"}]})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"is damaged \(Expecting property name"),
        ('{"source": "x"}', "lacks shape, loss_on, fixed_test, files"),
        ("[1, 2]", r"is damaged \(not a JSON object\)"),
        (
            '{"source": "x", "shape": null, "loss_on": "everything", "fixed_test": null, "files": {}}',
            "has an invalid shape, loss_on",
        ),
        (
            '{"source": "x", "shape": "text", "loss_on": "all", "fixed_test": 3, "files": []}',
            "invalid files, fixed_test",
        ),
    ],
)
def test_a_damaged_info_json_names_itself_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / data.INFO_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message + r".*run `dvc repro prepare`"):
        data.read_info(tmp_path)
