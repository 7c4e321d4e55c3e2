"""Errors of the local Kafka runner: one type the CLI can catch and print without a traceback."""

from __future__ import annotations


class KafkaRuntimeError(RuntimeError):
    """The local broker could not be prepared, started or stopped; the message says what to do."""


class KafkaPrerequisiteError(KafkaRuntimeError):
    """A tool the local broker needs (java, mvn) is missing or too old."""
