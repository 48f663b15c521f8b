"""Per-epoch training checkpoints that survive a kill, and resuming only from a matching one.

The Trainer saves `checkpoint-<step>/` (adapter, optimizer, scheduler, RNG state, trainer
state) into the checkpoints directory after each epoch and keeps `save_total_limit` of them.
The callback here then adds two things to each checkpoint, the fingerprint file last:
  dvclive/               the loss curves up to that step, so a resumed run continues them
  loravc-checkpoint.json what the run was: train params, data sha256, base identity; and its training
                         time so far (`train_seconds`), which a resumed run adds to its own
On the next start, `select_resume` resumes the newest checkpoint whose fingerprint matches
and discards every other one with a message; a finished run clears the directory.

The directory is deliberately not a DVC output: docs/experiments.md says why.
Checkpoints hold pickles written by torch.save (optimizer.pt, rng_state.pth, training_args.bin):
they are local scratch, read back only by the Trainer that wrote them, never part of a version.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loravc.core.schema import flatten
from loravc.train.params import TrainParams

FINGERPRINT_FILE = "loravc-checkpoint.json"
LIVE_SNAPSHOT = "dvclive"
TRAINER_STATE = "trainer_state.json"
TRAIN_SECONDS = "train_seconds"  # in the fingerprint file, next to (not part of) the fingerprint
MODEL_CARD = "README.md"  # TRL rewrites it in the checkpoints directory at each save
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def fingerprint(
    train: TrainParams, data_sha256: str, base_identity: dict[str, Any], loss_on: str = "all"
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the train params, the data and the tokens it trains on
    (loravc.data.labels: all, completion or assistant), the base model."""
    content = {"train": dataclasses.asdict(train), "data_sha256": data_sha256, "base": base_identity}
    content["loss_on"] = loss_on
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, **content}


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    epoch: float | None  # from trainer_state.json; None if the checkpoint is incomplete
    max_steps: int | None
    num_tokens: int  # training tokens seen up to this step (TRL does not restore its own count)
    fingerprint: dict[str, Any] | None  # None: interrupted before it was complete
    train_seconds: float = 0.0  # training time up to this step, over every run that led to it


def list_checkpoints(checkpoints_dir: Path) -> list[Checkpoint]:
    """The Trainer's checkpoint-<step> directories, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if not (match and path.is_dir()):
            continue
        marker, state = _read_json(path / FINGERPRINT_FILE), _read_json(path / TRAINER_STATE)
        complete = marker is not None and state is not None
        found.append(
            Checkpoint(
                path=path,
                step=int(match.group(1)),
                epoch=state.get("epoch") if complete else None,
                max_steps=state.get("max_steps") if complete else None,
                num_tokens=_last_num_tokens(state) if complete else 0,
                fingerprint=marker if complete else None,
                train_seconds=_seconds(marker) if complete else 0.0,
            )
        )
    return sorted(found, key=lambda c: c.step)


def select_resume(
    checkpoints_dir: Path, expected: dict[str, Any], say: Callable[[str], None] = print, *, discard: bool = True
) -> Checkpoint | None:
    """The newest checkpoint made with `expected`'s params, data and base; non-matching ones are discarded.

    Each discarded checkpoint is named with the reason (what differs, or that it is incomplete).
    With discard=False (a process other than the main one) nothing is deleted or printed.
    """
    checkpoints = list_checkpoints(checkpoints_dir)
    matching = [c for c in checkpoints if c.fingerprint and c.fingerprint.get("sha256") == expected["sha256"]]
    chosen = matching[-1] if matching else None
    for checkpoint in checkpoints:
        if checkpoint in matching or not discard:  # older matching ones: the Trainer rotates them out
            continue
        if checkpoint.fingerprint is None:
            reason = "incomplete (interrupted while saving)"
        else:
            reason = "made with different " + describe_difference(checkpoint.fingerprint, expected)
        say(f"train: discarding checkpoint {checkpoint.path}: {reason}")
        shutil.rmtree(checkpoint.path)
    if chosen and discard:
        of = f" of {chosen.max_steps}" if chosen.max_steps else ""
        say(f"train: resuming from {chosen.path} (epoch {_epoch(chosen.epoch)}, step {chosen.step}{of})")
    return chosen


def describe_difference(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """A short 'train.lora.r 8 -> 4, data' description of how two fingerprints differ."""
    changes = []
    old_train, new_train = flatten(old.get("train", {}), "train"), flatten(new.get("train", {}), "train")
    for key in sorted(set(old_train) | set(new_train)):
        if old_train.get(key) != new_train.get(key):
            changes.append(f"{key} {old_train.get(key)!r} -> {new_train.get(key)!r}")
    if old.get("loss_on") != new.get("loss_on"):
        changes.append(f"trained tokens {old.get('loss_on')!r} -> {new.get('loss_on')!r}")
    if old.get("data_sha256") != new.get("data_sha256"):
        changes.append("data (sha256 of the prepared splits)")
    if old.get("base") != new.get("base"):
        changes.append("base model")
    if not changes:
        return "settings (fingerprint differs)"
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more


def clear(checkpoints_dir: Path) -> int:
    """Remove every checkpoint after a finished run, so none can be mistaken for a later run's."""
    checkpoints = list_checkpoints(checkpoints_dir)
    for checkpoint in checkpoints:
        shutil.rmtree(checkpoint.path)
    (checkpoints_dir / MODEL_CARD).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # only if nothing else is in it
        checkpoints_dir.rmdir()
    return len(checkpoints)


