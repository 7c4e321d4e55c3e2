"""The typed records match the Avro contracts field by field, and every topic has a contract."""

from __future__ import annotations

import dataclasses
import io
import typing
from enum import Enum
from typing import Any

import fastavro
import pytest

from schemas import codec, contracts, examples, records
from schemas.topics import BY_NAME, CATALOGUE

pytestmark = pytest.mark.unit

AVRO_TO_PY = {
    "string": str,
    "long": int,
    "int": int,
    "float": float,
    "double": float,
    "boolean": bool,
    "bytes": bytes,
}


def _check_type(avro: Any, hint: Any, where: str) -> None:
    origin = typing.get_origin(hint)
    if isinstance(avro, list):  # union: only [null, X] is used
        assert avro[0] == "null" and len(avro) == 2, f"{where}: unions must be [null, X]"
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert type(None) in typing.get_args(hint) and len(args) == 1, f"{where}: must be Optional, is {hint}"
        _check_type(avro[1], args[0], where)
    elif isinstance(avro, str) and avro not in AVRO_TO_PY:  # a named type defined earlier in the schema
        _check_type(contracts.named_type(avro), hint, where)
    elif isinstance(avro, str):
        assert hint is AVRO_TO_PY[avro], f"{where}: {avro} maps to {AVRO_TO_PY[avro]}, record says {hint}"
    elif avro["type"] == "array":
        assert origin is list, f"{where}: array must be list[...]"
        _check_type(avro["items"], typing.get_args(hint)[0], where + "[]")
    elif avro["type"] == "map":
        assert origin is dict, f"{where}: map must be dict[str, ...]"
        _check_type(avro["values"], typing.get_args(hint)[1], where + "{}")
    elif avro["type"] == "enum":
        assert issubclass(hint, Enum), f"{where}: enum must be an Enum"
        assert [m.value for m in hint] == avro["symbols"], f"{where}: enum symbols differ"
    elif avro["type"] == "record":
        _check_record(avro, hint)
    else:
        _check_type(avro["type"], hint, where)


def _check_record(avro: dict[str, Any], cls: type) -> None:
    assert dataclasses.is_dataclass(cls), f"{cls} is not a dataclass"
    assert cls.__name__ == avro["name"], f"record {avro['name']} is modelled by {cls.__name__}"
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == {f["name"] for f in avro["fields"]}, f"{cls.__name__}: field names differ"
    for af in avro["fields"]:
        name, field = af["name"], fields[af["name"]]
        has_default = (
            field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        )
        assert has_default == ("default" in af), f"{cls.__name__}.{name}: default presence differs"
        if field.default is not dataclasses.MISSING:
            assert field.default == af["default"], f"{cls.__name__}.{name}: default differs"
        _check_type(af["type"], hints[name], f"{cls.__name__}.{name}")


@pytest.mark.parametrize("name", contracts.record_names())
def test_record_matches_contract(name: str) -> None:
    _check_record(contracts.schema(name), records.RECORD_TYPES[name])


def test_every_topic_has_a_contract_and_every_contract_a_topic() -> None:
    assert {t.record for t in CATALOGUE} == set(contracts.record_names()) == set(records.RECORD_TYPES)


def test_unknown_named_type_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no Avro contract named"):
        contracts.schema("its.Nope")


@pytest.mark.parametrize("topic", list(BY_NAME))
def test_example_round_trips_through_fastavro(topic: str) -> None:
    record = examples.example_records()[topic]
    parsed = contracts.parsed(record.AVRO_NAME)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, codec.to_avro(record))
    buf.seek(0)
    back = codec.from_avro(type(record), fastavro.schemaless_reader(buf, parsed, None))
    assert back == record
    assert type(back) is type(record)


def test_enums_come_back_typed() -> None:
    ev = examples.example_records()["its.events.v1"]
    parsed = contracts.parsed(ev.AVRO_NAME)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, codec.to_avro(ev))
    buf.seek(0)
    back = codec.from_avro(records.Event, fastavro.schemaless_reader(buf, parsed, None))
    assert back.event_type is records.EventType.RED_LIGHT
    assert isinstance(back.evidence, records.Evidence) and isinstance(
        back.evidence.frame_ref, records.FrameRef
    )
