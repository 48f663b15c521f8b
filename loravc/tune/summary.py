"""The lines `loravc tune` closes with: the trials' outcome, the best trial with its test scores, how to promote it.

No metric is named here: the objective is tune.objective, and the test scores shown are those the evaluate
stage's metrics file holds for the tuned model and compares with the base's (a ratio or a gain).
"""

import shlex
from typing import Any

from loravc.tune.params import TuneParams
from loravc.tune.space import Dimension, hydra
from loravc.tune.trials import trial_name

COUNTED = ("COMPLETE", "PRUNED", "FAIL")  # the trial states the first line counts, by Optuna's names


def summary(tune: TuneParams, storage: str, trials: list[Any], best: Any | None, dims: list[Dimension]) -> list[str]:
    """The closing lines of a study on `storage` (as shown) holding `trials`, whose best trial is `best`."""
    counts = {state.lower(): sum(t.state.name == state for t in trials) for state in COUNTED}
    lines = [f"study {tune.study} ({storage}): " + ", ".join(f"{n} {k}" for k, n in counts.items())]
    if best is None:
        return [*lines, "no finished trial yet"]
    name = best.user_attrs.get("experiment", trial_name(tune.study, best.number))
    by_key = {d.key: d for d in dims}
    params = " ".join(f"{k}={hydra(by_key[k].value(v))}" for k, v in best.params.items())
    lines.append(f"best: trial {best.number} (experiment {name}): {tune.objective} {best.value:.4f}; {params}")
    test = best.user_attrs.get("test", {})
    shown = shown_scores(test)
    if shown:
        lines.append("  its test metrics, for information only (the study never saw them): "
                     + ", ".join(f"{k} {test[k]:.4g}" for k in shown))  # fmt: skip
    lines += [
        "promote it:",
        f"  dvc exp apply {name} && git add -A && git commit -m {shlex.quote('Tuned: ' + params)}",
        f"  or register it as it is: loravc register {name} --version vX.Y.Z",
    ]
    return lines


def shown_scores(test: dict[str, Any]) -> list[str]:
    """The tuned model's scores in the evaluate stage's metrics, in the file's order: each `tuned_<name>` the
    stage compares with the base's by a `<name>_ratio` (perplexity) or a `<name>_gain` (each task metric of
    evaluate.metrics); its token counts, its loss and the harness tasks' scores are left out."""
    names = [key.removeprefix("tuned_") for key in test if key.startswith("tuned_")]
    return [f"tuned_{n}" for n in names if f"{n}_ratio" in test or f"{n}_gain" in test]
