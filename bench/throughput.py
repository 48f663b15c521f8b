"""Training throughput: the project's `train` configuration vs the tutorial recipe, side by side.

Both train LoRA on the same records, the same base and the same max length with TRL's SFTTrainer;
runs alternate (tutorial, project, tutorial, project, ...) in one process so that a noisy machine
slows both alike. Tokens are TRL's own count (`num_tokens`: non-padding tokens); the first
`--warmup` steps of each run are left out, the rest is wall time between step ends (data loading,
forward, backward, optimizer step and logging all included).

- project:  loravc.train.training.sft_config + lora_config from params.yaml (train section, with the
            profile for the device: `train.profile`), i.e. exactly what `dvc repro train` uses.
- tutorial: TRL's SFTTrainer defaults (activation checkpointing on, bf16=True) as they run on the
            device: bf16 autocast on a GPU with bf16, and on a CPU with AMX or AVX512-BF16 (given
            use_cpu, without which transformers refuses bf16 on a CPU); fp32 on a CPU without them,
            where bf16 would be emulated. fp32 weights, batch 2, LoRA r=8 alpha=32 dropout=0.1 on
            PEFT's default modules.
- tutorial-fp32: the same in fp32 (the tutorial's definition before 2026-11-29 on CPUs with bf16).

    python -m bench.throughput                                  # real base in models/base, CPU
    python -m bench.throughput --device cuda --random-weights --max-length 512 --lora-r 8 \
        --variant 'step64={"trainer": {"per_device_train_batch_size": 64}}' \
        --variant 'step512={"trainer": {"per_device_train_batch_size": 512}}'

The recipe (examples per step) is params': a GPU's profile only splits it into micro-batches, so
large-batch GPU figures come from a variant that sets the examples per step, as above.

Output ends with a table of the recipes and the ratios (measured figures per machine, with their
dates: docs/performance.md):
    ratio project / tutorial: <ratio>x (per CPU second: <ratio>x)
    ratio project / tutorial-fp32: <ratio>x (...)       # on a CPU with native bf16
"""

import argparse
import dataclasses
import gc
import json
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import SHRINK, base_parser, describe, machine, require_base, table, write_json
from bench.project import ROOT
from loravc.core.errors import UserError, run_main

TUTORIAL_LORA = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.1}
TUTORIAL_FP32 = "tutorial-fp32"  # the tutorial in fp32 also where the CPU has bf16 (the definition before 2026-11-29)


@dataclass
class Recipe:
    """One training configuration: a name, how to build its SFTConfig and LoRA config, model load options."""

    name: str
    kind: str  # "project" or "tutorial"
    trainer: dict[str, Any] = field(default_factory=dict)  # SFTConfig overrides on top of the kind's own
    lora: dict[str, Any] = field(default_factory=dict)  # LoraConfig overrides
    model: dict[str, Any] = field(default_factory=dict)  # from_pretrained/from_config overrides (dtype, attention)
    once: bool = False  # run in the first round only (a slow-to-start variant such as torch.compile)
    quantization: dict[str, Any] = field(default_factory=dict)  # train.quantization keys: a k-bit base (QLoRA)


@dataclass
class Setup:
    base: Path
    random_weights: bool
    shrink: bool
    device: str
    max_length: int
    steps: int
    warmup: int
    params: Any  # loravc.params.Params
    dataset: Any = None
    tokenizer: Any = None


def parse_variant(text: str) -> Recipe:
    """NAME=JSON: the project recipe with overrides, e.g. gpu512='{"trainer": {"per_device_train_batch_size": 512}}'."""
    name, _, spec = text.partition("=")
    try:
        extra = json.loads(spec) if spec else {}
    except json.JSONDecodeError as err:
        raise UserError(f"--variant {name}: not valid JSON ({err})") from None
    if not name or not isinstance(extra, dict) or set(extra) - {"trainer", "lora", "model", "once", "quantization"}:
        raise UserError(f"--variant {text!r}: use NAME=JSON with keys trainer, lora, model, once, quantization")
    if "quantization" in extra:  # train.quantization's keys, checked as params.yaml's are; no bits: none
        from loravc.core.quantization import QuantizationParams
        from loravc.core.schema import build

        try:
            bits = build(QuantizationParams, extra["quantization"], "quantization").bits
        except UserError as err:
            raise UserError(f"--variant {name}: {err}") from None
        extra["quantization"] = extra["quantization"] if bits else {}
    return Recipe(name=name, kind="project", **extra)


