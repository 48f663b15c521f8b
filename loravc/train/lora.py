"""The LoRA adapter in one place: train.lora as params, its rules, and the peft.LoraConfig built from it.

Rules run in two steps: `LoraParams` checks what needs no PEFT import when params load (every stage that
reads train); `check_lora` checks the keys and values against peft.LoraConfig and the target modules against
a meta-device skeleton of the base, before any model loads (the train stage's preflight, `loravc tune`).
"""

import dataclasses
import difflib
import functools
import re
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from loravc.core.errors import UserError
from loravc.core.params import WEIGHT_DTYPES, knob, require
from loravc.core.schema import check_type

ALL_LINEAR = "all-linear"  # PEFT's shorthand for every linear layer but the output head

# init_lora_weights values the pipeline runs: PEFT's others need a calibration pass or a quantized base it does
# not make (eva, corda, lora_ga, loftq) or change the base's weights in ways no conversion undoes (mica).
INITS = ("gaussian", "pissa", "olora", "orthogonal")  # besides true and false (YAML booleans) and pissa_niter_N

PATTERNS = {"rank_pattern": "integer (a rank)", "alpha_pattern": "number (an alpha)"}  # per-module overrides

# LoraConfig options whose initialisation or engine the pipeline does not run
UNRUN = {
    "megatron_config": "Megatron-LM layers are not something the pipeline trains: remove it",
    "megatron_core": "Megatron-LM layers are not something the pipeline trains: remove it",
    "eva_config": "goes with init_lora_weights eva, which needs a calibration pass the pipeline does not run",
    "corda_config": "goes with init_lora_weights corda, which needs a calibration pass the pipeline does not run",
    "loftq_config": "goes with init_lora_weights loftq, which needs a quantized base the pipeline does not make",
}


@dataclass
class LoraParams:
    """params.yaml `train.lora`: the LoRA adapter, converted to peft.LoraConfig by `lora_config` below.

    Any other key of train.lora is a peft.LoraConfig option (use_dora, use_rslora, modules_to_save,
    init_lora_weights, ...), kept in `options`; check_lora_keys checks them against PEFT before a model loads.
    """

    EXTRA_KEYS: ClassVar[str] = "options"  # loravc.core.schema.build keeps the other keys here

    r: int = knob(4, "rank of the update matrices (why 4: docs/experiments.md, the default sweep)")
    alpha: int = knob(16, "the update is scaled by alpha / r")
    dropout: float = knob(0.05, "dropout on the adapter's input")
    bias: str = knob("none", "none, all or lora_only")
    target_modules: list[str] | str = knob(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "modules that get an adapter: a list of names, all-linear, or a regular expression (PEFT's)",
    )
    dtype: str = knob(
        "auto",
        "of the trained weights: auto (the profile's: float32 for cpu; bfloat16 for gpu where the device "
        "has bf16, else float32), float32 or bfloat16",
    )
    options: dict[str, Any] = knob({}, "other peft.LoraConfig options, written as keys of train.lora")

    def __post_init__(self) -> None:
        require(self.r >= 1, "train.lora.r", "must be a positive integer")
        require(self.alpha >= 1, "train.lora.alpha", "must be a positive integer")
        require(0.0 <= self.dropout < 1.0, "train.lora.dropout", "must be in [0, 1)")
        require(self.bias in ("none", "all", "lora_only"), "train.lora.bias", "must be none, all or lora_only")
        require(bool(self.target_modules), "train.lora.target_modules", "must list at least one module")
        dtypes = ", ".join(WEIGHT_DTYPES)
        require(self.dtype in WEIGHT_DTYPES, "train.lora.dtype", f"must be one of {dtypes}: {self.dtype!r}")
        if self.options:  # what needs no PEFT import; keys and types against peft.LoraConfig: preflight
            check_lora_values(self)

    @property
    def mutates_base(self) -> bool:
        """Whether init_lora_weights changes the base's weights while training (PiSSA, OLoRA): saved converted."""
        init = self.options.get("init_lora_weights", True)
        return isinstance(init, str) and init.startswith(MUTATING_INITS)


MUTATING_INITS = ("pissa", "olora")  # init_lora_weights that move part of the base's weights into the adapter


# peft.LoraConfig arguments the project sets itself: from its own keys, or always (task_type)
LORA_OWNED = {
    "lora_alpha": "is PEFT's name for train.lora.alpha, which params set: use alpha alone",
    "lora_dropout": "is PEFT's name for train.lora.dropout, which params set: use dropout alone",
    "task_type": "is set by the pipeline (CAUSAL_LM): remove it",
    "inference_mode": "is set by PEFT when it saves: remove it",
    "base_model_name_or_path": "is set by PEFT from the base: remove it",
}


