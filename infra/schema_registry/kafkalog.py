"""The registry's durable log: one compacted, single-partition Kafka topic of JSON key/value records."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)

Record = tuple[dict[str, Any], dict[str, Any] | None]


class LogError(RuntimeError):
    """Kafka could not be reached, or a write was not acknowledged."""


def _encode(doc: dict[str, Any] | None) -> bytes | None:
    return None if doc is None else json.dumps(doc, separators=(",", ":")).encode()


class KafkaLog:
    """Reads the topic to its end (``catch_up``) and appends records acknowledged by all replicas."""

    def __init__(self, kafka_config: dict[str, Any], topic: str, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._kafka_config = dict(kafka_config)
        self._partition = TopicPartition(topic, 0)
        self._position = 0  # next offset to read
        self._producer = Producer(
            {
                **self._kafka_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "client.id": "its-schema-registry",
                "logger": log,  # librdkafka's own lines go through the structured log too
            }
        )
        self._consumer = Consumer(
            {
                **self._kafka_config,
                # Only assign() is used: the group id is never joined or committed to.
                "group.id": f"its-schema-registry-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                # Short fetch waits: catching up with another writer should not cost half a second.
                "fetch.wait.max.ms": 50,
                "client.id": "its-schema-registry-reader",
                "logger": log,
            }
        )

    def ensure_topic(self) -> None:
        """Create the topic (compacted, one partition) when missing; refuse one with several partitions."""
        admin = AdminClient(self._kafka_config)
        try:
            metadata = admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise LogError(
                f"Kafka at {self._kafka_config.get('bootstrap.servers')} not reachable: {exc}"
            ) from exc
        existing = metadata.topics.get(self.topic)
        if existing is None or existing.error is not None:
            # One partition keeps a total order of writes; compaction keeps the latest state per key.
            new = NewTopic(
                self.topic, num_partitions=1, replication_factor=-1, config={"cleanup.policy": "compact"}
            )
            futures = admin.create_topics([new], operation_timeout=self.timeout)
            try:
                futures[self.topic].result(timeout=self.timeout)
                log.info("created registry topic", extra={"topic": self.topic})
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise LogError(f"cannot create topic {self.topic}: {exc}") from exc
            self._wait_for_leader()
        elif len(existing.partitions) != 1:
            raise LogError(
                f"topic {self.topic} has {len(existing.partitions)} partitions; the registry needs exactly 1"
            )
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])

    def _wait_for_leader(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            topic = self._producer.list_topics(self.topic, timeout=self.timeout).topics.get(self.topic)
            if topic and topic.error is None and 0 in topic.partitions and topic.partitions[0].leader >= 0:
                return
            time.sleep(0.1)
        raise LogError(f"topic {self.topic} has no leader after {self.timeout}s")

    def end_offset(self) -> int:
        # Right after the topic is created the consumer's metadata can still name no leader
        # (NOT_LEADER_FOR_PARTITION): such errors are retriable and pass within a second or two.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                _, high = self._consumer.get_watermark_offsets(self._partition, timeout=self.timeout)
                return int(high)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = bool(getattr(error, "retriable", lambda: False)()) or "LEADER" in str(exc)
                if not retriable or time.monotonic() > deadline:
                    raise LogError(f"cannot read the end of {self.topic}: {exc}") from exc
                time.sleep(0.2)

    def catch_up(self, apply: Callable[[dict[str, Any], dict[str, Any] | None], None]) -> int:
        """Apply every record up to the current end of the topic; returns how many were applied."""
        end = self.end_offset()
        applied = 0
        deadline = time.monotonic() + self.timeout
        while self._position < end:
            if time.monotonic() > deadline:
                raise LogError(f"reading {self.topic} stalled at offset {self._position} of {end}")
            msg = self._consumer.poll(0.5)
            if msg is None:
                # Compaction leaves offset gaps: trust the consumer's position when nothing comes.
                position = self._consumer.position([self._partition])[0].offset
                if position >= end:
                    self._position = position
                continue
            if msg.error():
                raise LogError(f"reading {self.topic}: {msg.error()}")
            self._position = msg.offset() + 1
            raw_key = msg.key()
            if raw_key is None:
                continue
            try:
                key = json.loads(raw_key)
                raw_value = msg.value()
                value = None if raw_value is None else json.loads(raw_value)
            except json.JSONDecodeError:
                log.warning("skipping a record that is not JSON", extra={"offset": msg.offset()})
                continue
            apply(key, value)
            applied += 1
        return applied

    def append(self, records: list[Record]) -> None:
        """Write records and wait until all replicas have them; raises ``LogError`` otherwise."""
        errors: list[str] = []
        offsets: list[int] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets.append(msg.offset())

        try:
            for key, value in records:
                self._producer.produce(
                    self.topic, key=_encode(key), value=_encode(value), on_delivery=on_delivery
                )
        except (KafkaException, BufferError) as exc:
            raise LogError(f"cannot write to {self.topic}: {exc}") from exc
        remaining = self._producer.flush(self.timeout)
        if remaining or errors:
            raise LogError(f"write to {self.topic} not acknowledged: {errors or f'{remaining} pending'}")
        # The caller applies its own records; skip reading them back unless someone else wrote in between.
        offsets.sort()
        if offsets and offsets[0] == self._position and offsets == list(range(offsets[0], offsets[-1] + 1)):
            self._position = offsets[-1] + 1
            self._consumer.seek(TopicPartition(self.topic, 0, self._position))

    def reachable(self, timeout: float = 2.0) -> bool:
        """True when the broker answers a metadata request for the topic."""
        try:
            topic = self._producer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        except KafkaException:
            return False
        return topic is not None and topic.error is None

    def close(self) -> None:
        self._producer.flush(5)
        self._consumer.close()
