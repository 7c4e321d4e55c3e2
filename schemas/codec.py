"""Record <-> Avro-dict conversion, compiled once per record class.

fastavro writes plain dicts (it resolves unions by inspecting mappings), so each typed record is
turned into a dict on the way out and rebuilt on the way in. The converters are generated as
straight-line Python per class because this sits on the hottest path of every stage: a
generic recursive walk costs several times more per record.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from enum import Enum
from functools import cache
from typing import Any, TypeVar

R = TypeVar("R")
Converter = Callable[[Any], Any]


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        raise TypeError(f"only X | None unions are supported in records, got {tp}")
    return tp, False


def _converter(tp: Any, direction: str) -> Converter | None:
    """A function converting one value of type ``tp``, or None when the value passes unchanged."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    conv: Converter | None
    if dataclasses.is_dataclass(inner):
        conv = to_avro_function(inner) if direction == "out" else from_avro_function(inner)  # type: ignore[arg-type]
    elif isinstance(inner, type) and issubclass(inner, Enum):
        conv = None if direction == "out" else inner
    elif origin is list:
        item = _converter(typing.get_args(inner)[0], direction)
        conv = None if item is None else (lambda v, f=item: [f(x) for x in v])
    elif origin is dict:
        value = _converter(typing.get_args(inner)[1], direction)
        conv = None if value is None else (lambda v, f=value: {k: f(x) for k, x in v.items()})
    else:
        conv = None
    if conv is not None and optional:
        return lambda v, f=conv: None if v is None else f(v)
    return conv


def _fields(cls: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


@cache
def to_avro_function(cls: type) -> Converter:
    """Compile ``record -> dict`` for a dataclass record type."""
    env: dict[str, Any] = {}
    items = []
    for name, tp in _fields(cls):
        conv = _converter(tp, "out")
        if conv is None:
            items.append(f"{name!r}: o.{name}")
        else:
            env[f"c_{name}"] = conv
            items.append(f"{name!r}: c_{name}(o.{name})")
    src = "def to_avro(o):\n    return {" + ", ".join(items) + "}\n"
    exec(src, env)
    return env["to_avro"]


@cache
def from_avro_function(cls: type) -> Converter:
    """Compile ``dict -> record`` for a dataclass record type (the dict as fastavro reads it)."""
    env: dict[str, Any] = {"cls": cls}
    args = []
    for name, tp in _fields(cls):
        conv = _converter(tp, "in")
        if conv is None:
            args.append(f"{name}=d[{name!r}]")
        else:
            env[f"c_{name}"] = conv
            args.append(f"{name}=c_{name}(d[{name!r}])")
    src = "def from_avro(d):\n    return cls(" + ", ".join(args) + ")\n"
    exec(src, env)
    return env["from_avro"]


def to_avro(record: Any) -> dict[str, Any]:
    """The dict fastavro writes for a record."""
    return to_avro_function(type(record))(record)


def from_avro(cls: type[R], data: dict[str, Any]) -> R:
    """Rebuild a typed record from the dict fastavro read."""
    return from_avro_function(cls)(data)
