"""loravc.tune.summary: the lines a study closes with, its metric names read from tune params and the metrics file."""

from typing import Any

import optuna
import pytest

from loravc.tune.params import Knob, TuneParams
from loravc.tune.space import Dimension
from loravc.tune.summary import shown_scores, summary
from tests.tune.scratch import LR

# dvclive/evaluate/metrics.json as the evaluate stage writes it with the default evaluate section
DEFAULT_TEST = {
    "tuned_loss": 1.24734, "tuned_perplexity": 3.4811, "tuned_tokens": 607,
    "base_loss": 4.476099, "base_perplexity": 87.8911, "base_tokens": 607,
    "perplexity_ratio": 0.0396, "task_records": 87,
    "base_exact_match": 0.0, "tuned_exact_match": 14.9425,
    "exact_match_gain": 14.9425, "exact_match_gain_low": 8.046, "exact_match_gain_high": 22.9885,
    "base_f1": 0.092, "tuned_f1": 14.9425, "f1_gain": 14.8506, "f1_gain_low": 7.954, "f1_gain_high": 22.8966,
    "base_chrf": 15.0215, "tuned_chrf": 45.5199, "chrf_gain": 30.4984, "chrf_gain_low": 24.4503,
    "chrf_gain_high": 36.5335,
}  # fmt: skip
# with `evaluate.metrics: [chrf]` and an lm-evaluation-harness task
CHRF_AND_HARNESS = {
    "tuned_loss": 1.3, "tuned_perplexity": 3.6693, "tuned_tokens": 607,
    "base_loss": 4.4, "base_perplexity": 81.4509, "base_tokens": 607, "perplexity_ratio": 0.0451,
    "task_records": 87, "base_chrf": 15.0, "tuned_chrf": 41.25, "chrf_gain": 26.25, "chrf_gain_low": 20.0,
    "chrf_gain_high": 32.5, "tuned_harness_arc_easy_acc": 0.31, "base_harness_arc_easy_acc": 0.3,
}  # fmt: skip

DIMS = [
    Dimension("train.lora.target_modules", "choice", Knob(choices=[["q_proj", "v_proj"], ["o_proj"]]), True),
    Dimension(LR, "float", Knob(low=1.0e-4, high=1.0e-3, log=True), True),
]


def study_of(direction: str, outcomes: list[tuple[str, float | None, dict[str, Any]]]) -> optuna.Study:
    """An in-memory study whose trials ended as `outcomes`: (state, value, user attributes)."""
    study = optuna.create_study(direction=direction)
    distributions = {
        "train.lora.target_modules": optuna.distributions.CategoricalDistribution(DIMS[0].labels),
        LR: optuna.distributions.FloatDistribution(1.0e-4, 1.0e-3, log=True),
    }
    for i, (state, value, attrs) in enumerate(outcomes):
        params = {"train.lora.target_modules": DIMS[0].labels[i % 2], LR: (0.0002, 0.00041, 0.0009)[i]}
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=value, params=params, distributions=distributions,
            user_attrs=attrs,
        ))  # fmt: skip
    return study


def lines_of(tune: TuneParams, study: optuna.Study) -> list[str]:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    return summary(tune, "/repo/.dvc/tmp/tune/lora.journal", study.get_trials(), best, DIMS)


def test_the_summary_names_the_best_trial_its_test_scores_and_how_to_promote_it() -> None:
    study = study_of("minimize", [
        ("COMPLETE", 1.5, {"experiment": "lora-0", "test": {}}),
        ("COMPLETE", 1.23456, {"experiment": "lora-1", "test": DEFAULT_TEST}),
        ("PRUNED", None, {}),
    ])  # fmt: skip
    assert lines_of(TuneParams(), study) == [
        "study lora (/repo/.dvc/tmp/tune/lora.journal): 2 complete, 1 pruned, 0 fail",
        "best: trial 1 (experiment lora-1): validation_loss 1.2346; "
        "train.lora.target_modules=['o_proj'] train.trainer.learning_rate=0.00041",
        "  its test metrics, for information only (the study never saw them): "
        "tuned_perplexity 3.481, tuned_exact_match 14.94, tuned_f1 14.94, tuned_chrf 45.52",
        "promote it:",
        "  dvc exp apply lora-1 && git add -A && git commit -m "
        "'Tuned: train.lora.target_modules=['\"'\"'o_proj'\"'\"'] train.trainer.learning_rate=0.00041'",
        "  or register it as it is: loravc register lora-1 --version vX.Y.Z",
    ]


def test_the_summary_reads_the_objective_from_tune_params() -> None:
    study = study_of("maximize", [("COMPLETE", 0.61, {}), ("COMPLETE", 0.8123, {}), ("FAIL", None, {})])
    tune = TuneParams(study="acc", objective="validation_accuracy", direction="maximize")
    lines = lines_of(tune, study)
    assert lines[0].endswith(": 2 complete, 0 pruned, 1 fail")
    # no experiment recorded: the trial's own name; no test metrics: no line for them
    assert lines[1].startswith("best: trial 1 (experiment acc-1): validation_accuracy 0.8123; ")
    assert lines[2] == "promote it:"


@pytest.mark.parametrize(
    ("test", "shown"),
    [
        (DEFAULT_TEST, ["tuned_perplexity", "tuned_exact_match", "tuned_f1", "tuned_chrf"]),
        (CHRF_AND_HARNESS, ["tuned_perplexity", "tuned_chrf"]),  # the task metrics evaluate.metrics names
        ({"tuned_perplexity": 3.0, "tuned_tokens": 607}, []),  # nothing compared with the base
        ({}, []),
    ],
)
def test_the_test_scores_shown_are_those_the_metrics_file_compares_with_the_base(
    test: dict[str, Any], shown: list[str]
) -> None:
    assert shown_scores(test) == shown


def test_a_study_without_a_finished_trial_says_so() -> None:
    study = study_of("minimize", [("FAIL", None, {}), ("PRUNED", None, {})])
    assert lines_of(TuneParams(study="s"), study) == [
        "study s (/repo/.dvc/tmp/tune/lora.journal): 0 complete, 1 pruned, 1 fail",
        "no finished trial yet",
    ]
