"""params.yaml `data` and `prepare`: what the pipeline trains and tests on, and how it is split."""

from dataclasses import dataclass
from pathlib import Path

from loravc.core.params import knob, load_max_length, load_sections, require


@dataclass
class DataParams:
    """What the pipeline trains and tests on (dvc.yaml passes data.train to prepare and depends on it)."""

    train: str = knob(
        "data/pydoc_qa",
        "a JSONL file, or a directory of JSONL files of one shape whose test.jsonl (if any) is a fixed test split "
        "(docs/data.md); the shipped sets: data/README.md",
    )

    loss_on: str = knob(
        "auto", "auto: a completion, every assistant turn, or all of a text; all: every token of every record"
    )

    def __post_init__(self) -> None:
        require(bool(self.train.strip()), "data.train", "must name a JSONL file or a directory")
        require(self.loss_on in ("auto", "all"), "data.loss_on", f"must be auto or all, got {self.loss_on!r}")


@dataclass
class PrepareParams:
    """How the raw JSONL becomes train/validation/test splits."""

    seed: int = knob(42, "shuffle before splitting: the same seed gives the same splits")
    test_records: int = knob(40, "held-out records for perplexity, unless the data has a fixed test.jsonl")
    validation_records: int = knob(24, "records for the validation loss")
    train_records: int | None = knob(160, "cap on training records (null: all remaining); sized for a 2-core CPU")

    def __post_init__(self) -> None:
        require(self.test_records >= 1, "prepare.test_records", "must be at least 1")
        require(self.validation_records >= 1, "prepare.validation_records", "must be at least 1")
        require(
            self.train_records is None or self.train_records >= 1,
            "prepare.train_records",
            "must be at least 1, or null for all",
        )


@dataclass
class PrepareInputs:
    """What stage `prepare` reads of params.yaml (its `params:` in dvc.yaml): data, prepare and train.max_length."""

    data: DataParams
    prepare: PrepareParams
    max_length: int


def load_inputs(path: str | Path) -> PrepareInputs:
    sections = load_sections(path, data=DataParams, prepare=PrepareParams)
    return PrepareInputs(sections.data, sections.prepare, load_max_length(path))
