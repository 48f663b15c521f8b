"""scripts/setup.sh installs from the locks: the CPU build without a CUDA GPU, CUDA (with the gpu extra) with one or
GPU=1, bitsandbytes with QLORA=1."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def copy_scripts(tmp_path: Path) -> None:
    """setup.sh and the locks it reads, in a fresh directory."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copytree(ROOT / "locks", tmp_path / "locks", dirs_exist_ok=True)


def dry_run(tmp_path: Path, gpu: str | None = None, nvidia_smi: bool = False, qlora: str | None = None) -> list[str]:
    """What setup.sh would run in a fresh copy (no .venv), with or without an nvidia-smi that sees a GPU."""
    copy_scripts(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.unlink(missing_ok=True)
    if nvidia_smi:
        fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
        fake.chmod(0o755)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists())
    env = {k: v for k, v in os.environ.items() if k not in ("GPU", "QLORA")}
    env |= {"SETUP_DRY_RUN": "1", "PATH": f"{bin_dir}:{path}"} | ({"QLORA": qlora} if qlora else {})
    if gpu is not None:
        env["GPU"] = gpu
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / ".venv").exists()  # a dry run installs nothing
    return done.stdout.splitlines()


CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu --timeout 15 --retries 0"


@pytest.mark.parametrize(
    ("gpu", "nvidia_smi", "build"),
    [(None, False, "cpu"), (None, True, "cuda"), ("1", False, "cuda"), ("0", True, "cpu")],
    ids=["no GPU", "a GPU", "GPU=1", "GPU=0"],
)
def test_setup_installs_the_torch_build_the_machine_needs_from_its_lock(
    tmp_path: Path, gpu: str | None, nvidia_smi: bool, build: str
) -> None:
    lines = dry_run(tmp_path, gpu, nvidia_smi)
    assert lines[0].startswith(f"setup: torch {build} build (") and lines[0].endswith(f"), from locks/{build}.txt")
    torch_lines = [line for line in lines if line.startswith("pip") and "torch" in line]
    if build == "cpu":
        assert torch_lines == [f"pip install --require-hashes --no-deps {CPU_INDEX} -r <the torch of locks/cpu.txt>"]
    else:
        assert torch_lines == ["pip install --require-hashes --no-deps -r <the torch of locks/cuda.txt>"]
    assert lines[-2:] == [f"pip install --require-hashes -r locks/{build}.txt", "pip install --no-deps -e ."]


@pytest.mark.parametrize("build", ["cpu", "cuda"])
def test_qlora_1_adds_the_bitsandbytes_lock(tmp_path: Path, build: str) -> None:
    lines = dry_run(tmp_path, "1" if build == "cuda" else "0", qlora="1")
    assert lines[0].endswith(f"from locks/{build}.txt locks/qlora.txt")
    assert f"pip install --require-hashes -r locks/{build}.txt -r locks/qlora.txt" in lines


def test_another_platform_or_python_is_refused(tmp_path: Path) -> None:
    """The locks are for Linux x86_64 with Python 3.11: another interpreter is told so before anything installs."""
    copy_scripts(tmp_path)
    fake = tmp_path / "python3.12"
    fake.write_text("#!/bin/sh\necho 'linux x86_64 3.12'\n")  # what setup.sh asks the interpreter
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "QLORA"}
    env |= {"GPU": "0", "SETUP_DRY_RUN": "1", "PYTHON": str(fake)}
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and not done.stdout
    assert "the locks are for linux x86_64 3.11, not linux x86_64 3.12" in done.stderr
    assert "PYTHON=python3.11" in done.stderr


def test_an_unknown_qlora_switch_is_refused(tmp_path: Path) -> None:
    copy_scripts(tmp_path)
    env = os.environ | {"GPU": "0", "QLORA": "yes", "SETUP_DRY_RUN": "1"}
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "use QLORA=1 (add bitsandbytes) or QLORA=0" in done.stderr


def test_an_unknown_gpu_switch_is_refused(tmp_path: Path) -> None:
    copy_scripts(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "QLORA"} | {"GPU": "yes", "SETUP_DRY_RUN": "1"}
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "use GPU=1 (the CUDA build) or GPU=0" in done.stderr
