"""The Avro contracts in ``schemas/avro``, loaded as self-contained schemas, one per record.

Files may refer to named types defined in other files (``its.Evidence`` in the alert, for instance).
A registry subject must stand alone, so each record's schema is returned with every named type it
uses defined inline at its first use.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

AVRO_DIR = Path(__file__).parent / "avro"
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
NAMED = {"record", "enum", "fixed"}


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect(node: Any, namespace: str | None, out: dict[str, dict[str, Any]]) -> None:
    """Record every named type definition found in ``node`` under its full name."""
    if isinstance(node, list):
        for branch in node:
            _collect(branch, namespace, out)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in NAMED:
            namespace = node.get("namespace", namespace)
            out[_full_name(node["name"], namespace)] = {**node, "namespace": namespace}
        if kind == "record":
            for field in node["fields"]:
                _collect(field["type"], namespace, out)
        elif kind == "array":
            _collect(node["items"], namespace, out)
        elif kind == "map":
            _collect(node["values"], namespace, out)
        elif isinstance(kind, dict | list):
            _collect(kind, namespace, out)


def _inline(node: Any, namespace: str | None, defs: dict[str, dict[str, Any]], seen: set[str]) -> Any:
    """Return ``node`` with references to named types replaced by their definition at first use."""
    if isinstance(node, str):
        if node in PRIMITIVES:
            return node
        full = _full_name(node, namespace)
        if full not in defs:
            raise ValueError(f"unknown Avro type {node!r} (namespace {namespace!r})")
        if full in seen:
            return full
        return _inline(defs[full], namespace, defs, seen)
    if isinstance(node, list):
        return [_inline(branch, namespace, defs, seen) for branch in node]
    node = dict(node)
    kind = node.get("type")
    if kind in NAMED:
        namespace = node.get("namespace") or namespace
        seen.add(_full_name(node["name"], namespace))
    if kind == "record":
        node["fields"] = [{**f, "type": _inline(f["type"], namespace, defs, seen)} for f in node["fields"]]
    elif kind == "array":
        node["items"] = _inline(node["items"], namespace, defs, seen)
    elif kind == "map":
        node["values"] = _inline(node["values"], namespace, defs, seen)
    elif isinstance(kind, dict | list):
        node["type"] = _inline(kind, namespace, defs, seen)
    return node


@cache
def _definitions() -> tuple[dict[str, dict[str, Any]], tuple[str, ...]]:
    defs: dict[str, dict[str, Any]] = {}
    top_level: list[str] = []
    for path in sorted(AVRO_DIR.glob("*.avsc")):
        doc = json.loads(path.read_text())
        _collect(doc, None, defs)
        top_level.append(_full_name(doc["name"], doc.get("namespace")))
    return defs, tuple(top_level)


def record_names() -> tuple[str, ...]:
    """Full names of the top-level records, one per ``.avsc`` file."""
    return _definitions()[1]


@cache
def _schema(full_name: str) -> str:
    defs, _ = _definitions()
    if full_name not in defs:
        raise KeyError(f"no Avro contract named {full_name!r}; known: {sorted(_definitions()[1])}")
    return json.dumps(_inline(full_name, None, defs, set()))


def schema(full_name: str) -> dict[str, Any]:
    """The self-contained schema (JSON object) of a top-level record such as ``its.Detections``."""
    return copy.deepcopy(json.loads(_schema(full_name)))


def schema_str(full_name: str) -> str:
    """The self-contained schema as the JSON text a registry stores."""
    return _schema(full_name)


@cache
def parsed(full_name: str) -> dict[str, Any]:
    """The fastavro-parsed schema of a record (cached; treat as read-only)."""
    return fastavro.parse_schema(schema(full_name))


def named_type(full_name: str) -> dict[str, Any]:
    """The definition of any named type (record, enum, fixed) across all contracts."""
    return copy.deepcopy(_definitions()[0][full_name])
