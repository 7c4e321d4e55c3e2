"""Typed errors at the Kafka boundary: what went wrong, and exactly which record it was."""

from __future__ import annotations


class RecordDecodeError(ValueError):
    """A record on a topic could not be decoded; names topic, partition and offset for the DLQ."""

    def __init__(self, topic: str, partition: int, offset: int, reason: str) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason
        super().__init__(f"cannot decode record at {topic}[{partition}]@{offset}: {reason}")


class RecordEncodeError(ValueError):
    """A record does not fit its Avro contract (wrong type, missing field)."""
