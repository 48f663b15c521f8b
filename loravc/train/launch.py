"""Data-parallel training on existing engines: the train stage re-runs itself under `accelerate launch`.

With `train.processes: N` above 1, the stage starts `accelerate launch --num_processes N -m stages.train
<same arguments>`; each process then trains with the Trainer's own DDP (transformers sets it up through
accelerate) and only the main process writes the version. Which engine runs it:
- no accelerate config on this machine: accelerate's torchrun path (`--multi_gpu`), one process per
  GPU, or on a machine without a GPU N processes that join over gloo. (accelerate's `--cpu` path
  starts several processes only through mpirun with `--mpirun_hostfile`; without MPI it starts one.)
- an accelerate config (`accelerate config` writes it to accelerate's default path): used as is, so
  FSDP, DeepSpeed, mixed precision and multi-node settings come from it; N is the total count of
  processes over all machines, as in accelerate. (CPU processes get DDP from an FSDP config: `engine`.)
A run whose world size differs from `train.processes` stops before training (see `check_world_size`).
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError

# Set in every process by the launchers accelerate uses: torchrun, or an MPI launcher.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
# Set by `relaunch` for its children: whatever accelerate starts trains and never launches again.
LAUNCHED_VARIABLE = "LORAVC_LAUNCHED"


def launched() -> bool:
    """True inside a process started by a distributed launcher (this process must train, not launch)."""
    return any(os.environ.get(name) for name in (LAUNCHED_VARIABLE, *WORLD_SIZE_VARIABLES))


def accelerate_config() -> Path | None:
    """The accelerate config file `accelerate launch` would read on this machine, if one exists."""
    from accelerate.commands.config.config_args import default_config_file

    path = Path(default_config_file)
    return path if path.is_file() else None


def accelerate_command(processes: int, module: str, args: list[str], config: Path | None) -> list[str]:
    """The `accelerate launch` command that runs `python -m module args` in `processes` processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    if config is None:
        # One machine, torchrun; precision is the Trainer's choice (train.trainer); a free port, so
        # parallel queue workers do not collide on accelerate's default 29500.
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        command += ["--main_process_port", "0"]
    else:
        command += ["--config_file", str(config)]
    return [*command, "-m", module, *args]


def relaunch(processes: int, device: str, module: str, args: list[str]) -> None:
    """Run `module` with `args` under accelerate launch in `processes` processes; UserError if it fails.

    `device` is train.device: without an accelerate config, GPU training needs a GPU per process.
    """
    config = accelerate_config()
    if config is None and device != "cpu":
        import torch

        gpus = torch.cuda.device_count()
        if gpus and processes > gpus:
            raise UserError(
                f"train.processes is {processes} but this machine has {gpus} GPU(s): use at most {gpus}, "
                "or describe several machines with `accelerate config`"
            )
    command = accelerate_command(processes, module, args, config)
    source = f"accelerate config {config}" if config else "no accelerate config: torchrun, one machine"
    print(f"train: {processes} processes ({source}): {shlex.join(command)}", flush=True)
    returncode = subprocess.run(command, env={**os.environ, LAUNCHED_VARIABLE: "1"}, check=False).returncode
    if returncode != 0:
        raise UserError(
            f"train.processes is {processes}: `accelerate launch` exited {returncode} (the processes' output is "
            "above); set train.processes: 1 to train in this process"
        )


def check_world_size(processes: int, world_size: int) -> None:
    """Stop a run whose process count is not the one params.yaml records (dvc.lock would lie about it)."""
    if world_size == processes:
        return
    if world_size == 1:
        fix = "the launcher started one process: check your accelerate config (`accelerate env`)"
    else:
        fix = f"set train.processes: {world_size} and run the stage without a launcher: it launches itself"
    raise UserError(f"train.processes is {processes} but {world_size} process(es) are training: {fix}")


def engine(accelerator: Any) -> str | None:
    """What runs a multi-process training, for metadata: accelerate's distributed type ("FSDP", "DEEPSPEED",
    "MULTI_GPU": DDP on GPUs, "MULTI_CPU": DDP on CPUs over gloo, ...); None in one process.

    accelerate turns an FSDP config into FSDP only for GPUs and other accelerators: CPU processes train with
    DDP instead (accelerate 1.15, AcceleratorState; the same updates, whole copies of the model), silently.
    The main process says so (docs/scale-out.md).
    """
    if accelerator.num_processes == 1:
        return None
    kind = str(accelerator.distributed_type.value)
    fsdp_asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_asked and kind != "FSDP" and accelerator.is_main_process:
        print(
            f"train: the accelerate config asks for FSDP, but accelerate runs {kind} on this device "
            f"({accelerator.device.type}): each of the {accelerator.num_processes} processes holds the whole "
            "model (DDP); accelerate runs FSDP on GPUs (docs/scale-out.md)",
            flush=True,
        )
    return kind


def is_main_process() -> bool:
    """True in the one process that writes outputs (always true without a launcher)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def finish() -> None:
    """Leave the process group cleanly (torch warns at exit otherwise); nothing to do in one process."""
    from accelerate import PartialState

    state = PartialState()
    if state.use_distributed:
        state.destroy_process_group()
