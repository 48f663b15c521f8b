"""The accelerate launch path of the train stage (the two-process run itself is in test_remote.py)."""

import subprocess
from pathlib import Path

import pytest

from loravc.core.errors import UserError
from loravc.train import launch
from loravc.train.params import TrainParams

ARGS = ["--base", "models/base", "--data", "data/prepared", "--out", "models/adapter", "--live", "dvclive/train"]


def accelerate_args(command: list[str]):
    """The command's arguments as the installed accelerate parses and completes them."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    return args


def test_without_accelerate_config_it_uses_torchrun_on_one_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("accelerate.commands.config.config_args.default_config_file", "/nonexistent/config.yaml")
    assert launch.accelerate_config() is None
    args = accelerate_args(launch.accelerate_command(2, "stages.train", ARGS, None))
    # --multi_gpu selects accelerate's torchrun launcher; --cpu would start one process without MPI
    assert args.multi_gpu and not args.cpu and args.num_processes == 2 and args.num_machines == 1
    assert args.main_process_port == 0  # a free port: parallel queue workers do not collide
    assert args.module and args.training_script == "stages.train" and args.training_script_args == ARGS


def test_an_accelerate_config_decides_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "default_config.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_machines: 1\nnum_processes: 8\n"
        "mixed_precision: bf16\nfsdp_config:\n  fsdp_version: 2\n"
    )
    monkeypatch.setattr("accelerate.commands.config.config_args.default_config_file", str(config))
    assert launch.accelerate_config() == config
    command = launch.accelerate_command(4, "stages.train", ARGS, config)
    assert "--multi_gpu" not in command
    args = accelerate_args(command)
    assert args.use_fsdp and args.num_processes == 4 and args.mixed_precision == "bf16"  # params win on the count


def test_launched_processes_never_launch_again(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (launch.LAUNCHED_VARIABLE, *launch.WORLD_SIZE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert not launch.launched()
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun
    assert launch.launched()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv(launch.LAUNCHED_VARIABLE, "1")  # accelerate's single-process fallback
    assert launch.launched()


def test_world_size_must_match_params() -> None:
    launch.check_world_size(2, 2)
    launch.check_world_size(1, 1)
    with pytest.raises(UserError, match=r"train\.processes is 2 but 1 process\(es\).*accelerate config"):
        launch.check_world_size(2, 1)
    with pytest.raises(UserError, match=r"set train\.processes: 4 and run the stage without a launcher"):
        launch.check_world_size(1, 4)


def test_a_failed_launch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    seen = {}

    def fake_run(command: list[str], env: dict[str, str], check: bool) -> subprocess.CompletedProcess:
        seen.update(command=command, env=env)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(launch, "accelerate_config", lambda: None)
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(UserError, match=r"train\.processes is 2: `accelerate launch` exited 1.*train\.processes: 1"):
        launch.relaunch(2, "cpu", "stages.train", ARGS)
    assert seen["env"][launch.LAUNCHED_VARIABLE] == "1" and seen["command"][-len(ARGS) :] == ARGS
    assert "train: 2 processes (no accelerate config" in capsys.readouterr().out


def test_processes_param_is_validated() -> None:
    with pytest.raises(UserError, match=r"train\.processes must be at least 1"):
        TrainParams(processes=0)


def test_more_processes_than_gpus_is_refused_before_launching(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(launch, "accelerate_config", lambda: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("launched"))
    with pytest.raises(UserError, match=r"train\.processes is 2 but this machine has 1 GPU\(s\): use at most 1"):
        launch.relaunch(2, "auto", "stages.train", ARGS)
