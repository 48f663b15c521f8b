"""loravc.train.pruning as `loravc tune` uses it: the median pruner stops a trial's training from its train stage."""

from pathlib import Path

import optuna
from transformers import TrainerControl, TrainerState

from loravc.train import pruning


def test_the_median_pruner_stops_a_trial_worse_than_the_finished_ones(tmp_path: Path) -> None:
    storage = str(tmp_path / "s.journal")
    study = optuna.create_study(
        study_name="p", storage=pruning.open_storage(storage), pruner=pruning.make_pruner("median")
    )
    for loss in (1.0, 1.1):  # two finished trials that reported their validation loss after each epoch
        done = study.ask()
        done.report(loss, 1)
        done.report(loss - 0.5, 2)
        study.tell(done, loss - 0.5)
    trial = study.ask()
    spec = pruning.TrialSpec(storage, "p", trial._trial_id, trial.number, "median")
    report, control = pruning.callback(spec), TrainerControl()
    state = TrainerState()
    state.global_step = 4
    report.on_evaluate(None, state, control, metrics={"eval_loss": 2.0})  # worse, but the first evaluation
    assert report.pruned is None and not control.should_training_stop
    state.global_step = 8
    report.on_evaluate(None, state, control, metrics={"eval_loss": 1.9})  # worse than the median 0.55
    assert control.should_training_stop
    assert report.pruned == (
        "tune study 'p' pruned trial 2 at evaluation 2 (step 8, validation loss 1.9000): no version is saved for it"
    )
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.user_attrs["pruned"] == {"evaluation": 2, "step": 8} and stored.intermediate_values == {
        1: 2.0,
        2: 1.9,
    }

    better = study.ask()
    spec = pruning.TrialSpec(storage, "p", better._trial_id, better.number, "median")
    report, control = pruning.callback(spec), TrainerControl()
    for _ in (1, 2):
        report.on_evaluate(None, state, control, metrics={"eval_loss": 0.4})
    assert report.pruned is None and not control.should_training_stop