def restore_live(checkpoint: Checkpoint, live_dir: Path) -> None:
    """Put the dvclive files saved with a checkpoint back, so the curves continue from its step."""
    snapshot = checkpoint.path / LIVE_SNAPSHOT
    if live_dir.exists():
        shutil.rmtree(live_dir)
    if snapshot.is_dir():
        shutil.copytree(snapshot, live_dir)


def callback(expected: dict[str, Any], live_dir: Path, seconds_before: float = 0.0) -> Any:
    """A TrainerCallback completing each checkpoint the Trainer saves: dvclive snapshot, then fingerprint
    with the training time so far (`seconds_before`: that of the checkpoint this run resumed from)."""
    from transformers import TrainerCallback

    class CheckpointFingerprint(TrainerCallback):
        began = time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began = time.monotonic()  # where the Trainer's train_runtime starts too

        # Log the training loss right before each save, so a checkpoint's log history covers every
        # step before it and a resumed run can still report the whole run's mean loss.
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            control.should_log = control.should_log or control.should_save

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            control.should_log = control.should_log or control.should_save

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if live_dir.is_dir():
                shutil.copytree(live_dir, path / LIVE_SNAPSHOT, dirs_exist_ok=True)
            seconds = round(seconds_before + time.monotonic() - self.began, 2)
            _write_json_atomically(path / FINGERPRINT_FILE, {**expected, TRAIN_SECONDS: seconds})

    return CheckpointFingerprint()


def mean_train_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The run's mean training loss from the Trainer's logs (each averages the steps since the one before).

    The Trainer's own figure covers only the steps since a resume; the restored log history covers all.
    """
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry and entry["step"] > previous:
            total += entry["loss"] * (entry["step"] - previous)
            steps, previous = steps + entry["step"] - previous, entry["step"]
    return total / steps if steps else None


def _seconds(marker: dict[str, Any]) -> float:
    value = marker.get(TRAIN_SECONDS, 0.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json_atomically(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _last_num_tokens(state: dict[str, Any]) -> int:
    logged = [entry["num_tokens"] for entry in state.get("log_history", []) if "num_tokens" in entry]
    return int(logged[-1]) if logged else 0


def _epoch(epoch: float | None) -> str:
    return "?" if epoch is None else f"{epoch:g}"
