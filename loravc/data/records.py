"""Records in the shapes TRL's SFTTrainer accepts, validated line by line, and split.

- language modelling:           {"text": "..."}
- prompt-completion:            {"prompt": "...", "completion": "..."}
- conversational:               {"messages": [{"role": "user", "content": "..."}, ...]}
- conversational prompt-completion: {"prompt": [messages], "completion": [assistant messages]}

Other keys (a source, a topic) are allowed in raw files and dropped when preparing. A data source
(`data.train` in params.yaml) is one JSONL file, or a directory of JSONL files of one shape in which
`test.jsonl`, if present, is a fixed held-out test split.
"""

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError

TEXT, PROMPT_COMPLETION, MESSAGES = "text", "prompt-completion", "messages"
CHAT_PROMPT_COMPLETION = "chat-prompt-completion"  # prompt and completion are message lists
KEYS = {TEXT: ("text",), PROMPT_COMPLETION: ("prompt", "completion"), MESSAGES: ("messages",)}
KEYS[CHAT_PROMPT_COMPLETION] = KEYS[PROMPT_COMPLETION]
CHAT_SHAPES = (MESSAGES, CHAT_PROMPT_COMPLETION)  # rendered with the tokenizer's chat template
ROLES = ("system", "user", "assistant", "tool")
FIXED_TEST_FILE = "test.jsonl"  # in a data directory: the held-out test split, never trained on
INFO_FILE = "info.json"  # in the prepared directory: where the data came from and its shape
INFO_KEYS = ("source", "shape", "loss_on", "fixed_test", "files")

Record = dict[str, Any]


