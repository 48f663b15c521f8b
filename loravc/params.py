"""The whole of params.yaml: every section's dataclass, read and validated at once.

Stage `source` loads it first on every `dvc repro`, so a bad key anywhere stops the run before any stage
has removed its outputs; `loravc tune` reads the knobs it searches from it. The other stages load only
their own sections (loravc.core.params.load_sections).
"""

from dataclasses import dataclass
from pathlib import Path

from loravc.base.params import BaseParams
from loravc.core.errors import UserError
from loravc.core.params import read_params, section
from loravc.core.schema import build
from loravc.evaluate.params import EvaluateParams
from loravc.prepare.params import DataParams, PrepareParams
from loravc.train.params import TrainParams
from loravc.tune.params import TuneParams


@dataclass
class Params:
    base: BaseParams = section(BaseParams, "the pretrained causal LM every version builds on (docs/data.md)")
    data: DataParams = section(DataParams, "what the pipeline trains and tests on (docs/data.md)")
    prepare: PrepareParams = section(PrepareParams, "how the data becomes train, validation and test splits")
    train: TrainParams = section(TrainParams, "LoRA fine-tuning with TRL's SFTTrainer and PEFT")
    evaluate: EvaluateParams = section(
        EvaluateParams, "perplexity, task scores and samples of base vs fine-tuned (docs/evaluation.md)"
    )
    tune: TuneParams = section(
        TuneParams,
        "`loravc tune`, a search whose trials are DVC experiments (docs/tuning.md); no stage reads this "
        "section, so editing it retrains nothing",
    )


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate all of params.yaml; every problem names the file and the key."""
    raw = read_params(path)
    try:
        return build(Params, raw, "")
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
