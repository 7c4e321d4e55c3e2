"""Avro schema-resolution rules and Confluent compatibility levels on plain schemas."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.compatibility import InvalidSchemaError, check, is_compatible

pytestmark = pytest.mark.unit


def record(*fields: dict[str, Any], name: str = "Alert") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "its", "fields": list(fields)}


ID = {"name": "id", "type": "string"}
SEVERITY = {"name": "severity", "type": "int"}


def test_adding_field_with_default_is_backward_compatible() -> None:
    new = record(ID, {"name": "note", "type": "string", "default": ""})
    assert is_compatible(new, [record(ID)], "BACKWARD") == (True, [])


def test_adding_field_without_default_is_rejected_backward() -> None:
    ok, messages = is_compatible(record(ID, SEVERITY), [record(ID)], "BACKWARD")
    assert not ok
    assert "severity" in messages[0] and "no default" in messages[0]


def test_removing_field_is_backward_compatible_but_not_forward() -> None:
    assert is_compatible(record(ID), [record(ID, SEVERITY)], "BACKWARD") == (True, [])
    ok, _ = is_compatible(record(ID), [record(ID, SEVERITY)], "FORWARD")
    assert not ok


def test_type_change_string_to_int_is_rejected() -> None:
    ok, messages = is_compatible(record({"name": "id", "type": "int"}), [record(ID)], "BACKWARD")
    assert not ok
    assert "reader expects int but writer has string" in messages[0]


@pytest.mark.parametrize(
    ("writer", "reader"),
    [("int", "long"), ("int", "float"), ("int", "double"), ("long", "double"), ("float", "double")],
)
def test_numeric_promotions(writer: str, reader: str) -> None:
    assert check(reader, writer) == []
    assert check(writer, reader) != []  # promotion is one-way


def test_string_and_bytes_promote_both_ways() -> None:
    assert check('"bytes"', '"string"') == []
    assert check('"string"', '"bytes"') == []


def test_int_to_long_field_is_backward_compatible() -> None:
    old = record(SEVERITY)
    new = record({"name": "severity", "type": "long"})
    assert is_compatible(new, [old], "BACKWARD") == (True, [])
    assert not is_compatible(new, [old], "FULL")[0]


def test_enum_symbol_removal_is_rejected() -> None:
    old = record({"name": "level", "type": {"type": "enum", "name": "Level", "symbols": ["LOW", "HIGH"]}})
    new = record({"name": "level", "type": {"type": "enum", "name": "Level", "symbols": ["LOW"]}})
    ok, messages = is_compatible(new, [old], "BACKWARD")
    assert not ok
    assert "HIGH" in messages[0]
    # Adding a symbol is fine for readers; an enum default lets old readers accept new symbols.
    assert is_compatible(old, [new], "BACKWARD")[0]
    with_default = {"type": "enum", "name": "Level", "symbols": ["LOW"], "default": "LOW"}
    assert is_compatible(record({"name": "level", "type": with_default}), [old], "BACKWARD")[0]


def test_union_widening_is_backward_compatible() -> None:
    old = record({"name": "speed", "type": ["null", "int"], "default": None})
    new = record({"name": "speed", "type": ["null", "int", "string"], "default": None})
    assert is_compatible(new, [old], "BACKWARD") == (True, [])
    # Narrowing breaks: the old writer's int branch has no reader branch.
    assert not is_compatible(record({"name": "speed", "type": ["null", "string"]}), [old], "BACKWARD")[0]


def test_plain_writer_into_union_reader() -> None:
    assert check(["null", "long"], "int") == []
    assert check(["null", "string"], "int") != []
    assert check("long", ["int", "long"]) == []
    assert check("int", ["int", "long"]) != []


def test_arrays_maps_and_fixed() -> None:
    assert check({"type": "array", "items": "long"}, {"type": "array", "items": "int"}) == []
    assert check({"type": "map", "values": "int"}, {"type": "map", "values": "string"}) != []
    fixed = {"type": "fixed", "name": "Hash", "size": 16}
    assert check(fixed, fixed) == []
    assert check(fixed, {"type": "fixed", "name": "Hash", "size": 32}) != []
    assert check(fixed, {"type": "fixed", "name": "Other", "size": 16}) != []


def test_field_and_record_aliases() -> None:
    old = record({"name": "cam", "type": "string"})
    new = record({"name": "camera_id", "aliases": ["cam"], "type": "string"}, name="Alert2")
    assert check(new, old) != []  # record name differs and no record alias
    new["aliases"] = ["its.Alert"]
    assert check(new, old) == []


def test_recursive_named_types() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "value", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
    }
    wider = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "value", "type": "long"},
            {"name": "next", "type": ["null", "Node"]},
            {"name": "tag", "type": "string", "default": ""},
        ],
    }
    assert check(wider, node) == []
    assert check(node, wider) != []


def test_named_type_references_resolve() -> None:
    point = {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "int"}]}
    writer = record({"name": "a", "type": point}, {"name": "b", "type": "Point"})
    reader_point = {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "double"}]}
    reader = record({"name": "a", "type": reader_point}, {"name": "b", "type": "Point"})
    assert check(reader, writer) == []
    broken = {"type": "record", "name": "Point", "fields": [{"name": "x", "type": "string"}]}
    problems = check(record({"name": "a", "type": broken}, {"name": "b", "type": "Point"}), writer)
    assert len(problems) == 2  # both the definition and the reference fail


def test_transitive_levels_check_every_version() -> None:
    v1 = record(ID)
    v2 = record(ID, {"name": "note", "type": "string", "default": ""})
    v3 = record(ID, {"name": "note", "type": "string"})  # default dropped: cannot read v1
    assert is_compatible(v3, [v1, v2], "BACKWARD")[0]
    ok, messages = is_compatible(v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert not ok and "#1" in messages[0]


def test_none_level_and_empty_history() -> None:
    assert is_compatible('"string"', ['"int"'], "NONE") == (True, [])
    assert is_compatible('"string"', [], "FULL_TRANSITIVE") == (True, [])


def test_unknown_level_and_invalid_schema() -> None:
    with pytest.raises(ValueError, match="unknown compatibility level"):
        is_compatible('"string"', ['"string"'], "SIDEWAYS")
    with pytest.raises(InvalidSchemaError):
        check("{not json", '"string"')
    with pytest.raises(InvalidSchemaError):
        check({"type": "record", "name": "X", "fields": [{"name": "a", "type": "Nope"}]}, '"string"')
