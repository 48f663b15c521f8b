"""params.yaml `tune`: the search space and study of `loravc tune`. No stage reads this section."""

import re
from dataclasses import dataclass
from typing import Any

from loravc.core.params import knob, require

TUNE_SAMPLERS = ("tpe", "random", "grid")
TUNE_PRUNERS = ("median", "none")
STUDY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,59}")  # also the prefix of its experiments' names


@dataclass
class Knob:
    """One dimension of tune.space: a range (low, high, optionally log scale or a step) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def check(self, key: str) -> None:
        ranged = self.low is not None or self.high is not None
        require(ranged != (self.choices is not None), key, "needs either low and high, or choices")
        if self.choices is not None:
            require(len(self.choices) > 0, key, "has an empty list of choices")
            require(not self.log and self.step is None, key, "takes log and step with a range only")
            return
        require(self.low is not None and self.high is not None, key, "needs both low and high")
        assert self.low is not None and self.high is not None
        require(self.low < self.high, key, f"is an empty range: low {self.low} is not below high {self.high}")
        require(not self.log or self.low > 0, key, f"is on a log scale, so low must be above 0, got {self.low}")
        require(self.step is None or self.step > 0, key, f"step must be above 0, got {self.step}")
        require(not (self.log and self.step is not None), key, "takes log or step, not both")


@dataclass
class TuneParams:
    """`loravc tune`: a hyperparameter search whose trials are DVC experiments. No stage reads this section,
    so editing it retrains nothing; loravc.tune.space checks the knobs and the objective against the pipeline."""

    study: str = knob("lora", "study name; its trials are the experiments <study>-<trial number>")
    storage: str | None = knob(
        None,
        "null: the journal file .dvc/tmp/tune/<study>.journal; a journal file's path; or a database URL that "
        "several machines share (sqlite:///..., postgresql://...)",
    )
    sampler: str = knob("tpe", "tpe, random or grid (grid: every knob a list of choices, or a range with a step)")
    seed: int = knob(42, "seed of the sampler")
    trials: int = knob(8, "finished trials the study is to hold (loravc tune --trials overrides it)")
    objective: str = knob("validation_loss", "a validation metric the pipeline writes (never a test metric)")
    direction: str = knob("minimize", "minimize or maximize the objective")
    pruner: str = knob("median", "median: stop a trial worse than the median at the same evaluation; none")
    space: dict[str, Knob] = knob(
        {
            "train.trainer.learning_rate": Knob(low=2.0e-4, high=3.0e-3, log=True),
            "train.lora.r": Knob(choices=[4, 8, 16]),
        },
        "params.yaml keys and their ranges (low, high, log, step) or choices",
    )

    def __post_init__(self) -> None:
        require(bool(STUDY_NAME.fullmatch(self.study)), "tune.study", "must be a letter, then letters, digits, _ or -")
        require(self.sampler in TUNE_SAMPLERS, "tune.sampler", f"must be one of {', '.join(TUNE_SAMPLERS)}")
        require(self.pruner in TUNE_PRUNERS, "tune.pruner", f"must be one of {', '.join(TUNE_PRUNERS)}")
        require(self.direction in ("minimize", "maximize"), "tune.direction", "must be minimize or maximize")
        require(self.trials >= 1, "tune.trials", "must be at least 1")
        require(self.seed >= 0, "tune.seed", "must be 0 or more")
        require(bool(self.space), "tune.space", "names no knob: add at least one params.yaml key")
        for key, dimension in self.space.items():
            dimension.check(f"tune.space.{key}")
