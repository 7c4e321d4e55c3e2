"""The audit trail: security-relevant actions as ``AuditEntry`` records on ``its.audit.v1``.

Every entry is written by an idempotent producer (``acks=all``) and flushed, and the call returns only
once the broker confirmed delivery: an action whose audit entry could not be stored raises
:class:`AuditError`, so a caller never reports success for something the trail does not show.
The ClickHouse sink copies the topic into the append-only ``audit`` table (migration 0003).

Use :func:`audit` for one-off actions (the CLI) and :class:`Auditor` in long-running processes
(one producer for many entries)::

    audit(settings, current_actor(settings), "alert.ack", alert_id, "ok", note="crew dispatched")
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Producer

from schemas import records as r
from schemas import topics as t
from schemas.serde import TopicSerde

if TYPE_CHECKING:
    from its.settings import Settings

log = logging.getLogger(__name__)

OK, REFUSED, ERROR = "ok", "refused", "error"
OUTCOMES = (OK, REFUSED, ERROR)


class AuditError(RuntimeError):
    """An audit entry was not confirmed by the broker."""


def current_actor(settings: Settings | None = None) -> str:
    """Who acts: the Kafka principal when the client authenticates (SASL), else ``os-user@host``."""
    if settings is not None:
        user = settings.kafka_config().get("sasl.username")
        if user:
            return f"User:{user}"
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        who = "unknown"
    return f"{who}@{socket.gethostname()}"


def entry(
    actor: str,
    action: str,
    target: str,
    outcome: str,
    reason: str = "",
    *,
    component: str = "cli",
    ts_ms: int | None = None,
    **details: object,
) -> r.AuditEntry:
    """A typed audit record; ``details`` values are stored as strings (the contract's map<string>)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    return r.AuditEntry(
        audit_id=str(uuid.uuid4()),
        ts_ms=ts_ms if ts_ms is not None else time.time_ns() // 1_000_000,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        reason=reason,
        details={k: str(v) for k, v in details.items() if v is not None},
        component=component,
    )


class Auditor:
    """One idempotent producer for many audit entries; each :meth:`record` waits for its delivery."""

    def __init__(
        self, settings: Settings, *, topic: str = t.AUDIT, component: str = "cli", timeout_s: float = 15.0
    ) -> None:
        self.topic = topic
        self.component = component
        self.timeout_s = timeout_s
        self.serde = TopicSerde(settings.schema_registry_url)
        self.producer: Producer | None = Producer(
            settings.kafka_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    # Fail within the caller's patience rather than librdkafka's 5-minute default.
                    "message.timeout.ms": int(timeout_s * 1000),
                }
            )
        )

    def record(
        self, actor: str, action: str, target: str, outcome: str, reason: str = "", **details: object
    ) -> r.AuditEntry:
        """Publish one entry (key = actor, as the contract says) and wait until the broker has it."""
        rec = entry(actor, action, target, outcome, reason, component=self.component, **details)
        return self.publish(rec)

    def publish(self, rec: r.AuditEntry) -> r.AuditEntry:
        """Publish a ready-made entry and wait for the broker's acknowledgement."""
        errors: list[KafkaError] = []
        delivered: list[bool] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                delivered.append(True)

        # The topic name comes from the catalogue even when an override is used (same contract).
        value = self.serde.serializer(t.AUDIT)(rec)
        if self.producer is None:
            raise AuditError("the auditor is closed")
        self.producer.produce(self.topic, value=value, key=rec.actor.encode(), on_delivery=on_delivery)
        left = self.producer.flush(self.timeout_s)
        if errors or left or not delivered:
            why = errors[0].str() if errors else f"not confirmed within {self.timeout_s:g} s"
            raise AuditError(f"audit entry {rec.action} on {rec.target!r} was not stored: {why}")
        log.info(
            "audited",
            extra={"action": rec.action, "target": rec.target, "outcome": rec.outcome, "actor": rec.actor},
        )
        return rec

    def close(self) -> None:
        """Flush and let go of the producer (its threads end when the last reference goes)."""
        if self.producer is not None:
            self.producer.flush(self.timeout_s)
            self.producer = None


def audit(
    settings: Settings,
    actor: str | None,
    action: str,
    target: str,
    outcome: str,
    reason: str = "",
    *,
    component: str = "cli",
    **details: object,
) -> r.AuditEntry:
    """Publish one audit entry and wait for the broker to confirm it (raises :class:`AuditError`).

    ``actor`` None means :func:`current_actor`. ``action`` is a dotted verb (``camera.register``,
    ``model.promote``, ``alert.ack``, ``privacy.erase``), ``outcome`` one of ok, refused, error.
    """
    auditor = Auditor(settings, component=component)
    try:
        return auditor.record(actor or current_actor(settings), action, target, outcome, reason, **details)
    finally:
        auditor.close()