def lora_config(params: LoraParams) -> Any:
    """peft.LoraConfig from train.lora: the project's keys, and every other key as a LoraConfig option."""
    from peft import LoraConfig

    targets = params.target_modules
    if not isinstance(targets, str) and [t.lower() for t in targets] == [ALL_LINEAR]:
        targets = ALL_LINEAR  # PEFT knows the shorthand as a string only
    return LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        bias=params.bias,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
        **params.options,
    )


def check_lora(lora: LoraParams, base_dir: Path | None) -> None:
    """Everything about train.lora that needs PEFT or the base's module names, before any model loads (base_dir
    None: PEFT's options only, the base is not built yet)."""
    if base_dir is not None:
        check_target_modules(lora.target_modules, base_dir)
    check_lora_keys(lora)
    if base_dir is not None:
        check_lora_options(lora, base_dir)


def check_lora_values(lora: Any) -> None:
    """What params can check of train.lora's options without importing PEFT (LoraParams calls it when params
    load): PEFT's names for the project's keys, the initialisations the pipeline runs, what PiSSA/OLoRA carry."""
    for key, why in LORA_OWNED.items():
        if key in lora.options:
            raise UserError(f"train.lora.{key} {why}")
    if "init_lora_weights" in lora.options:
        _check_init(lora.options["init_lora_weights"])
    check_conversion(lora)


def check_lora_keys(lora: Any) -> None:
    """train.lora's other keys are peft.LoraConfig options of the right type, with values PEFT accepts (imports
    PEFT: run by check_train_params before any model loads, and by `loravc tune` for its knobs)."""
    if not lora.options:
        return
    from peft import LoraConfig

    hints = typing.get_type_hints(LoraConfig)
    ours = {"r", "bias", "target_modules", "peft_type", "auto_mapping", "peft_version", "revision"}
    fields = {f.name for f in dataclasses.fields(LoraConfig) if f.init} - set(LORA_OWNED) - ours - set(UNRUN)
    for key, value in lora.options.items():
        if key in UNRUN:
            raise UserError(f"train.lora.{key}: {UNRUN[key]}")
        if key not in fields:
            close = difflib.get_close_matches(key, [*fields, "alpha", "dropout", "bias", "target_modules"], n=1)
            close = ["r"] if key in ("rank", "lora_r", "lora_rank") else close
            mean = f" (did you mean {close[0]}?)" if close else ""
            hint = "see peft.LoraConfig for the keys"
            raise UserError(f"train.lora.{key} is not a peft.LoraConfig option{mean}: {hint}")
        if key != "init_lora_weights":
            check_type(f"train.lora.{key}", hints[key], value)
        for name, item in value.items() if key in PATTERNS and isinstance(value, dict) else []:
            number = int if key == "rank_pattern" else int | float
            if isinstance(item, bool) or not isinstance(item, number) or item <= 0:
                raise UserError(f"train.lora.{key}.{name} must be a positive {PATTERNS[key]}, got {item!r}")
    try:
        LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules, **lora.options)
    except (TypeError, ValueError) as err:
        raise UserError(f"train.lora: peft.LoraConfig rejects these options: {err}") from None


def check_conversion(lora: Any) -> None:
    """PiSSA/OLoRA versions are saved converted to plain LoRA pairs (loravc.train.training.save_adapter); PEFT's
    conversion keeps only those pairs, so what else the adapter would hold cannot go with them."""
    if not lora.mutates_base:
        return
    options = lora.options
    other = [
        what
        for what, present in (
            ("use_dora (its magnitudes do not convert)", options.get("use_dora")),
            ("modules_to_save (dropped by the conversion)", options.get("modules_to_save")),
            (f"bias: {lora.bias} (dropped by the conversion)", lora.bias != "none"),
            (
                "use_rslora with rank_pattern or alpha_pattern (PEFT cannot convert them)",
                options.get("use_rslora") and (options.get("rank_pattern") or options.get("alpha_pattern")),
            ),
        )
        if present
    ]
    if other:
        raise UserError(
            f"train.lora.init_lora_weights {options['init_lora_weights']!r} is saved converted to plain LoRA pairs for "
            f"the unchanged base, which cannot hold {'; '.join(other)}: drop one or the other"
        )


def _check_init(value: Any) -> None:
    ok = isinstance(value, bool) or (
        isinstance(value, str) and (value in INITS or re.fullmatch(r"pissa_niter_[1-9][0-9]*", value))
    )
    if not ok:
        raise UserError(
            f"train.lora.init_lora_weights {value!r}: the pipeline runs true, false (unquoted), {', '.join(INITS)} "
            "or pissa_niter_N (eva, corda, lora_ga and loftq need a calibration pass or a quantized base the "
            "pipeline does not make)"
        )


