"""scripts/setup.sh chooses the torch build: CPU without a CUDA GPU, CUDA (with the gpu extra) with one or GPU=1."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def dry_run(tmp_path: Path, gpu: str | None = None, nvidia_smi: bool = False, qlora: str | None = None) -> list[str]:
    """What setup.sh would run in a fresh copy (no .venv), with or without an nvidia-smi that sees a GPU."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
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


@pytest.mark.parametrize(
    ("gpu", "nvidia_smi", "build"),
    [(None, False, "cpu"), (None, True, "cuda"), ("1", False, "cuda"), ("0", True, "cpu")],
    ids=["no GPU", "a GPU", "GPU=1", "GPU=0"],
)
def test_setup_installs_the_torch_build_the_machine_needs(
    tmp_path: Path, gpu: str | None, nvidia_smi: bool, build: str
) -> None:
    lines = dry_run(tmp_path, gpu, nvidia_smi)
    assert lines[0].startswith(f"setup: torch {build} build (")
    torch_lines = [line for line in lines if "torch==2.13.0" in line]
    if build == "cpu":
        assert torch_lines == [
            "pip install --index-url https://download.pytorch.org/whl/cpu --timeout 15 --retries 0 torch==2.13.0"
        ]
        assert lines[-1] == "pip install -e .[dev]"
    else:
        assert torch_lines == ["pip install torch==2.13.0"]
        assert lines[-1] == "pip install -e .[dev,gpu]"


@pytest.mark.parametrize(("gpu", "extras"), [("0", "dev,qlora"), ("1", "dev,gpu,qlora")])
def test_qlora_1_adds_bitsandbytes(tmp_path: Path, gpu: str, extras: str) -> None:
    assert dry_run(tmp_path, gpu, qlora="1")[-1] == f"pip install -e .[{extras}]"


def test_an_unknown_qlora_switch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    env = os.environ | {"GPU": "0", "QLORA": "yes", "SETUP_DRY_RUN": "1"}
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "use QLORA=1 (add bitsandbytes) or QLORA=0" in done.stderr


def test_an_unknown_gpu_switch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    env = {k: v for k, v in os.environ.items() if k != "QLORA"} | {"GPU": "yes", "SETUP_DRY_RUN": "1"}
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "use GPU=1 (the CUDA build) or GPU=0" in done.stderr


def rerun_with_torch(tmp_path: Path, installed: str) -> list[str]:
    """What setup.sh (GPU=0, dry run) would do in a .venv whose torch reports `installed` ("<version> <build>")."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\necho '{installed}'\n")  # what setup.sh asks the venv's python about torch
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("GPU", "QLORA")} | {"SETUP_DRY_RUN": "1", "GPU": "0"}
    done = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_torch_of_the_other_build_is_replaced(tmp_path: Path) -> None:
    """A .venv whose torch is the CUDA build (same version): uninstalled first, since pip would keep it."""
    lines = rerun_with_torch(tmp_path, "2.13.0 cuda")
    cpu_install = "pip install --index-url https://download.pytorch.org/whl/cpu --timeout 15 --retries 0 torch==2.13.0"
    assert "pip uninstall -y torch" in lines and cpu_install in lines
    assert lines.index("pip uninstall -y torch") < lines.index(cpu_install)


def test_the_right_torch_already_there_is_kept(tmp_path: Path) -> None:
    lines = rerun_with_torch(tmp_path, "2.13.0 cpu")
    assert not [line for line in lines if "torch==" in line or "uninstall" in line]
    assert lines[-1] == "pip install -e .[dev]"
