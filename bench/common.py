"""What every benchmark shares: the machine it ran on, timing, tables, scratch repositories of a base and adapters.

Scratch copies of the whole project (and running git/dvc in them) are bench.project's, shared with the tests.
"""

import argparse
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.project import ROOT, git, init_repo, merge_params, run
from loravc.core.errors import UserError
from loravc.core.schema import build, parse_yaml, read_yaml
from loravc.core.tools import dvc_cmd
from loravc.params import Params

BENCHMARKS = (
    "throughput",
    "storage",
    "restore",
    "overheads",
    "versions_scale",
    "default_run",
    "generation",
)  # in `python -m bench` order


def base_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's command line: its module docstring as --help, and --base."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=ROOT / "models" / "base", help="base model directory")
    return parser


def require_base(base: Path) -> None:
    """A UserError saying how to make one unless `base` holds a model's config.json."""
    from loravc.core.errors import UserError

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


def report_machine() -> dict[str, Any]:
    """machine() of a CPU benchmark, printed as the `machine:` line its report starts with."""
    info = machine()
    print(f"machine: {describe(info)}")
    return info


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


def timed_sh(cmd: Sequence[str], cwd: Path, repeat: int = 1) -> list[float]:
    """Wall seconds of each of `repeat` runs of a command, as a user types it."""
    return timed(lambda: run(cmd, cwd), repeat)


def commit(repo: Path, path: str, message: str, tag: str | None = None) -> None:
    """`dvc add path`, then a git commit of everything (and a tag)."""
    run(dvc_cmd("add", path), repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    if tag:
        git(repo, "tag", tag)


def at_least_one(value: int, option: str) -> None:
    from loravc.core.errors import UserError

    if value < 1:
        raise UserError(f"{option} must be at least 1, got {value}")


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


def repo_with_base(base: Path, repo: Path) -> Path:
    """A new git + DVC repository at repo whose one commit, "base", is a copy of `base` in models/base (dvc add)."""
    init_repo(repo)
    copy_base(base, repo / "models" / "base")
    commit(repo, "models/base", "base")
    return repo


class AdapterWriter:
    """Writes version directories like the train stage does (PEFT adapter, tokenizer, metadata.json) without
    training: LoRA weights drawn from a seed, on the base's architecture built from its config.json."""

    def __init__(self, base: Path, lora: Any = None) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from loravc.train.lora import LoraParams, lora_config

        torch.manual_seed(0)
        self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.lora = lora_config(lora or LoraParams(r=8))  # a loravc.train.lora.LoraParams
        self.base = base

    def write(self, out: Path, seed: int) -> Path:
        import torch
        from peft import get_peft_model

        from loravc.core import metadata

        peft_model = get_peft_model(self.model, self.lora)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in peft_model.parameters():
                if param.requires_grad:  # a trained adapter: every trained tensor non-zero, different per version
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        peft_model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        now = metadata.utc_now()  # a small stand-in record: the bytes that matter here are the adapter's
        metadata.write_json(out, {"version_id": metadata.version_id(now), "created": now.isoformat(), "seed": seed})
        self.model = peft_model.unload()
        return out

    def commit(self, repo: Path, seed: int, message: str, tag: str | None = None) -> None:
        """A version in repo: write(repo / "models" / "adapter", seed), `dvc add` it and commit (and tag)."""
        self.write(repo / "models" / "adapter", seed)
        commit(repo, "models/adapter", message, tag)


def params_changes(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """`--set a.b=VALUE` items as nested params changes; VALUE is read as YAML (`3`, `1.0e-3`, `[x, y]`). The
    changed params.yaml is checked as the pipeline reads it; `flag` is the option errors name."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"{flag} {item!r}: expected KEY=VALUE with a dotted params key, e.g. train.seed=7")
        node = changes
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{flag} {item!r}: an earlier --set gave {part} a value, not a section")
        try:
            node[last] = parse_yaml(value)
        except Exception as err:  # ruamel's several error kinds
            raise UserError(f"{flag} {item!r}: the value is not YAML ({str(err).splitlines()[0]})") from None
    try:  # the changed params.yaml must load as the pipeline reads it: a misspelt key or bad value stops here
        build(Params, merge_params(read_yaml(ROOT / "params.yaml"), changes), "")
    except UserError as err:
        raise UserError(f"{flag} {' '.join(items)}: {err}") from None
    return changes
