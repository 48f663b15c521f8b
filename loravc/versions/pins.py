"""What a commit's dvc.yaml and dvc.lock pin: the adapter (the version), its base, its data, its metrics."""

import re
import shlex
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any, ClassVar

from loravc.core.schema import flatten

ARTIFACT = "lora-adapter"  # the model artifact in dvc.yaml, when it declares several


@dataclass(frozen=True)
class Out:
    """A DVC-tracked directory as one dvc.lock records it."""

    path: str
    md5: str  # DVC's directory hash, "<md5>.dir"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "md5": self.md5}


@dataclass(frozen=True)
class Pins:
    """What a commit's dvc.yaml and dvc.lock say about the version it holds."""

    adapter: Out
    base: Out | None  # the train stage's --base
    data: Out | None  # the evaluate stage's --data (prepared splits)
    evaluated: str | None  # the adapter hash the evaluate stage ran on
    eval_metrics: str | None  # the evaluate stage's metrics file
    metrics_files: tuple[str, ...]
    predictions: str | None  # the evaluate stage's --predictions file (git-tracked), if it writes one
    params: dict[str, Any]  # flattened params recorded in dvc.lock (what the stages actually used)
    train_plots: Out | None = None  # the train stage's per-step curves, `<--live>/plots` (older versions lack it)


def model_artifacts(dvc_yaml: Any) -> dict[str, str]:
    """{name: path} of the model artifacts a dvc.yaml declares (`type: model`, the default)."""
    artifacts = dvc_yaml.get("artifacts") if isinstance(dvc_yaml, dict) else None
    return {
        name: str(spec.get("path"))
        for name, spec in (artifacts or {}).items()
        if isinstance(spec, dict) and spec.get("type", "model") == "model"
    }


def parse_pins(dvc_yaml: Any, dvc_lock: Any) -> Pins | None:
    """The version a commit holds, from its dvc.yaml and dvc.lock; None if it has no trained adapter."""
    if not isinstance(dvc_yaml, dict) or not isinstance(dvc_lock, dict):
        return None
    locked = dvc_lock.get("stages") or {}
    train, evaluate = locked.get("train") or {}, locked.get("evaluate") or {}
    models = model_artifacts(dvc_yaml)
    path = models.get(ARTIFACT) or (next(iter(models.values())) if len(models) == 1 else None)
    adapter = _entry(train.get("outs"), path or _arg(train.get("cmd"), "--out"))
    if adapter is None:
        return None
    evaluated = _entry(evaluate.get("deps"), adapter.path)
    metrics: list[str] = []
    eval_metrics = None
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        for item in (stage or {}).get("metrics") or []:
            file = next(iter(item)) if isinstance(item, dict) else str(item)
            metrics.append(file)
            if name == "evaluate" and eval_metrics is None:
                eval_metrics = file
    params: dict[str, Any] = {}
    for stage in locked.values():
        for values in (stage.get("params") or {}).values():
            params |= flatten(values)
    return Pins(
        adapter=adapter,
        base=_entry(train.get("deps"), _arg(train.get("cmd"), "--base")),
        data=_entry(evaluate.get("deps"), _arg(evaluate.get("cmd"), "--data")),
        evaluated=evaluated.md5 if evaluated else None,
        eval_metrics=eval_metrics,
        metrics_files=tuple(metrics),
        predictions=_arg(evaluate.get("cmd"), "--predictions"),
        params=dict(sorted(params.items())),
        train_plots=_entry(train.get("outs"), f"{live}/plots") if (live := _arg(train.get("cmd"), "--live")) else None,
    )


def _arg(cmd: Any, flag: str) -> str | None:
    """The value of `flag` in a stage command (dvc.lock stores it as a string or a list)."""
    tokens = [t for part in (cmd if isinstance(cmd, list) else [cmd]) for t in shlex.split(str(part))]
    for i, token in enumerate(tokens):
        if token == flag and i + 1 < len(tokens):
            return tokens[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    return None


def _entry(entries: list[dict[str, Any]] | None, path: str | None) -> Out | None:
    for entry in entries or []:
        if path is not None and entry.get("path") == path and str(entry.get("md5", "")).endswith(".dir"):
            return Out(path, entry["md5"])
    return None


# --- reading many commits' files fast ---------------------------------------------------------------
# dvc.yaml and dvc.lock as DVC reads them (YAML 1.2: `no` and `on` are strings, `1e-3` a float, `010` is
# ten), parsed by libyaml in C: ruamel's pure-Python parser is 93% of `loravc list` over a long history.
YAML12_RESOLVERS = (  # ruamel's YAML 1.2 implicit types, its regular expressions (timestamps and `_` included)
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    (
        "tag:yaml.org,2002:int",
        r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$",
        "-+0123456789",
    ),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    (
        "tag:yaml.org,2002:timestamp",
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?"
        r"(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?"
        r"(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$",
        "0123456789",
    ),
)


@cache
def _yaml12_loader() -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where PyYAML was built with it

    class Yaml12Loader(base):  # type: ignore[misc, valid-type]
        yaml_implicit_resolvers: ClassVar[dict[str, list[Any]]] = {}  # none of YAML 1.1's

        def construct_yaml_int(self, node: Any) -> int:  # YAML 1.2: 010 is ten; 0o17 and 0x1f as written
            value = str(self.construct_scalar(node)).replace("_", "")
            sign, digits = (-1, value[1:]) if value.startswith("-") else (1, value.lstrip("+"))
            base = {"0o": 8, "0x": 16, "0b": 2}.get(digits[:2], 10)
            return sign * int(digits[2:] if base != 10 else digits, base)

    for tag, pattern, first in YAML12_RESOLVERS:
        Yaml12Loader.add_implicit_resolver(tag, re.compile(pattern), list(first))
    Yaml12Loader.add_constructor("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml_int)
    return Yaml12Loader


def load_yaml12(text: bytes | str) -> Any:
    """A file DVC wrote, read as ruamel reads it in YAML 1.2 (loravc.core.schema.parse_yaml), with libyaml."""
    import yaml

    return yaml.load(text, Loader=_yaml12_loader())  # a SafeLoader: builds plain data only


def pins_to_dict(pins: Pins | None) -> dict[str, Any] | None:
    """Pins as JSON-ready data (for the index of parsed commits)."""
    return None if pins is None else asdict(pins)


def pins_from_dict(data: dict[str, Any] | None) -> Pins | None:
    if data is None:
        return None
    outs = {key: Out(**data[key]) if data.get(key) else None for key in ("adapter", "base", "data", "train_plots")}
    return Pins(**(data | outs | {"metrics_files": tuple(data["metrics_files"])}))
