"""Results back from ``.bench/results.json``: re-render BENCHMARKS.md without a re-run.

``run.py`` stores each section's ``to_json()`` and its class (``module:QualName``);
``load`` rebuilds the frozen dataclass from its field types (dataclasses, ``tuple[X, ...]``,
fixed tuples, ``dict[str, X]``, ``X | None``, str / int / float / bool). A section whose
``to_json()`` is not ``asdict(self)`` gives a ``from_json`` classmethod instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import Any

from tests.bench.section import Section


def class_path(section: Section) -> str:
    kind = type(section)
    return f"{kind.__module__}:{kind.__qualname__}"


def section(path: str, data: dict[str, Any]) -> Section:
    module, _, name = path.partition(":")
    kind = getattr(importlib.import_module(module), name)
    loaded = kind.from_json(data) if hasattr(kind, "from_json") else load(kind, data)
    assert isinstance(loaded, Section), path
    return loaded


def load(kind: Any, data: Any) -> Any:
    """``data`` (plain JSON) as an instance of the type ``kind``."""
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        fields = [f.name for f in dataclasses.fields(kind) if f.init]
        return kind(**{f: load(hints[f], data[f]) for f in fields if f in data})
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if data is None:
            return None
        return load(next(a for a in args if a is not type(None)), data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(load(args[0], x) for x in data)
        return tuple(load(a, x) for a, x in zip(args, data, strict=True))
    if origin is dict:
        return {k: load(args[1], v) for k, v in data.items()}
    if kind is float:
        return float(data)  # JSON has NaN and Infinity; an int is a float too
    return data
