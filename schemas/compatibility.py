"""Avro schema compatibility, following the schema-resolution rules of the Avro specification.

``check(reader, writer)`` lists why data written with ``writer`` cannot be read with ``reader``;
``is_compatible(new, existing, level)`` applies a Confluent compatibility level to a subject's history.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastavro import parse_schema

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})

# Writer type -> reader types it may be promoted to (Avro spec, "Schema Resolution").
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)

SchemaLike = str | dict[str, Any] | list[Any]


class InvalidSchemaError(ValueError):
    """The text is not JSON or not a valid Avro schema."""


@dataclass(frozen=True)
class ParsedSchema:
    """A parsed Avro schema together with the named types it defines (fully qualified names)."""

    root: Any
    names: dict[str, Any] = field(default_factory=dict)


def parse(schema: SchemaLike | ParsedSchema) -> ParsedSchema:
    """Parse schema text or JSON into a ``ParsedSchema``; raises ``InvalidSchemaError``."""
    if isinstance(schema, ParsedSchema):
        return schema
    if isinstance(schema, str) and schema.strip() not in PRIMITIVES:  # a bare "int" is a name, not JSON
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidSchemaError(f"schema is not valid JSON: {exc}") from exc
    if isinstance(schema, str):
        schema = schema.strip()
    _require_fields(schema)
    names: dict[str, Any] = {}
    try:
        root = parse_schema(schema, named_schemas=names)  # type: ignore[arg-type]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # fastavro's errors are ValueErrors
        raise InvalidSchemaError(f"invalid Avro schema: {exc}") from exc
    return ParsedSchema(root, names)


def _require_fields(node: Any) -> None:
    """Reject records without a ``fields`` list, which the spec requires and fastavro lets pass."""
    if isinstance(node, list):
        for item in node:
            _require_fields(item)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "error") and not isinstance(node.get("fields"), list):
            raise InvalidSchemaError(f"record {node.get('name')!r} has no 'fields' list")
        for key in ("type", "items", "values"):
            _require_fields(node.get(key))
        for item in node.get("fields") or []:
            if isinstance(item, dict):
                _require_fields(item.get("type"))


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _type_of(node: Any) -> str:
    """The Avro type of a parsed node: a primitive, record, enum, fixed, array, map or union."""
    if isinstance(node, list):
        return "union"
    if isinstance(node, dict):
        kind = node["type"]
        if isinstance(kind, (dict, list)):  # {"type": {...}} wrapping another schema
            return _type_of(kind)
        return "record" if kind == "error" else kind
    return node


class _Checker:
    """One reader/writer comparison; remembers named pairs in progress so recursive types terminate."""

    def __init__(self, reader: ParsedSchema, writer: ParsedSchema) -> None:
        self.reader = reader
        self.writer = writer
        self.in_progress: set[tuple[str, str]] = set()

    def resolve(self, node: Any, side: ParsedSchema) -> Any:
        """Follow named references and ``{"type": {...}}`` wrappers to the definition."""
        while True:
            if isinstance(node, str) and node not in PRIMITIVES:
                if node not in side.names:
                    raise InvalidSchemaError(f"unknown named type {node!r}")
                node = side.names[node]
            elif isinstance(node, dict) and isinstance(node["type"], (dict, list)):
                node = node["type"]
            elif isinstance(node, dict) and node["type"] not in NAMED and node["type"] in side.names:
                node = side.names[node["type"]]
            else:
                return node

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        reader = self.resolve(reader, self.reader)
        writer = self.resolve(writer, self.writer)
        r_type, w_type = _type_of(reader), _type_of(writer)

        if w_type == "union":
            # Every branch the writer may have used must be readable.
            problems: list[str] = []
            for i, branch in enumerate(writer):
                problems += self.check(reader, branch, f"{path}/{i}")
            return problems
        if r_type == "union":
            for branch in reader:
                if not self.check(branch, writer, path):
                    return []
            return [f"{path}: reader union {self._describe(reader)} has no branch for writer type {w_type}"]

        if r_type != w_type:
            if w_type in PROMOTIONS and r_type in PROMOTIONS[w_type]:
                return []
            return [f"{path}: type mismatch, reader expects {r_type} but writer has {w_type}"]

        if r_type in PRIMITIVES:
            return []
        if r_type == "array":
            return self.check(reader["items"], writer["items"], f"{path}/items")
        if r_type == "map":
            return self.check(reader["values"], writer["values"], f"{path}/values")

        # Named types: names must agree (or the reader lists the writer's name as an alias).
        if not self._names_match(reader, writer):
            return [f"{path}: name mismatch, reader {reader['name']!r} vs writer {writer['name']!r}"]
        pair = (reader["name"], writer["name"])
        if pair in self.in_progress:
            return []  # recursive reference: assume compatible, the outer check decides
        self.in_progress.add(pair)
        try:
            if r_type == "fixed":
                if reader["size"] != writer["size"]:
                    return [
                        f"{path}: fixed size mismatch, reader {reader['size']} vs writer {writer['size']}"
                    ]
                return []
            if r_type == "enum":
                return self._check_enum(reader, writer, path)
            return self._check_record(reader, writer, path)
        finally:
            self.in_progress.discard(pair)

    @staticmethod
    def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        r_name, w_name = reader["name"], writer["name"]
        if _short(r_name) == _short(w_name):
            return True
        aliases = reader.get("aliases") or []
        return w_name in aliases or _short(w_name) in aliases

    @staticmethod
    def _check_enum(reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        if "default" in reader:
            return []  # unknown writer symbols resolve to the reader's default
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing:
            return [f"{path}: reader enum {reader['name']!r} lacks writer symbols {missing}"]
        return []

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        problems: list[str] = []
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for i, r_field in enumerate(reader["fields"]):
            names = [r_field["name"], *(r_field.get("aliases") or [])]
            w_field = next((writer_fields[n] for n in names if n in writer_fields), None)
            field_path = f"{path}/fields/{i}"
            if w_field is None:
                if "default" not in r_field:
                    problems.append(
                        f"{field_path}: reader field {r_field['name']!r} of {reader['name']!r} "
                        "is missing from the writer and has no default"
                    )
                continue
            problems += self.check(r_field["type"], w_field["type"], f"{field_path}/type")
        return problems

    @staticmethod
    def _describe(union: list[Any]) -> str:
        return "[" + ", ".join(_type_of(b) if not isinstance(b, str) else b for b in union) + "]"


def check(reader: SchemaLike | ParsedSchema, writer: SchemaLike | ParsedSchema) -> list[str]:
    """Problems that stop ``reader`` from reading data written with ``writer``; empty when compatible."""
    r, w = parse(reader), parse(writer)
    return _Checker(r, w).check(r.root, w.root, "")


def is_compatible(
    new: SchemaLike | ParsedSchema, existing: Sequence[SchemaLike | ParsedSchema], level: str
) -> tuple[bool, list[str]]:
    """Apply a Confluent compatibility level; ``existing`` is the subject's history, oldest first."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; one of {', '.join(LEVELS)}")
    if level == "NONE" or not existing:
        return True, []
    candidate = parse(new)
    transitive = level.endswith("_TRANSITIVE")
    base = level.removesuffix("_TRANSITIVE")
    targets = list(enumerate(existing))
    if not transitive:
        targets = targets[-1:]
    messages: list[str] = []
    for index, old_raw in reversed(targets):
        old = parse(old_raw)
        label = f"existing schema #{index + 1} of {len(existing)}"
        if base in ("BACKWARD", "FULL"):
            messages += [f"{label} (new schema reading old data): {p}" for p in check(candidate, old)]
        if base in ("FORWARD", "FULL"):
            messages += [f"{label} (old schema reading new data): {p}" for p in check(old, candidate)]
    return not messages, messages
