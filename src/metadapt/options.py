"""Typed options: the dataclass fields a recipe section may set, their checks and their coercion.

Every component declares its options as a dataclass whose fields are made with :func:`option`,
which records the allowed values beside the default::

    @dataclass
    class Options:
        inner_lr: float = option(0.01, positive=True, help="step size of the inner loop")
        task_parallel: str = option("auto", choices=("auto", "vmap", "loop"))

:func:`fill` builds such a dataclass from a recipe's mapping, refusing an unknown key (with the
closest known one), a value of the wrong type, or one out of range, with a one-line message that
names the dotted key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from metadapt.errors import UserError


def option(default: Any, *, choices: tuple | None = None, low: float | None = None, positive: bool = False,
           high: float | None = None, help: str = "") -> Any:
    """A dataclass field with its checks: ``choices`` (allowed values), ``low`` and ``high``
    (inclusive bounds), ``positive`` (> 0; ``None`` allowed where the type is optional)."""
    metadata = {"choices": choices, "low": low, "high": high, "positive": positive, "help": help}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as type ``hint`` (int, float, str, bool, lists and optionals of them), or a
    :class:`UserError` naming ``key``."""
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            value = [value]
        return [coerce(v, item, f"{key}[]") for v in value]
    args = get_args(hint)
    if origin in (Union, types.UnionType) and args:
        if type(None) in args and (value is None or value == "null"):
            return None
        choices = [a for a in args if a is not type(None)]
        if len(choices) == 1:
            return coerce(value, choices[0], key)
        for choice in choices:  # e.g. str | list[str]: the first that fits
            if (get_origin(choice) is list) == isinstance(value, list):
                return coerce(value, choice, key)
        raise UserError(f"{key} must be one of the types {', '.join(map(_type_name, choices))}, "
                        f"got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{key} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"{key} must be finite, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{key} must be a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"unsupported option type {hint} for {key}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def unknown_key(key: str, known: list[str], owner: str = "") -> UserError:
    """An unknown dotted ``key``: suggest the closest of ``known`` (last components)."""
    close = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in known], n=1)
    hint = ""
    if close:
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        hint = f"; did you mean {prefix}{close[0]}?"
    elif owner:
        names = [k.split(".")[-1] for k in known]
        hint = f"; {owner} takes {', '.join(names) if names else 'no options'}"
    return UserError(f"unknown config key {key!r}{hint}")


def check(options: Any, prefix: str, owner: str = "") -> None:
    """Refuse out-of-range values of a filled options dataclass (its fields' metadata)."""
    suffix = f" for {owner}" if owner else ""
    for f in dataclasses.fields(options):
        value, meta, key = getattr(options, f.name), f.metadata, f"{prefix}{f.name}"
        values = value if isinstance(value, list) else [value]
        if meta.get("choices") is not None:
            for v in values:
                if v not in meta["choices"]:
                    raise UserError(f"{key} must be one of {', '.join(map(str, meta['choices']))}; got {v!r}")
        if meta.get("positive"):
            for v in values:
                if v is not None and not v > 0:
                    raise UserError(f"{key} must be positive, got {v}")
        if meta.get("low") is not None:
            for v in values:
                if v is not None and v < meta["low"]:
                    raise UserError(f"{key} must be >= {meta['low']:g}{suffix}, got {v}")
        if meta.get("high") is not None:
            for v in values:
                if v is not None and v > meta["high"]:
                    raise UserError(f"{key} must be <= {meta['high']:g}{suffix}, got {v}")
    validate = getattr(options, "validate", None)
    if validate is not None:
        validate(prefix)


def fill(cls: type, data: dict[str, Any], prefix: str, owner: str = "") -> Any:
    """An instance of the options dataclass ``cls`` from a recipe mapping, checked."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        if key not in names:
            raise unknown_key(f"{prefix}{key}", [f"{prefix}{n}" for n in names], owner)
        current = hints[key]
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{prefix}{key} must be a mapping of keys, got {value!r}")
            values[key] = fill(current, value, f"{prefix}{key}.")
        else:
            values[key] = coerce(value, current, f"{prefix}{key}")
    options = cls(**values)
    check(options, prefix, owner)
    return options
