"""Metrics and plots through dvclive, laid out as dvc.yaml declares them (no dvc.yaml rewriting)."""

from pathlib import Path
from typing import Any


def open_live(live_dir: Path, *, resume: bool = False) -> Any:
    """A dvclive.Live writing into live_dir; dvc.yaml stays as written, DVC makes the experiments."""
    from dvclive import Live

    return Live(dir=str(live_dir), resume=resume, dvcyaml=None, save_dvc_exp=False, report=None)


def write_summary(live_dir: Path, summary: dict[str, Any]) -> None:
    """Write live_dir/metrics.json holding exactly `summary`."""
    live = open_live(live_dir)
    for key, value in summary.items():
        live.summary[key] = value
    live.make_summary()
