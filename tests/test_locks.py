"""The locks scripts/setup.sh installs from (locks/, made by scripts/lock.sh): every package pinned with hashes,
the same versions in both torch builds, bitsandbytes alone in the qlora lock, and pyproject.toml satisfied."""

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

LOCKS = ROOT / "locks"
ENTRY = re.compile(r"^([A-Za-z0-9][\w.-]*)(===?)(\S+)((?: \\\n\s+--hash=sha256:[0-9a-f]{64})+)", re.M)


def read_lock(name: str) -> dict[str, tuple[str, str, int]]:
    """{canonical name: (operator, version, number of hashes)} of a lock; each entry must carry hashes."""
    text = (LOCKS / name).read_text(encoding="utf-8")
    entries = {canonicalize_name(m[1]): (m[2], m[3], m[4].count("--hash=")) for m in ENTRY.finditer(text)}
    named = re.findall(r"^[A-Za-z0-9]\S*", text, re.M)
    assert len(entries) == len(named), f"locks/{name}: an entry without a pinned version or a hash"
    return entries


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_every_package_is_pinned_with_its_hashes() -> None:
    for name in ("cpu.txt", "cuda.txt", "qlora.txt"):
        assert read_lock(name), name


def test_the_builds_differ_in_torch_and_the_cuda_libraries_only() -> None:
    cpu, cuda = read_lock("cpu.txt"), read_lock("cuda.txt")
    assert cpu["torch"][:2] == ("==", "2.13.0+cpu")
    assert cuda["torch"][:2] == ("===", "2.13.0")  # exactly: never a local build that pip finds first
    assert not set(cpu) - set(cuda)
    assert {name: cpu[name][1] for name in cpu if name != "torch"} == {
        name: cuda[name][1] for name in cpu if name != "torch"
    }
    cuda_only = set(cuda) - set(cpu)
    assert "liger-kernel" in cuda_only  # the gpu extra
    assert all(re.match(r"(nvidia-|cuda-|triton$|liger-kernel$)", name) for name in cuda_only), cuda_only


def test_the_qlora_lock_is_bitsandbytes_of_the_qlora_extra(pyproject: dict) -> None:
    qlora = read_lock("qlora.txt")
    assert list(qlora) == ["bitsandbytes"]
    (wanted,) = [Requirement(r) for r in pyproject["optional-dependencies"]["qlora"]]
    assert Version(qlora["bitsandbytes"][1]) in wanted.specifier


@pytest.mark.parametrize(("lock", "extras"), [("cpu.txt", ["dev"]), ("cuda.txt", ["dev", "gpu"])])
def test_each_lock_satisfies_pyproject(pyproject: dict, lock: str, extras: list[str]) -> None:
    """A dependency or extra edited in pyproject.toml without `bash scripts/lock.sh` fails here."""
    locked = read_lock(lock)
    wanted = [*pyproject["dependencies"], *(r for extra in extras for r in pyproject["optional-dependencies"][extra])]
    for requirement in map(Requirement, wanted):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in locks/{lock}: run `bash scripts/lock.sh`"
        version = Version(locked[name][1])
        assert requirement.specifier.contains(version, prereleases=True) or (
            name == "torch" and Version(version.base_version) in requirement.specifier
        ), f"locks/{lock} has {name} {version}, pyproject.toml wants {requirement}: run `bash scripts/lock.sh`"


@pytest.mark.parametrize("build", ["cpu", "cuda"])
def test_each_lock_holds_its_inputs_pins(build: str) -> None:
    """locks/<build>.in pins torch's build and transformers (the version the docs were measured on)."""
    locked = read_lock(f"{build}.txt")
    pins = re.findall(r"^([A-Za-z0-9][\w.-]*)===?(\S+)", (LOCKS / f"{build}.in").read_text(encoding="utf-8"), re.M)
    assert ("transformers", "5.24.0") in pins
    for name, version in pins:
        assert locked[canonicalize_name(name)][1] == version, name