def load_records(path: Path, tokenizer: Any, count: int | None) -> Any:
    """The data as TRL tokenizes it for training (loravc.data.labels), cycled to `count` records; tokenized once."""
    from datasets import Dataset

    from loravc.data import labels
    from loravc.data import records as data

    records = data.read_jsonl(path)
    plan = labels.loss_plan(data.record_shape(records[0]), tokenizer)
    ids = [labels.encode(record, tokenizer, plan, max_length=10**9)[0] for record in records]
    if count:
        ids = [ids[i % len(ids)] for i in range(count)]
    return Dataset.from_dict({"input_ids": ids})


def build_model(setup: Setup, recipe: Recipe) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from loravc.train.config import model_options

    options: dict[str, Any] = {"dtype": torch.float32}
    if recipe.kind == "project":  # the base dtype and attention the train stage loads for this device's profile
        options = model_options(setup.params.train.profile, setup.device)
    options |= recipe.model
    dtype = options.pop("dtype")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    torch.manual_seed(0)
    if recipe.quantization:
        return quantized_model(setup, recipe, dtype, options)
    if not setup.random_weights:
        return AutoModelForCausalLM.from_pretrained(setup.base, dtype=dtype, **options)
    attention = options.pop("attn_implementation", None)
    config = AutoConfig.from_pretrained(setup.base, **options)
    if setup.shrink:
        config.update(SHRINK)
    return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)


def quantized_model(setup: Setup, recipe: Recipe, dtype: Any, options: dict[str, Any]) -> Any:
    """The base loaded k-bit as the train stage loads it for train.quantization (random weights: saved first)."""
    from transformers import AutoModelForCausalLM

    from loravc.core import quantization
    from loravc.core.quantization import QuantizationParams

    q = QuantizationParams(**recipe.quantization)
    quantization.check_available(q, setup.device, key=f"--variant {recipe.name}: quantization.bits")
    with tempfile.TemporaryDirectory(prefix="bench-random-base-") as scratch:
        source = setup.base
        if setup.random_weights:  # bitsandbytes quantizes while loading: write the random weights first
            plain = Recipe(name=recipe.name, kind=recipe.kind, model=recipe.model)
            build_model(setup, plain).save_pretrained(scratch, safe_serialization=True)
            source = Path(scratch)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, **options, **quantization.load_options(q, setup.device)
        )
    return quantization.prepare(model, checkpointing=False)  # the project's profiles: no activation checkpointing


def train_params(setup: Setup, recipe: Recipe, trainer: dict[str, Any] | None = None) -> Any:
    """The params' train section with a project recipe's overrides (lora keys include train.lora.dtype)."""
    return dataclasses.replace(
        setup.params.train,
        max_length=setup.max_length,
        trainer=setup.params.train.trainer | (trainer or {}) | recipe.trainer,
        lora=dataclasses.replace(setup.params.train.lora, **recipe.lora),
    )


def configs(setup: Setup, recipe: Recipe, out: Path) -> tuple[Any, Any]:
    """(SFTConfig, LoraConfig) of a recipe, with the run-length settings both recipes share."""
    from peft import LoraConfig
    from trl import SFTConfig

    from loravc.core.devices import bf16_supported
    from loravc.train.config import sft_config
    from loravc.train.lora import lora_config

    shared = {
        "max_steps": setup.steps,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
    }
    if recipe.kind == "project":  # exactly what the train stage builds, with the run length shortened
        train = train_params(setup, recipe, shared)
        return sft_config(train, setup.device, out), lora_config(train.lora)
    tutorial: dict[str, Any] = {"output_dir": str(out), "per_device_train_batch_size": 2, "seed": 42}
    if setup.device == "cpu":  # TRL refuses its default bf16=True on a CPU unless told use_cpu; then it autocasts
        tutorial |= {"use_cpu": True, "bf16": recipe.name != TUTORIAL_FP32 and bf16_supported("cpu")}
    sft = SFTConfig(**(tutorial | shared | {"max_length": setup.max_length} | recipe.trainer))
    return sft, LoraConfig(task_type="CAUSAL_LM", **(TUTORIAL_LORA | recipe.lora))