def check_lora_options(lora: Any, base_dir: Path) -> None:
    """train.lora's options against the base: modules_to_save names its modules (and costs bytes: a warning
    says how many). check_lora_keys checked their keys, types and values."""
    if saved := lora.options.get("modules_to_save"):
        check_modules_to_save(saved, base_dir)


def check_modules_to_save(names: list[str], base_dir: Path) -> None:
    """Every train.lora.modules_to_save entry names a module of the base; warn how many bytes each version
    then stores (a whole trained copy of each, e.g. the embeddings)."""
    model = meta_model(base_dir)
    if model is None:
        return  # loading it will say why
    modules = dict(model.named_modules())
    total = 0
    for name in names:
        hits = [m for n, m in modules.items() if n == name or n.endswith(f".{name}")]
        if not hits:
            raise UserError(f"train.lora.modules_to_save: {name} is not a module of the base ({type(model).__name__})")
        total += sum(p.numel() * 4 for m in hits for p in m.parameters())  # trained in fp32 unless lora.dtype says
    warnings.warn(
        f"train.lora.modules_to_save stores a whole trained copy of {', '.join(names)} in every version: about "
        f"{total / 1e6:,.0f} MB in fp32, against a few MB for the LoRA pairs (python -m bench.storage --lora ...)",
        stacklevel=2,
    )


def check_target_modules(targets: list[str] | str, base_dir: Path) -> None:
    """Every train.lora.target_modules entry names modules of the base that LoRA can adapt (PEFT's matching:
    the whole module name, or its end after a dot), or is all-linear alone; a string other than all-linear is
    PEFT's regular expression over whole module names, and must match a module LoRA can adapt."""
    if isinstance(targets, str) and targets.lower() != ALL_LINEAR:
        check_target_pattern(targets, base_dir)
        return
    targets = [targets] if isinstance(targets, str) else targets
    if ALL_LINEAR in (t.lower() for t in targets):
        if len(targets) > 1:
            raise UserError(f"train.lora.target_modules: {ALL_LINEAR} adapts every linear layer: list it alone")
        return
    found = base_modules(base_dir)
    if found is None:
        return  # transformers cannot build it from its config: loading it will say why
    architecture, modules, adaptable = found
    has = f"({architecture} has: {', '.join(sorted({name.rsplit('.', 1)[-1] for name in adaptable}))})"
    unknown = []
    for target in targets:
        hits = [name for name in modules if name == target or name.endswith(f".{target}")]
        if not hits:
            unknown.append(target)
        elif other := sorted({modules[name] for name in hits if name not in adaptable}):
            kind = " / ".join(other)
            raise UserError(
                f"train.lora.target_modules: {target} is a {kind} in the base, which LoRA cannot adapt {has}"
            )
    if unknown:
        what = "is not a module" if len(unknown) == 1 else "are not modules"
        raise UserError(f"train.lora.target_modules: {', '.join(unknown)} {what} of the base {has}")


def base_modules(base_dir: Path) -> tuple[str, dict[str, str], set[str]] | None:
    """The base's model class, its modules (full name -> class name) and the names of those LoRA can adapt,
    from a skeleton built from config.json on the meta device (no weights read, no memory); None if
    transformers cannot build it."""
    import torch
    from transformers.pytorch_utils import Conv1D

    model = meta_model(base_dir)
    if model is None:
        return None
    # What PEFT's LoRA layers wrap (peft.tuners.lora.model: any other module is "not supported")
    nn = torch.nn
    lora_layers = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention, Conv1D)
    named = [(name, module) for name, module in model.named_modules() if name]
    adaptable = {name for name, module in named if isinstance(module, lora_layers)}
    return type(model).__name__, {name: type(module).__name__ for name, module in named}, adaptable


@functools.cache  # target modules, a pattern and modules_to_save are each checked against it
def meta_model(base_dir: Path) -> Any:
    """The base built from its config.json on the meta device (no weights read); None if transformers cannot."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_dir)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError, ImportError):
        return None


def check_target_pattern(pattern: str, base_dir: Path) -> None:
    """train.lora.target_modules as a string: PEFT's regular expression, matched against whole module names."""
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise UserError(f"train.lora.target_modules {pattern!r} is not a regular expression: {err}") from None
    found = base_modules(base_dir)
    if found is not None and not any(compiled.fullmatch(name) for name in found[2]):
        raise UserError(
            f"train.lora.target_modules {pattern!r} (a regular expression over whole module names, as PEFT reads a "
            f"string) matches no module of the base LoRA can adapt, e.g. {min(found[2])}"
        )