def record_shape(record: Any) -> str:
    """The shape of one record, or ValueError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    found = [name for name in (TEXT, PROMPT_COMPLETION, MESSAGES) if KEYS[name][0] in record]
    if len(found) != 1:
        raise ValueError('needs exactly one of "text", "prompt" + "completion", or "messages"')
    shape = found[0]
    for key in KEYS[shape]:
        if key not in record:
            raise ValueError(f'has "{KEYS[shape][0]}" but no "{key}"')
    if shape == MESSAGES:
        _check_messages(record["messages"], "messages")
        return shape
    if shape == PROMPT_COMPLETION and isinstance(record["prompt"], list):
        _check_messages(record["prompt"], "prompt", last_assistant=False)
        _check_messages(record["completion"], "completion")
        return CHAT_PROMPT_COMPLETION
    for key in KEYS[shape]:
        if not isinstance(record[key], str) or not record[key].strip():
            raise ValueError(f'"{key}" must be a non-empty string')
    return shape


def _check_messages(messages: Any, key: str, *, last_assistant: bool = True) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f'"{key}" must be a non-empty list of messages')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(f'{key}[{i}] must be an object with a string "content"')
        if message.get("role") not in ROLES:
            raise ValueError(f"{key}[{i}].role must be one of {', '.join(ROLES)}")
    if last_assistant and messages[-1]["role"] != "assistant":
        raise ValueError(f"the last message of {key!r} must be the assistant's (what the model learns to say)")
    if key == "messages" and len(messages) < 2:
        raise ValueError('"messages" needs a message before the assistant\'s reply (what it answers)')


def read_jsonl(path: Path) -> list[Record]:
    """Read and validate a JSONL file; any bad line (not UTF-8, not JSON, wrong shape) names file and line."""
    return _read(path)[0]


def _read(path: Path) -> tuple[list[Record], str, str]:
    """(records with only their shape's keys, shape, sha256 of the file's bytes) of one JSONL file."""
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    records, shapes, blob = [], set(), path.read_bytes()
    for number, raw in enumerate(blob.splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(
                f"{path}:{number}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}): "
                "save the file as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            shape = record_shape(record)
            record = {key: record[key] for key in KEYS[shape]}
            _key(record).encode("utf-8")  # JSON parses a lone surrogate escape ("\ud800"); UTF-8 cannot hold it
        except UnicodeEncodeError as err:
            raise UserError(
                f'{path}:{number}: "\\u{ord(err.object[err.start]):04x}" is a lone surrogate escape, not a character: '
                "write the character itself (or both halves of its pair)"
            ) from None
        except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError
            raise UserError(f"{path}:{number}: {err}") from None
        shapes.add(shape)
        if len(shapes) > 1:
            earlier = ", ".join(sorted(shapes - {shape}))
            raise UserError(f"{path}:{number}: is a {shape} record, but earlier lines are {earlier}: one shape a file")
        records.append(record)
    if not records:
        raise UserError(f"{path}: no records")
    return records, shapes.pop(), hashlib.sha256(blob).hexdigest()


@dataclass
class Source:
    """The records of a data source: training records, the fixed test records if any, their shape, their files."""

    train: list[Record]
    test: list[Record] | None
    shape: str
    files: dict[str, str]  # path -> sha256 of its bytes


def read_source(path: Path) -> Source:
    """A JSONL file, or a directory of JSONL files of one shape (its test.jsonl: the fixed test split)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".jsonl" and p.is_file())
        if not [p for p in files if p.name != FIXED_TEST_FILE]:
            raise UserError(f"{path}: no training data (*.jsonl besides {FIXED_TEST_FILE}) in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"data.train: {path} does not exist: name a JSONL file or a directory of them")
    train: list[Record] = []
    test, shapes, digests = None, {}, {}
    for file in files:
        records, shapes[file], digests[str(file)] = _read(file)
        if file.name == FIXED_TEST_FILE and path.is_dir():
            test = records
        else:
            train += records
    if len(set(shapes.values())) > 1:
        found = ", ".join(f"{p.name}: {shape}" for p, shape in shapes.items())
        raise UserError(f"{path}: every file must hold one shape of record, found {found}")
    return Source(train, test, next(iter(shapes.values())), digests)


def dedupe(records: Iterable[Record]) -> list[Record]:
    """Drop exact duplicates, keeping the first occurrence and the original order."""
    seen, kept = set(), []
    for record in records:
        key = _key(record)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def _key(record: Record) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def split(
    records: list[Record],
    *,
    seed: int,
    test: int,
    validation: int,
    train: int | None,
    fixed_test: list[Record] | None = None,
) -> dict[str, list[Record]]:
    """Shuffle with `seed`, then take the test, validation and train records in that order.

    The test and validation sets depend only on the data and the seed, not on the train cap. With
    `fixed_test` the test split is those records (the `test` count is not used) and any training
    record equal to one of them is left out, so nothing tested is trained on.
    """
    if fixed_test is not None:
        held_out = {_key(r) for r in fixed_test}
        records, test = [r for r in records if _key(r) not in held_out], 0
    if len(records) < test + validation + 1:
        need = f"prepare.test_records ({test}) + " if fixed_test is None else ""
        raise UserError(
            f"only {len(records)} distinct training records: need more than {need}prepare.validation_records "
            f"({validation}); lower them or add data"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    shuffled = [records[i] for i in order]
    rest = shuffled[test + validation :]
    return {
        "train": rest if train is None else rest[:train],
        "validation": shuffled[test : test + validation],
        "test": shuffled[:test] if fixed_test is None else fixed_test,
    }


def write_splits(splits: dict[str, list[Record]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, records in splits.items():
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_split(prepared_dir: Path, name: str) -> list[Record]:
    path = prepared_dir / f"{name}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: run `dvc repro prepare` (or `dvc pull`) first")
    return read_jsonl(path)


def files_sha256(paths: Iterable[Path]) -> str:
    """One sha256 over several files' bytes, in the given order (the data identity)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def write_info(out_dir: Path, info: dict[str, Any]) -> None:
    """Where the prepared splits came from (source, shape, files and their sha256): versions record it."""
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def read_info(prepared_dir: Path) -> dict[str, Any]:
    """info.json as prepare wrote it; missing, damaged or incomplete is a UserError naming the file."""
    path = prepared_dir / INFO_FILE
    fix = "run `dvc repro prepare` (or `dvc checkout data/prepared`)"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found: {fix}") from None
    except ValueError as err:
        raise UserError(f"{path} is damaged ({err}): {fix}") from None
    if not isinstance(info, dict):
        raise UserError(f"{path} is damaged (not a JSON object): {fix}")
    missing = [key for key in INFO_KEYS if key not in info]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: {fix}")
    wrong = {  # what train and evaluate rely on: a wrong value would pick the wrong trained tokens
        "shape": info["shape"] not in KEYS,
        "loss_on": info["loss_on"] not in ("all", "completion", "assistant"),
        "files": not isinstance(info["files"], dict),
        "fixed_test": info["fixed_test"] is not None and not isinstance(info["fixed_test"], str),
    }
    bad = [key for key, is_wrong in wrong.items() if is_wrong]
    if bad:
        raise UserError(f"{path} has an invalid {', '.join(bad)}: {fix}")
    return info
