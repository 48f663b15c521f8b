"""How a `loravc tune` trial's train stage reports to its study, and stops when the study prunes it.

`loravc tune` runs each trial as `dvc exp run --temp` with the environment variable ENV naming the
study's storage, the study and the trial. The train stage of that run (and only of such a run) adds
`callback(...)` to the Trainer: after each evaluation it reports the validation loss to the study
and asks the study's pruner; a pruned trial stops training and the stage fails with a TrialPruned
error, so DVC saves no experiment for it (a pruned trial is never a version). Optuna (the [tune]
extra) is imported only when ENV is set.
"""

import json
import os
from dataclasses import dataclass
from typing import Any

from loravc.core.errors import UserError

ENV = "LORAVC_TUNE_TRIAL"
# A trial's first evaluation never prunes it (the first epoch at a high learning rate often looks worse and
# ends better; evaluations are numbered from 1 and Optuna prunes from step n_warmup_steps on), and nothing
# is pruned before the study has two finished trials to compare with (n_startup_trials).
MEDIAN = {"n_startup_trials": 2, "n_warmup_steps": 2}


class TrialPruned(UserError):
    """The study's pruner stopped this trial: the stage fails on purpose, so no experiment is saved."""


@dataclass(frozen=True)
class TrialSpec:
    """What ENV carries: where the study is, which trial this run is, and the pruner to ask."""

    storage: str  # a journal file's absolute path, or a database URL
    study: str
    trial_id: int
    number: int
    pruner: str  # loravc.tune.params.TUNE_PRUNERS

    def dumps(self) -> str:
        return json.dumps(self.__dict__)


def trial_spec() -> TrialSpec | None:
    """The trial this process trains for, or None outside `loravc tune`."""
    text = os.environ.get(ENV)
    return TrialSpec(**json.loads(text)) if text else None


def make_pruner(name: str) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(**MEDIAN) if name == "median" else optuna.pruners.NopPruner()


def open_storage(storage: str) -> Any:
    """Optuna storage for a journal file path or a database URL (sqlite:///, postgresql://, mysql://)."""
    import optuna

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def callback(spec: TrialSpec) -> Any:
    """A TrainerCallback reporting each evaluation's loss to trial `spec` and stopping when pruned;
    its `.pruned` is then a message naming the evaluation and the loss."""
    import optuna
    from transformers import TrainerCallback

    study = optuna.load_study(
        study_name=spec.study, storage=open_storage(spec.storage), pruner=make_pruner(spec.pruner)
    )
    trial = optuna.trial.Trial(study, spec.trial_id)

    class ReportToStudy(TrainerCallback):
        def __init__(self) -> None:
            self.evaluations = 0
            self.pruned: str | None = None

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            if not metrics or "eval_loss" not in metrics:
                return
            self.evaluations += 1
            loss = float(metrics["eval_loss"])
            trial.report(loss, self.evaluations)
            finished = state.max_steps and state.global_step >= state.max_steps  # pruning now would waste a whole run
            if not finished and trial.should_prune():
                trial.set_user_attr("pruned", {"evaluation": self.evaluations, "step": state.global_step})
                self.pruned = (
                    f"tune study {spec.study!r} pruned trial {spec.number} at evaluation {self.evaluations} "
                    f"(step {state.global_step}, validation loss {loss:.4f}): no version is saved for it"
                )
                control.should_training_stop = True

    return ReportToStudy()
