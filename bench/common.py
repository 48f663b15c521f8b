"""What every benchmark shares: the machine it ran on, timing, tables, a scratch copy of the project."""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("throughput", "storage", "restore", "overheads", "default_run")  # in `python -m bench` order
# What a fresh clone holds that the pipeline needs (no models, no DVC cache).
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
    "stages",
    "loravc",
    "data/raw",
)
QUIET_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DVCLIVE_OPEN": "false",
}


def base_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line: its module docstring as --help, and --base."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=ROOT / "models" / "base", help="base model directory")
    return parser


def require_base(base: Path) -> None:
    """A UserError saying how to make one unless `base` holds a model's config.json."""
    from loravc.errors import UserError

    if not (base / "config.json").is_file():
        raise UserError(f"{base}/config.json not found: run `dvc repro base`, or pass --base DIR")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict[str, Any]:
    """The machine a figure belongs to: CPU, cores, the vector features torch can use, the GPU if any."""
    flags = cpu_flags()
    features = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    found: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cpu_features": features,
        "python": platform.python_version(),
        # other work on the machine while this ran: timings on a busy CPU box are slower, ratios hold better
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device.startswith("cuda"):
        import torch

        found["gpu"] = torch.cuda.get_device_name(0)
        found["torch"] = torch.__version__
    return found


def describe(info: dict[str, Any]) -> str:
    text = f"{info['date']}  {info['cpu']}, {info['cores']} cores ({', '.join(info['cpu_features']) or 'no AVX2'})"
    if "gpu" in info:
        text += f", GPU {info['gpu']}"
    return text + f"; load average {info['load_average_1min']}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (what the README's results table is made of)."""
    rows = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def timed(fn: Callable[[], Any], repeat: int = 1) -> list[float]:
    """Wall seconds of each of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def env() -> dict[str, str]:
    """This interpreter's bin first on PATH (dvc stages call `python`), offline, quiet."""
    return {**os.environ, **QUIET_ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def sh(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), cwd=cwd, env=env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result.returncode} in {cwd}\n{result.stdout}\n{result.stderr}")
    return result


def timed_sh(cmd: Sequence[str], cwd: Path, repeat: int = 1) -> list[float]:
    """Wall seconds of each of `repeat` runs of a command, as a user types it."""
    return timed(lambda: sh(cmd, cwd), repeat)


def commit(repo: Path, path: str, message: str, tag: str | None = None) -> None:
    """`dvc add path`, then a git commit of everything (and a tag)."""
    sh(dvc_cmd("add", path), repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", message], repo)
    if tag:
        sh(["git", "tag", tag], repo)


def at_least_one(value: int, option: str) -> None:
    from loravc.errors import UserError

    if value < 1:
        raise UserError(f"{option} must be at least 1, got {value}")


def dvc_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def copy_project_files(dest: Path) -> None:
    """Copy what a fresh clone holds that the pipeline needs (PROJECT_FILES) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def copy_project(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """A fresh git + DVC repository holding the project's files (as a clone would), one commit."""
    copy_project_files(dest)
    if params:
        update_params(dest / "params.yaml", params)
    init_repo(dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "project"], dest)
    return dest


def init_repo(dest: Path) -> None:
    sh(["git", "init", "-q", "-b", "main"], dest)
    sh(["git", "config", "user.email", "bench@example.com"], dest)
    sh(["git", "config", "user.name", "bench"], dest)
    sh(dvc_cmd("init", "-q"), dest)


def update_params(path: Path, changes: dict[str, Any]) -> None:
    """Merge `changes` into a params.yaml keeping its comments (ruamel round-trip, as DVC does)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(path.read_text(encoding="utf-8"))

    def merge(node: Any, new: dict[str, Any]) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                merge(node[key], value)
            else:
                node[key] = value

    merge(doc, changes)
    with path.open("w", encoding="utf-8") as f:
        yaml.dump(doc, f)


def tiny_params(base: Path) -> dict[str, Any]:
    """params.yaml values that shrink the default pipeline to seconds on a tiny base."""
    return {
        "base": {"source": str(base)},
        "prepare": {"test_records": 6, "validation_records": 4, "train_records": 16},
        "train": {
            "device": "cpu",
            "max_length": 64,
            "trainer": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
        },
        "evaluate": {"device": "cpu", "max_new_tokens": 4},
    }


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# A few narrow layers of the base's architecture and vocabulary: seconds to train, for smoke runs.
SHRINK = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
}


def shrunk_base(src: Path, dest: Path) -> Path:
    """A random-weight base with src's tokenizer and layer types but SHRINK's sizes (MBs, not 538 MB)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(src)
    config.update(SHRINK)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    return dest


def tree_bytes(path: Path) -> int:
    """Bytes of the files under path, each inode once (hard links are not counted twice)."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def copy_base(src: Path, dest: Path) -> Path:
    """A private copy of a base model directory (a copy, never a link: DVC may make its files read-only)."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir()):
        if p.is_file():
            shutil.copyfile(p, dest / p.name)
    return dest


class AdapterWriter:
    """Writes version directories like the train stage does (PEFT adapter, tokenizer, metadata.json) without
    training: LoRA weights drawn from a seed, on the base's architecture built from its config.json."""

    def __init__(self, base: Path, rank: int = 8) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from loravc.params import LoraParams
        from loravc.training import lora_config

        torch.manual_seed(0)
        self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.lora = lora_config(LoraParams(r=rank))
        self.base = base

    def write(self, out: Path, seed: int) -> Path:
        import torch
        from peft import get_peft_model

        from loravc.metadata import utc_now, version_id, write_metadata

        peft_model = get_peft_model(self.model, self.lora)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_" in name:  # a trained adapter: both matrices non-zero, different per version
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        peft_model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        now = utc_now()
        write_metadata(out, {"version_id": version_id(now), "created": now.isoformat(), "seed": seed})
        self.model = peft_model.unload()
        return out
