"""Typed dataclasses from YAML or JSON mappings, and YAML read the way DVC reads it (ruamel, YAML 1.2).

`build` checks every key and type recursively and names the first problem by its dotted key
(`train.lora.r must be an integer, got 'four'`); params.yaml (loravc.params) and metadata.json
(loravc.core.metadata) are both read through it.
"""

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any

from loravc.core.errors import UserError


def read_yaml(path: Path) -> Any:
    """Parse a YAML file as DVC does (ruamel, YAML 1.2: `2e-4` is a float, not a string)."""
    return parse_yaml(path.read_text(encoding="utf-8"))


def parse_yaml(text: str | bytes) -> Any:
    """Parse YAML text as DVC does (ruamel, YAML 1.2)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text.decode("utf-8") if isinstance(text, bytes) else text)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (with a prefix: {"prefix.a.b": 1}); lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def build(cls: type, data: Any, prefix: str, *, extra: str | None = None) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types recursively.

    Unknown keys are an error, or with `extra` (the name of a dict field of `cls`, or the class's own
    `EXTRA_KEYS`) are kept there.
    """
    extra = extra or getattr(cls, "EXTRA_KEYS", None)
    if not isinstance(data, dict):
        raise UserError(f"{prefix or 'the file'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name != extra]
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    if unknown and extra is None:
        where = _join(prefix, unknown[0])
        raise UserError(f"unknown key {where!r}; known keys here: {', '.join(sorted(names))}")
    missing = [f.name for f in fields if f.name not in data and _required(f)]
    if missing:
        raise UserError(f"{_join(prefix, missing[0])} is missing")
    values = {name: _convert(data[name], hints[name], _join(prefix, name), extra) for name in names if name in data}
    if extra is not None:
        values[extra] = {key: data[key] for key in unknown}
    try:
        return cls(**values)
    except UserError:
        raise
    except (TypeError, ValueError) as err:
        raise UserError(f"{prefix}: {err}") from None


def _convert(value: Any, hint: Any, key: str, extra: str | None = None) -> Any:
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(value, options[0], key, extra)
        for option in options:  # the first type that takes the value (list[str] | str: a list, else a string)
            try:
                return _convert(value, option, key, extra)
            except UserError:
                continue
        raise UserError(f"{key} must be {describe(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key, extra=extra)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{key} must be {describe(hint)}, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key} must be {describe(hint)}, got {value!r}")
        if args and dataclasses.is_dataclass(args[1]):  # dict[str, SomeDataclass]: each value built and checked
            return {name: build(args[1], item, _join(key, str(name))) for name, item in value.items()}
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    check_type(key, hint, value)
    if isinstance(hint, type) and not isinstance(value, hint):  # a class the type checker leaves to its owner
        raise UserError(f"{key} must be {describe(hint)}, got {value!r}")
    return value


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# Whether a value fits an annotated type, for settings whose types another library declares (trl.SFTConfig,
# peft.LoraConfig): a YAML int for a float is fine, a bool is no number, a string for an enum names a member.


def check_type(key: str, hint: Any, value: Any) -> None:
    """A UserError naming `key` unless `value` has type `hint`, with what to write instead where it can tell."""
    if not accepts(hint, value):
        raise UserError(f"{key} must be {describe(hint)}, got {value!r}{quote_hint(hint, value)}")


def accepts(hint: Any, value: Any) -> bool:
    """Whether `value` (as YAML gives it) has type `hint`; a type YAML cannot spell is left to its owner."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if _is_enum(a)]
        if enums and isinstance(value, str):  # SchedulerType | str: the string must name a member
            return any(value in _values(e) for e in enums)
        return any(accepts(a, value) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        number = int if hint is int else int | float
        return isinstance(value, number) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if _is_enum(hint):
        return isinstance(value, str) and value in _values(hint)
    if (origin or hint) is list:
        return isinstance(value, list) and (not args or all(accepts(args[0], v) for v in value))
    if (origin or hint) is dict:
        return isinstance(value, dict)
    return True  # Any, or a type YAML cannot spell (ParallelismConfig): SFTConfig decides


def describe(hint: Any) -> str:
    """`hint` in words for an error message (an integer, a number, one of a, b or c)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        enums = any(_is_enum(a) for a in args)
        parts = [describe(a) for a in args if not (enums and a is str)]  # the enum says which strings
        return _or(list(dict.fromkeys(parts)))
    if origin is typing.Literal:
        return "one of " + ", ".join(_yaml(a) for a in args)
    if _is_enum(hint):
        return "one of " + ", ".join(_values(hint))
    if (origin or hint) is list:
        return "a list of strings" if args == (str,) else "a list"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint) or ("a mapping" if (origin or hint) is dict else getattr(hint, "__name__", str(hint)))


def quote_hint(hint: Any, value: Any) -> str:
    """What to do, where the value is right but written as the wrong YAML type."""
    if isinstance(value, str):
        try:
            parsed = parse_yaml(value)
        except Exception:  # not YAML on its own: no hint
            return ""
        return ": remove the quotes" if not isinstance(parsed, str) and accepts(hint, parsed) else ""
    scalar = isinstance(value, int | float)  # a bool too
    return ": put it in quotes" if scalar and accepts(hint, str(value)) else ""


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _values(enum_type: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in enum_type]


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _or(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
