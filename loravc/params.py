"""The whole of params.yaml: every section's dataclass, read and validated at once.

Stage `source` loads it first on every `dvc repro`, so a bad key anywhere stops the run before any stage
has removed its outputs; `loravc tune` reads the knobs it searches from it. The other stages load only
their own sections (loravc.core.params.load_sections).
"""

from dataclasses import dataclass, field
from pathlib import Path

from loravc.base.params import BaseParams
from loravc.core.errors import UserError
from loravc.core.params import read_params
from loravc.core.schema import build
from loravc.evaluate.params import EvaluateParams
from loravc.prepare.params import DataParams, PrepareParams
from loravc.train.params import TrainParams
from loravc.tune.params import TuneParams


@dataclass
class Params:
    base: BaseParams = field(default_factory=BaseParams)
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tune: TuneParams = field(default_factory=TuneParams)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate all of params.yaml; every problem names the file and the key."""
    raw = read_params(path)
    try:
        return build(Params, raw, "")
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