class StepClock:
    """Trainer callback: wall time and TRL's token count at every step end (GPU work synchronized)."""

    def __init__(self, device: str, profiler: Any = None) -> None:
        self.device, self.profiler, self.trainer = device, profiler, None
        self.marks: list[tuple[float, float, int]] = []  # (wall s, this process's CPU s, tokens so far)
        self.system: list[float] = []  # this process's kernel-mode CPU s (page faults of big allocations, ...)

    def callback(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class _Clock(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                clock.mark()

        return _Clock()

    def mark(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        tokens = getattr(self.trainer, "_total_train_tokens", None)
        if tokens is None:
            raise RuntimeError("this TRL has no SFTTrainer._total_train_tokens; update bench.throughput")
        self.marks.append((time.perf_counter(), time.process_time(), int(tokens)))
        self.system.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime)
        if self.profiler is not None:
            self.profiler.step()

    def result(self, warmup: int) -> dict[str, Any]:
        if len(self.marks) <= warmup:
            raise UserError(f"only {len(self.marks)} steps ran: raise --steps above --warmup ({warmup})")
        (t0, c0, n0), (t1, c1, n1) = self.marks[warmup - 1] if warmup else self._start, self.marks[-1]
        return {
            "tokens_per_s": (n1 - n0) / (t1 - t0),
            # CPU seconds of this process: on a shared CPU box a steadier basis than wall time (use --threads 1)
            "tokens_per_cpu_s": (n1 - n0) / (c1 - c0) if c1 > c0 else None,
            "system_cpu_share": (self.system[-1] - self.system[warmup - 1]) / (c1 - c0) if warmup and c1 > c0 else None,
            "timed_steps": len(self.marks) - warmup,
            "tokens": n1 - n0,
            "seconds": t1 - t0,
            "cpu_seconds": c1 - c0,
        }


def run_trial(setup: Setup, recipe: Recipe, profile_steps: int = 0) -> dict[str, Any]:
    import torch
    from transformers import PrinterCallback
    from trl import SFTTrainer

    from loravc.train.config import adapter_dtype, cast_adapter

    model = build_model(setup, recipe)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as out:
        args, lora = configs(setup, recipe, Path(out))
        profiler = None
        if profile_steps:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if setup.device.startswith("cuda"):
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            schedule = torch.profiler.schedule(wait=max(setup.warmup - 1, 0), warmup=1, active=profile_steps, repeat=1)
            profiler = torch.profiler.profile(activities=activities, schedule=schedule)
        clock = StepClock(setup.device, profiler)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=setup.dataset, processing_class=setup.tokenizer, peft_config=lora
        )
        if recipe.kind == "project":  # the dtype the train stage gives the LoRA weights (train.lora.dtype)
            cast_adapter(trainer.model, adapter_dtype(train_params(setup, recipe), setup.device))
        clock.trainer = trainer
        trainer.add_callback(clock.callback())
        trainer.remove_callback(PrinterCallback)  # the figures are printed once, below
        if setup.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        clock._start = (time.perf_counter(), time.process_time(), 0)
        if profiler is not None:
            with profiler:
                trainer.train()
        else:
            trainer.train()
        found = clock.result(setup.warmup)
        found |= {
            "recipe": recipe.name,
            "batch": args.per_device_train_batch_size,
            "activation_checkpointing": bool(getattr(args, "activation_checkpointing", args.gradient_checkpointing)),
            "bf16": bool(args.bf16),
            "sampling": getattr(args, "train_sampling_strategy", "random"),
            "packing": bool(args.packing),
            "lora": f"r={lora.r} alpha={lora.lora_alpha} dropout={lora.lora_dropout}",
            "adapter_dtype": str(next(p.dtype for p in trainer.model.parameters() if p.requires_grad)),
            "quantization": recipe.quantization or None,
            "quantized_layers": sum(
                1 for m in trainer.model.modules() if type(m).__module__.startswith("bitsandbytes")
            ),
        }
        if setup.device.startswith("cuda"):
            found["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if profiler is not None:
            found["profile"] = summarize_profile(profiler, setup.device)
            first = setup.warmup - 1 if setup.warmup else 0
            marks = clock.marks[first : first + profile_steps + 1]
            found["profile"]["wall_seconds"] = round(marks[-1][0] - marks[0][0], 3)
            found["profile"]["cpu_seconds"] = round(marks[-1][1] - marks[0][1], 3)
    del trainer, model
    _free(setup.device)
    return found


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def summarize_profile(profiler: Any, device: str) -> dict[str, Any]:
    """Where the time of the profiled steps goes: operators by self time, and a split by kind of work.

    On a GPU each operator is charged the kernel time it launched itself (its self device time), so
    the operators add up to the kernels' busy time; the kernels themselves are not listed twice.
    """
    from torch.autograd import DeviceType

    cuda = device.startswith("cuda")
    events = [
        e
        for e in profiler.key_averages()
        if not e.key.startswith("ProfilerStep") and not (cuda and e.device_type == DeviceType.CUDA)
    ]

    def self_time(e: Any) -> float:
        return (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e6

    groups = {
        "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
        "attention": ("attention", "sdpa", "flash"),
        "lm head + loss": ("logprob", "log_softmax", "logsumexp", "cross_entropy", "nll"),
        "optimizer": ("adam", "_foreach", "_fused"),
    }
    split = dict.fromkeys([*groups, "other"], 0.0)
    for e in events:
        name = e.key.lower()
        kind = next((g for g, keys in groups.items() if any(k in name for k in keys)), "other")
        split[kind] += self_time(e)
    total = sum(split.values())
    top = sorted(events, key=self_time, reverse=True)[:12]
    return {
        "seconds": round(total, 3),
        "split": {k: round(v / total, 3) for k, v in split.items()} if total else split,
        "top": [[e.key, round(self_time(e), 3), e.count] for e in top],
    }


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="build the base's architecture from its config.json with random weights (no weights file needed)",
    )
    parser.add_argument("--shrink", action="store_true", help="with --random-weights: 2 narrow layers (smoke runs)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "raw" / "pydoc_topics.jsonl", help="JSONL records")
    parser.add_argument("--records", type=int, help="cycle the records to this many (default: what the runs need)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--max-length", type=int, help="tokens per example (default: params train.max_length)")
    parser.add_argument("--lora-r", type=int, help="LoRA rank of the project recipe (default: params train.lora.r)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the timing (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default: %(default)s)")
    parser.add_argument(
        "--recipes",
        help=f"which to run, in order, from tutorial, {TUTORIAL_FP32} and project (default: all three on a CPU "
        f"with native bf16, where the tutorial autocasts in bf16; tutorial,project elsewhere)",
    )
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON: project with overrides; repeatable")
    parser.add_argument("--torch-profile", type=int, default=0, metavar="STEPS", help="profile STEPS project steps")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="on a CPU, leave glibc's malloc as it is (default: as the train stage does, keep freed memory where "
        "the cpu profile trains in fp32, for every recipe: it is a property of the process)",
    )
    parser.add_argument("--keep-going", action="store_true", help="report a failed run and go on with the others")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="a few tiny steps, untimed use (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.rounds, args.max_length = 3, 1, 1, args.max_length or 32
    if args.steps <= args.warmup:
        raise UserError(f"--steps {args.steps} must be above --warmup {args.warmup}: nothing would be timed")
    run(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from loravc.core.devices import cpu_bf16, resolve_device
    from loravc.params import load_params

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    from loravc.core.devices import keep_freed_memory
    from loravc.train.config import keeps_freed_memory

    require_base(args.base)
    params = load_params(args.params)
    if args.lora_r is not None:  # LoraParams says what is wrong with a bad rank
        params.train.lora = dataclasses.replace(params.train.lora, r=args.lora_r)
    device = resolve_device(args.device, "--device")
    recipes = {name: Recipe(name, "tutorial") for name in ("tutorial", TUTORIAL_FP32)}
    recipes["project"] = Recipe("project", "project")
    native = cpu_bf16() if device == "cpu" else None
    default = f"tutorial,{TUTORIAL_FP32},project" if native else "tutorial,project"
    names = [n for n in (args.recipes or default).split(",") if n]
    if set(names) - set(recipes):
        raise UserError(f"--recipes {args.recipes!r}: choose from {', '.join(recipes)} (add others with --variant)")
    chosen = [recipes[n] for n in names]
    chosen += [parse_variant(v) for v in args.variant]
    setup = Setup(
        base=args.base,
        random_weights=args.random_weights,
        shrink=args.shrink,
        device=device,
        max_length=args.max_length or params.train.max_length,
        steps=args.steps,
        warmup=args.warmup,
        params=params,
    )
    setup.tokenizer = AutoTokenizer.from_pretrained(args.base)
    with tempfile.TemporaryDirectory() as out:
        batches = {r.name: configs(setup, r, Path(out))[0] for r in chosen}
        train_args = batches.get("project") or configs(setup, recipes["project"], Path(out))[0]
    # as the train stage does (where the project trains in fp32); a property of the process, so for every recipe
    kept = not args.malloc_defaults and keeps_freed_memory(train_args, device) and keep_freed_memory()
    per_step = (a.per_device_train_batch_size * a.gradient_accumulation_steps for a in batches.values())
    need = max(per_step) * (args.steps + 1)
    setup.dataset = load_records(args.data, setup.tokenizer, args.records or need)

    info = machine(device) | {"torch": torch.__version__, "threads": torch.get_num_threads(), "malloc_kept": kept}
    weights = "random weights" if args.random_weights else "pretrained weights"
    malloc = "; malloc keeps freed memory (all recipes)" if kept else ""
    print(f"machine: {describe(info)}; torch {torch.__version__}, {torch.get_num_threads()} threads{malloc}")
    print(f"model: {args.base} ({weights}), device {device}, max length {setup.max_length}, {args.steps} steps/run")
    if device == "cpu":
        info["cpu_bf16"] = native
        path = f"bf16 autocast ({native}: native bf16)" if native else "fp32 (no AMX or AVX512-BF16: bf16 emulated)"
        print(f"precision path of the cpu profile and of TRL's defaults on this CPU: {path}")
    trials: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        for recipe in chosen:
            if recipe.once and round_number:
                continue
            try:
                found = run_trial(setup, recipe) | {"round": round_number}
            except Exception as err:  # with --keep-going one failed variant leaves the others
                if not args.keep_going:
                    raise
                print(f"  round {round_number} {recipe.name:<12} failed: {type(err).__name__}: {err}"[:400], flush=True)
                failed.append({"recipe": recipe.name, "round": round_number, "error": f"{type(err).__name__}: {err}"})
                _free(setup.device)
                continue
            trials.append(found)
            extra = f", peak {found['peak_gpu_gib']} GiB" if "peak_gpu_gib" in found else ""
            print(
                f"  round {round_number} {recipe.name:<12} {found['tokens_per_s']:>10,.1f} tokens/s "
                f"({found['timed_steps']} steps, {found['seconds']:.1f} s{extra}); "
                f"{found['tokens_per_cpu_s'] or 0:,.1f} tokens/CPU-s "
                f"({found['system_cpu_share'] or 0:.0%} in the kernel)",
                flush=True,
            )
    if args.torch_profile:
        profiled = run_trial(setup, recipes["project"], profile_steps=args.torch_profile)
        where = "GPU" if device.startswith("cuda") else "CPU"
        print(
            f"profile of {args.torch_profile} project steps: {profiled['profile']['wall_seconds']} s wall, "
            f"{profiled['profile']['seconds']} s of {where} operator self time"
        )
        print("  split: " + ", ".join(f"{k} {v:.0%}" for k, v in profiled["profile"]["split"].items()))
        print(table(["operator", "self s", "calls"], profiled["profile"]["top"]))
    else:
        profiled = None

    summary = summarize(trials, [r.name for r in chosen if any(t["recipe"] == r.name for t in trials)])
    headers = ["recipe", "tokens/s (median)", "tokens/CPU-s", "runs", "batch", "act. ckpt", "bf16", "sampling", "lora"]
    print(table(headers, summary))
    result: dict[str, Any] = {"machine": info, "device": device, "max_length": setup.max_length, "trials": trials}
    result["failed"] = failed
    medians = {row[0]: row[1] for row in summary}
    per_cpu = {row[0]: row[2] for row in summary if row[2] != "-"}
    baselines = [b for b in ("tutorial", TUTORIAL_FP32) if b in medians]
    for baseline in baselines:  # "ratios": against TRL's defaults as TRL applies them here; also against fp32
        suffix = "" if baseline == "tutorial" else "_vs_fp32_tutorial"
        ratios = {name: value / medians[baseline] for name, value in medians.items() if name not in baselines}
        result[f"ratios{suffix}"] = ratios
        if baseline in per_cpu:
            result[f"cpu_time_ratios{suffix}"] = {n: per_cpu[n] / per_cpu[baseline] for n in ratios if n in per_cpu}
        for name, ratio in ratios.items():
            also = ""
            if name in result.get(f"cpu_time_ratios{suffix}", {}) and device == "cpu":
                also = f" (per CPU second: {result[f'cpu_time_ratios{suffix}'][name]:.2f}x)"
            print(f"ratio {name} / {baseline}: {ratio:.2f}x{also}")
    if profiled:
        result["profile"] = profiled["profile"]
    write_json(args.json, result)
    return result


def summarize(trials: list[dict[str, Any]], names: list[str]) -> list[list[Any]]:
    rows = []
    for name in names:
        mine = [t for t in trials if t["recipe"] == name]
        t = mine[0]
        per_cpu = [m["tokens_per_cpu_s"] for m in mine if m["tokens_per_cpu_s"]]
        rows.append(
            [
                name,
                statistics.median([m["tokens_per_s"] for m in mine]),
                statistics.median(per_cpu) if per_cpu else "-",
                len(mine),
                t["batch"],
                t["activation_checkpointing"],
                t["bf16"],
                t["sampling"] + (" + packing" if t["packing"] else ""),
                f"{t['lora']} {t['adapter_dtype'].removeprefix('torch.')}",
            ]
        )
    return rows


if __name__ == "__main__":
    run_main(main)
