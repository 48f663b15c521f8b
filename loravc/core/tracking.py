"""Metrics and plots through dvclive, laid out as dvc.yaml declares them (no dvc.yaml rewriting)."""

from pathlib import Path
from typing import Any

PlotRows = list[dict[str, Any]]  # one dict per point; the first key is the x field


def open_live(live_dir: Path, *, resume: bool = False) -> Any:
    """A dvclive.Live writing into live_dir; dvc.yaml stays as written, DVC makes the experiments."""
    from dvclive import Live

    return Live(dir=str(live_dir), resume=resume, dvcyaml=None, save_dvc_exp=False, report=None)


def write_summary(live_dir: Path, summary: dict[str, Any], plots: dict[str, PlotRows] | None = None) -> None:
    """Write live_dir/metrics.json holding exactly `summary`, and each of `plots` to plots/custom/<name>.json.

    dvc.yaml's top-level `plots` gives each plot its template, axes and title.
    """
    live = open_live(live_dir)
    for key, value in summary.items():
        live.summary[key] = value
    for name, rows in (plots or {}).items():
        x, *y = rows[0]
        live.log_plot(name, rows, x=x, y=y)
    live.make_summary()


def live_callback(live: Any) -> Any:
    """transformers' DVCLiveCallback with two changes for a pipeline stage.

    - Curves are indexed by the Trainer's global step (not by how many times it logged), so the
      train and validation curves share an x axis and a resumed run continues at the right step.
    - TrainingArguments are not dumped to a params file: params.yaml is the params file DVC shows.
    - The end-of-training summary log is left out: its `train_loss` (the mean over the run) would
      land in the per-step loss curve; the stage writes its own summary to metrics.json.
    """
    from transformers.integrations import DVCLiveCallback

    class StepIndexedDVCLiveCallback(DVCLiveCallback):
        def setup(self, args: Any, state: Any, model: Any) -> None:
            self._initialized = True  # the parent would also log args.to_dict(): ~150 fields

        def on_log(self, args: Any, state: Any, control: Any, model: Any = None, logs: Any = None, **kw: Any) -> None:
            if logs and "train_runtime" in logs:
                return
            if state.is_world_process_zero:
                self.live.step = state.global_step
            super().on_log(args, state, control, model=model, logs=logs, **kw)

    return StepIndexedDVCLiveCallback(live=live)
