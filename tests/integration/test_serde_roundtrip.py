"""Every contract survives produce -> Kafka -> consume through the registry, byte for byte."""

from __future__ import annotations

import io
import json
import struct
import uuid

import fastavro
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from infra.topics import ensure_topics
from schemas import codec, contracts, examples
from schemas import records as r
from schemas.errors import RecordDecodeError
from schemas.serde import AvroDeserializer, TopicSerde, key_bytes
from schemas.topics import BY_NAME, DETECTIONS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bootstrap(kafka_broker) -> str:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    return kafka_broker.bootstrap


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    """Produce one record idempotently and return (partition, offset) from the delivery report."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    delivered: list = []
    producer.produce(topic, value=value, key=key, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(15)
    err, msg = delivered[0]
    assert err is None, err
    return msg.partition(), msg.offset()


def _consume_at(bootstrap: str, topic: str, partition: int, offset: int):
    from confluent_kafka import TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                return msg
        raise AssertionError(f"nothing consumed from {topic}[{partition}]@{offset}")
    finally:
        consumer.close()


@pytest.mark.parametrize("topic", list(BY_NAME))
def test_record_round_trips_byte_exact(bootstrap, schema_registry, topic) -> None:
    serde = TopicSerde(schema_registry)
    record = examples.example_records()[topic]
    value = serde.encode(topic, record)
    key = key_bytes(getattr(record, "camera_id", None) or "cam-0001")

    partition, offset = _produce(bootstrap, topic, key, value)
    msg = _consume_at(bootstrap, topic, partition, offset)

    assert msg.value() == value and msg.key() == key
    magic, schema_id = struct.unpack(">bI", msg.value()[:5])
    registered = SchemaRegistryClient({"url": schema_registry}).get_latest_version(
        BY_NAME[topic].value_subject
    )
    assert (magic, schema_id) == (0, registered.schema_id)
    decoded = TopicSerde(schema_registry).decode(
        msg
    )  # a fresh serde: the id is resolved through the registry
    assert decoded == record and type(decoded) is type(record)


def test_malformed_record_raises_typed_error_naming_the_record(bootstrap, schema_registry) -> None:
    partition, offset = _produce(bootstrap, DETECTIONS, b"cam-bad", b"not avro at all")
    msg = _consume_at(bootstrap, DETECTIONS, partition, offset)
    with pytest.raises(RecordDecodeError) as info:
        TopicSerde(schema_registry).decode(msg)
    assert (info.value.topic, info.value.partition, info.value.offset) == (DETECTIONS, partition, offset)
    assert f"{DETECTIONS}[{partition}]@{offset}" in str(info.value)


def test_truncated_body_and_unknown_schema_id_are_typed_errors(schema_registry) -> None:
    serde = TopicSerde(schema_registry)
    good = serde.encode(DETECTIONS, examples.example_records()[DETECTIONS])
    with pytest.raises(RecordDecodeError, match="invalid Avro body"):
        serde.deserializer(DETECTIONS)(good[:-7], DETECTIONS, 0, 5)
    with pytest.raises(RecordDecodeError, match="trailing bytes"):
        serde.deserializer(DETECTIONS)(good + b"\x00\x01", DETECTIONS, 0, 6)
    with pytest.raises(RecordDecodeError, match="unknown schema id 987654"):
        serde.deserializer(DETECTIONS)(b"\x00" + struct.pack(">I", 987654) + good[5:], DETECTIONS, 0, 7)


def test_record_written_with_an_older_schema_version_is_resolved(schema_registry) -> None:
    """A producer still on an older contract (without a later defaulted field) stays readable."""
    client = SchemaRegistryClient({"url": schema_registry})
    old = contracts.schema("its.Detections")
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("processed_ts_ms", "inference_ms")]
    subject = f"evolution-{uuid.uuid4().hex[:8]}-value"
    old_id = client.register_schema(subject, Schema(json.dumps(old), "AVRO"))
    new_id = client.register_schema(subject, Schema(contracts.schema_str("its.Detections"), "AVRO"))
    assert old_id != new_id

    record = examples.example_records()[DETECTIONS]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(old), codec.to_avro(record))
    decoded = AvroDeserializer(client, r.Detections)(b"\x00" + struct.pack(">I", old_id) + body.getvalue())
    assert decoded.processed_ts_ms == 0 and decoded.inference_ms == 0.0  # the reader's defaults
    assert decoded.boxes == record.boxes and decoded.frame_ref == record.frame_ref
