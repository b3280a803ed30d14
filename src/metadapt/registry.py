"""Names in recipes → the things they build: algorithms, models, task families and update rules.

A module declares what it provides where it defines it::

    @register("algorithm", "protonet")
    class ProtoNet(MetricLearner):
        @dataclass
        class Options: ...            # the keys of the recipe's ``algorithm:`` section

No list of names exists anywhere else. A recipe may also name a user's class by import path,
``pkg.module:Class`` (or ``pkg.module.Class``, torchtune's convention); its options are its own
``Options`` dataclass when it has one, else the keyword arguments of its constructor.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from metadapt.errors import UserError

KINDS = ("algorithm", "model", "task", "update_rule")
#: the module whose import registers each kind's built-in entries
_BUILTINS = {"algorithm": ("metadapt.algorithms",), "model": ("metadapt.models",),
             "task": ("metadapt.tasks", "metadapt.envs"), "update_rule": ("metadapt.algorithms",)}
#: the recipe key that names the thing, per kind
NAME_KEY = {"algorithm": "name", "model": "name", "task": "family", "update_rule": "update_rule"}


@dataclass(frozen=True)
class Entry:
    """What a name builds: ``target`` (a class or function), the dataclass of its options (``None``:
    the keyword arguments of ``target``), and the option values the name itself fixes (``fomaml``
    fixes ``first_order: true``)."""

    name: str
    target: Any
    options: type | None = None
    implied: dict[str, Any] = field(default_factory=dict)


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, options: type | None = None, **implied: Any):
    """Class decorator: make ``name`` build the class in recipes. ``options`` defaults to the
    class's ``Options`` dataclass; keyword arguments are options the name fixes."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")

    def decorate(target):
        _ENTRIES[kind][name] = Entry(name, target, options or getattr(target, "Options", None), dict(implied))
        return target

    return decorate


def is_import_path(name: str) -> bool:
    return ":" in name or "." in name


def import_object(kind: str, path: str) -> Any:
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise UserError(f"{kind} {path!r} is not an import path; write pkg.module:Object")
    try:
        obj = importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"{kind} {path!r}: cannot import module {module!r} ({err}); "
                        "is the package installed or on PYTHONPATH?") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserError(f"{kind} {path!r}: module {module!r} has no {attr!r}") from None
    return obj


def builtin_names(kind: str) -> list[str]:
    for module in _BUILTINS[kind]:
        importlib.import_module(module)
    return list(_ENTRIES[kind])


def lookup(kind: str, name: str) -> Entry:
    """The entry a recipe's name refers to: a registered name or ``pkg.module:Object``."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{kind} name must be a non-empty string, got {name!r}")
    if is_import_path(name):
        target = import_object(kind, name)
        return Entry(name, target, getattr(target, "Options", None) if inspect.isclass(target) else None)
    known = builtin_names(kind)
    if name not in _ENTRIES[kind]:
        raise UserError(f"{kind} {name!r} is not known; choose one of {', '.join(known)} "
                        "or name your own as pkg.module:Class")
    return _ENTRIES[kind][name]


def option_names(entry: Entry) -> list[str]:
    if entry.options is not None:
        return [f.name for f in dataclasses.fields(entry.options)]
    try:
        parameters = inspect.signature(entry.target).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def import_path(obj: Any) -> str | None:
    """``module:qualname`` of a class or function that can be imported back, else ``None``."""
    target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    if not module or module == "__main__" or "<locals>" in qualname:
        return None
    return f"{module}:{qualname}"
