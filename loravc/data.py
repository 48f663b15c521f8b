"""Records in the three shapes TRL's SFTTrainer accepts, validated line by line, and split.

- language modelling: {"text": "..."}
- prompt-completion:  {"prompt": "...", "completion": "..."}
- conversational:     {"messages": [{"role": "user", "content": "..."}, ...]}

Other keys (a source, a topic) are allowed in raw files and dropped when preparing.
"""

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loravc.errors import UserError

SHAPES = {"text": ("text",), "prompt-completion": ("prompt", "completion"), "messages": ("messages",)}
ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "validation", "test")

Record = dict[str, Any]


def record_shape(record: Any) -> str:
    """The shape of one record, or ValueError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    found = [name for name, keys in SHAPES.items() if keys[0] in record]
    if len(found) != 1:
        raise ValueError('needs exactly one of "text", "prompt" + "completion", or "messages"')
    shape = found[0]
    for key in SHAPES[shape]:
        if key not in record:
            raise ValueError(f'has "{SHAPES[shape][0]}" but no "{key}"')
    if shape == "messages":
        _check_messages(record["messages"])
    else:
        for key in SHAPES[shape]:
            if not isinstance(record[key], str) or not record[key].strip():
                raise ValueError(f'"{key}" must be a non-empty string')
    return shape


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError('"messages" must be a non-empty list')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(f'messages[{i}] must be an object with a string "content"')
        if message.get("role") not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's (what the model learns to say)")


def read_jsonl(path: Path) -> list[Record]:
    """Read and validate a JSONL file; any bad line is a UserError naming file and line."""
    if not path.is_file():
        raise UserError(f"{path}: data file not found")
    records, shapes = [], set()
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                shape = record_shape(record)
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                raise UserError(f"{path}:{number}: {err}") from None
            shapes.add(shape)
            if len(shapes) > 1:
                raise UserError(f"{path}:{number}: is a {shape} record, but earlier lines are {shapes - {shape}}")
            records.append({key: record[key] for key in SHAPES[shape]})
    if not records:
        raise UserError(f"{path}: no records")
    return records


def dedupe(records: Iterable[Record]) -> list[Record]:
    """Drop exact duplicates, keeping the first occurrence and the original order."""
    seen, kept = set(), []
    for record in records:
        key = json.dumps(record, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def split(
    records: list[Record], *, seed: int, test: int, validation: int, train: int | None
) -> dict[str, list[Record]]:
    """Shuffle with `seed`, then take the test, validation and train records in that order.

    The test and validation sets depend only on the data and the seed, not on the train cap.
    """
    if len(records) < test + validation + 1:
        raise UserError(
            f"only {len(records)} distinct records: need more than prepare.test_records ({test}) + "
            f"prepare.validation_records ({validation}); lower them or add data"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    shuffled = [records[i] for i in order]
    rest = shuffled[test + validation :]
    return {
        "train": rest if train is None else rest[:train],
        "validation": shuffled[test : test + validation],
        "test": shuffled[:test],
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


def render(record: Record, tokenizer: Any) -> tuple[str, str]:
    """(prompt, completion) text: the loss and perplexity count the completion's tokens only.

    A text record is all completion; a conversation's prompt is every message before the
    last one, rendered with the tokenizer's chat template.
    """
    if "text" in record:
        return "", record["text"]
    if "prompt" in record:
        return record["prompt"], record["completion"]
    messages = record["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    return prompt, full[len(prompt) :]


def count_tokens(records: list[Record], tokenizer: Any) -> int:
    """Tokens of prompt + completion over all records, before truncation."""
    total = 0
    for record in records:
        prompt, completion = render(record, tokenizer)
        total += len(tokenizer(prompt + completion, add_special_tokens=False)["input_ids"])
    return total
