import json
from pathlib import Path
from typing import Any

from loravc.train import checkpoints
from loravc.train.lora import LoraParams
from loravc.train.params import TrainParams

BASE = {"id": "tiny", "weights_sha256": {"model.safetensors": "ab" * 32}}


def fingerprint(r: int = 8, data: str = "d" * 64, base: dict[str, Any] = BASE) -> dict[str, Any]:
    return checkpoints.fingerprint(TrainParams(lora=LoraParams(r=r)), data, base)


def fake_checkpoint(root: Path, step: int, marker: dict[str, Any] | None, epoch: float = 1.0) -> Path:
    """What the Trainer plus the callback leave behind (weights left out: selection never reads them)."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    state = {"epoch": epoch, "global_step": step, "max_steps": 12, "log_history": [{"num_tokens": 256.0 * step}]}
    (path / checkpoints.TRAINER_STATE).write_text(json.dumps(state))
    if marker is not None:
        (path / checkpoints.FINGERPRINT_FILE).write_text(json.dumps(marker))
    return path


def test_fingerprint_changes_with_params_data_and_base() -> None:
    reference = fingerprint()["sha256"]
    assert fingerprint()["sha256"] == reference
    assert fingerprint(r=4)["sha256"] != reference
    assert fingerprint(data="e" * 64)["sha256"] != reference
    assert fingerprint(base={**BASE, "id": "other"})["sha256"] != reference


def test_newest_matching_checkpoint_is_resumed_and_the_others_discarded(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 4, fingerprint(), epoch=1.0)
    fake_checkpoint(tmp_path, 8, fingerprint(), epoch=2.0)
    fake_checkpoint(tmp_path, 9, fingerprint(r=4))
    fake_checkpoint(tmp_path, 12, None)  # killed while saving: no fingerprint yet
    said: list[str] = []

    chosen = checkpoints.select_resume(tmp_path, fingerprint(), said.append)

    assert chosen is not None and (chosen.step, chosen.epoch, chosen.num_tokens) == (8, 2.0, 2048)
    assert said[-1] == f"train: resuming from {tmp_path / 'checkpoint-8'} (epoch 2, step 8 of 12)"
    assert any("checkpoint-9: made with different train.lora.r 4 -> 8" in line for line in said)
    assert any("checkpoint-12: incomplete" in line for line in said)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-8"]  # the Trainer rotates


def test_a_checkpoint_with_other_params_is_never_resumed(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 4, fingerprint(r=16))
    said: list[str] = []
    assert checkpoints.select_resume(tmp_path, fingerprint(r=8), said.append) is None
    where = tmp_path / "checkpoint-4"
    assert said == [f"train: discarding checkpoint {where}: made with different train.lora.r 16 -> 8"]
    assert not list(tmp_path.iterdir())


def test_other_data_or_base_is_named_in_the_message(tmp_path: Path) -> None:
    old = fingerprint(data="e" * 64, base={**BASE, "id": "other"})
    assert checkpoints.describe_difference(old, fingerprint()) == "data (sha256 of the prepared splits), base model"


def test_non_main_process_only_reads(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 4, fingerprint(r=4))
    fake_checkpoint(tmp_path, 8, fingerprint())
    said: list[str] = []
    chosen = checkpoints.select_resume(tmp_path, fingerprint(), said.append, discard=False)
    assert chosen is not None and chosen.step == 8 and not said
    assert len(list(tmp_path.iterdir())) == 2


def test_clear_leaves_nothing_behind(tmp_path: Path) -> None:
    run_dir = tmp_path / "checkpoints"
    fake_checkpoint(run_dir, 4, fingerprint())
    (run_dir / checkpoints.MODEL_CARD).write_text("model card")
    assert checkpoints.clear(run_dir) == 1
    assert not run_dir.exists()
    assert checkpoints.clear(run_dir) == 0  # nothing there: fine


def test_live_snapshot_is_restored(tmp_path: Path) -> None:
    checkpoint_dir = fake_checkpoint(tmp_path / "checkpoints", 4, fingerprint())
    snapshot = checkpoint_dir / checkpoints.LIVE_SNAPSHOT / "plots" / "metrics"
    snapshot.mkdir(parents=True)
    (snapshot / "loss.tsv").write_text("step\tloss\n4\t2.5\n")
    live = tmp_path / "dvclive"
    (live / "plots" / "metrics").mkdir(parents=True)
    (live / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n4\t2.5\n5\t2.4\n")  # logged after the save

    (chosen,) = checkpoints.list_checkpoints(tmp_path / "checkpoints")
    checkpoints.restore_live(chosen, live)
    assert (live / "plots" / "metrics" / "loss.tsv").read_text() == "step\tloss\n4\t2.5\n"


def test_mean_train_loss_weighs_each_log_by_its_steps() -> None:
    history = [
        {"loss": 4.0, "step": 2},  # the mean of steps 1-2
        {"eval_loss": 9.0, "step": 2},
        {"loss": 1.0, "step": 3},
        {"loss": 2.0, "step": 6},  # after a resume from step 3: steps 4-6
        {"train_loss": 7.0, "step": 6},
    ]
    assert checkpoints.mean_train_loss(history) == (4.0 * 2 + 1.0 + 2.0 * 3) / 6
    assert checkpoints.mean_train_loss([]) is None


def test_the_tokens_trained_on_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    train, data = TrainParams(), "d" * 64
    assistant = checkpoints.fingerprint(train, data, BASE, "assistant")
    every = checkpoints.fingerprint(train, data, BASE, "all")
    assert assistant["sha256"] != every["sha256"]  # data.loss_on changed, the splits did not: no resume
    fake_checkpoint(tmp_path, 4, assistant)
    said: list[str] = []
    assert checkpoints.select_resume(tmp_path, every, said.append) is None
    assert "made with different trained tokens 'assistant' -> 'all'" in said[0]


def test_a_time_that_is_not_a_number_counts_as_none(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 4, {**fingerprint(), checkpoints.TRAIN_SECONDS: "soon"})
    fake_checkpoint(tmp_path, 8, {**fingerprint(), checkpoints.TRAIN_SECONDS: 12.5})
    assert [c.train_seconds for c in checkpoints.list_checkpoints(tmp_path)] == [0.0, 12.5]
