"""Wire-format checks that need no registry: framing errors are typed and name the record."""

from __future__ import annotations

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas.errors import RecordDecodeError
from schemas.records import Detections
from schemas.serde import AvroDeserializer

pytestmark = pytest.mark.unit


@pytest.fixture
def deserializer() -> AvroDeserializer[Detections]:
    # A client for an address nothing listens on: framing errors must be caught before any lookup.
    return AvroDeserializer(SchemaRegistryClient({"url": "http://127.0.0.1:9"}), Detections)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "empty value"),
        (b"", "empty value"),
        (b"\x00\x00\x01", "shorter than the 5-byte wire header"),
        (b"\x07\x00\x00\x00\x01abc", "magic byte 7"),
    ],
)
def test_framing_errors_name_topic_partition_offset(deserializer, payload, reason) -> None:
    with pytest.raises(RecordDecodeError) as info:
        deserializer(payload, "its.detections.v1", 4, 1234)
    err = info.value
    assert (err.topic, err.partition, err.offset) == ("its.detections.v1", 4, 1234)
    assert reason in str(err)
    assert "its.detections.v1[4]@1234" in str(err)
