"""The prepare stage's work: a data source becomes train/validation/test splits, with token counts.

Tokens are counted as the loss trains on them (loravc.data.labels). A record that keeps no trained token
within train.max_length is dropped with a count: it would train on nothing.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError
from loravc.data import labels
from loravc.data import records as data
from loravc.prepare.params import PrepareInputs


@dataclass
class Prepared:
    splits: dict[str, list[data.Record]]
    info: dict[str, Any]  # written to <prepared>/info.json: source, shape, loss_on, files, fixed_test
    summary: dict[str, Any] = field(default_factory=dict)  # the stage's metrics


def prepare(source_path: Path, params: PrepareInputs, tokenizer: Any) -> Prepared:
    """Read, dedupe and split the data source; count and drop by the tokens the loss trains on."""
    source = data.read_source(source_path)
    plan = labels.loss_plan(source.shape, tokenizer, params.data.loss_on)  # a shape the base cannot train: stop here
    unique = data.dedupe(source.train)
    fixed_test = data.dedupe(source.test) if source.test is not None else None
    p, max_length = params.prepare, params.max_length
    split = data.split(
        unique,
        seed=p.seed,
        test=p.test_records,
        validation=p.validation_records,
        train=None,
        fixed_test=fixed_test,
    )
    available = len(split["train"])  # what test and validation left; prepare.train_records caps it
    split["train"] = split["train"][: p.train_records]
    summary: dict[str, Any] = {
        "records": len(source.train),
        "duplicates": len(source.train) - len(unique),
        "train_available": available,
    }
    splits = {}
    for name, records in split.items():
        encoded = [_encode(source_path, name, i, r, tokenizer, plan) for i, r in enumerate(records, start=1)]
        trained = [sum(mask[1:max_length]) for _, mask in encoded]  # the first token is never a target
        cut = sum(sum(mask[max_length:]) for _, mask in encoded)  # trained tokens past train.max_length
        splits[name] = [r for r, n in zip(records, trained, strict=True) if n > 0]
        if not splits[name]:
            raise UserError(
                f"{source_path}: no {name} record keeps a trained token within train.max_length ({max_length}): "
                "raise train.max_length or shorten the prompts"
            )
        summary |= {
            f"{name}_records": len(splits[name]),
            f"{name}_tokens": sum(len(ids) for ids, _ in encoded),
            f"{name}_trained_tokens": sum(trained),
            f"{name}_trained_tokens_cut": cut,
            f"{name}_over_max_length": sum(len(ids) > max_length for ids, _ in encoded),
            f"{name}_dropped_no_target": len(records) - len(splits[name]),
        }
    test_file = str(source_path / data.FIXED_TEST_FILE) if fixed_test is not None else None
    info = {"source": str(source_path), "shape": source.shape, "loss_on": plan.tokens, "fixed_test": test_file}
    return Prepared(splits, info | {"files": source.files}, summary)


def _encode(
    source: Path, split: str, number: int, record: data.Record, tokenizer: Any, plan: labels.LossPlan
) -> tuple[list[int], list[int]]:
    """labels.encode, with what a chat template refuses (roles out of order, say) as a UserError."""
    from jinja2 import TemplateError

    try:
        return labels.encode(record, tokenizer, plan, max_length=10**9)
    except (TemplateError, ValueError) as err:
        raise UserError(
            f"{source}: {split} record {number} ({json.dumps(record)[:80]}...) does not render with the base "
            f"model's chat template: {err}"
        ) from None


def report(prepared: Prepared, params: PrepareInputs) -> str:
    """The stage's one line: where the data came from, the splits (and the train cap), what the loss trains on and
    what train.max_length cut from it. Token counts are trained tokens, kept and cut, on the same records."""
    info, s, names = prepared.info, prepared.summary, list(prepared.splits)
    test = f"fixed, {info['fixed_test']}" if info["fixed_test"] else "split off by prepare.seed"
    sizes = {name: str(len(rows)) for name, rows in prepared.splits.items()}
    available, cap = s["train_available"], params.prepare.train_records
    if s["train_records"] + s["train_dropped_no_target"] < available:
        sizes["train"] += f" of {available}, capped by prepare.train_records ({cap})"
    kept, cut, over, dropped = (
        sum(s[f"{n}_{key}"] for n in names)
        for key in ("trained_tokens", "trained_tokens_cut", "over_max_length", "dropped_no_target")
    )
    return (
        f"prepare: {s['records']} {info['shape']} records from {info['source']}, {s['duplicates']} duplicates -> "
        + ", ".join(f"{name} {size}" for name, size in sizes.items())
        + f" (test: {test}); the loss trains on {info['loss_on']} tokens: {kept}, and train.max_length "
        f"({params.max_length}) cut {cut} more from {over} records over it; "
        f"{dropped} records dropped with no trained token left"
    )
