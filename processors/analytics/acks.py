"""Operator acknowledgements of alerts: build and publish ``AlertAck`` records on its.alert-acks.v1.

The analytics processor consumes that topic beside the detections (same key, same partition count,
so one camera's acks reach the instance that owns its incidents) and stops escalating an
acknowledged incident. The CLI (``its alerts ack``) and the web console both publish through
``publish_ack``.

Alert ids are ``<incident_id>:<revision>`` and incident ids ``<camera_id>:<EVENT_TYPE>:<first_ts_ms>``
(processors/analytics/alerts.py), so an alert id alone names the incident and the camera.
"""

from __future__ import annotations

import hashlib
import time

from confluent_kafka import Producer

from its.audit import AuditError, audit
from its.settings import Settings
from schemas.records import Alert, AlertAck
from schemas.serde import TopicSerde, key_bytes
from schemas.topics import ALERT_ACKS


class AckError(ValueError):
    """The alert id cannot be acknowledged (malformed) or the ack could not be published."""


def parse_alert_id(alert_id: str) -> tuple[str, str]:
    """``(incident_id, camera_id)`` of an alert id; ``AckError`` when it has not the processor's shape."""
    parts = alert_id.rsplit(":", 3)
    if len(parts) != 4 or not all(parts) or not parts[1].isupper():
        raise AckError(f"{alert_id!r} is not an alert id (<camera_id>:<EVENT_TYPE>:<first_ts_ms>:<revision>)")
    camera_id, event_type, first_ts, revision = parts
    if not (first_ts.lstrip("-").isdigit() and revision.isdigit()):
        raise AckError(f"{alert_id!r}: first_ts_ms and revision must be integers")
    return f"{camera_id}:{event_type}:{first_ts}", camera_id


def make_ack(
    alert: Alert | str, by: str, note: str = "", *, source: str = "console", ts_ms: int | None = None
) -> AlertAck:
    """The ``AlertAck`` for an alert (a record, or just its id); ``ack_id`` is a digest of what it says."""
    if not by.strip():
        raise AckError("an acknowledgement needs the operator's name (by)")
    if isinstance(alert, Alert):
        alert_id, incident_id, camera_id = alert.alert_id, alert.incident_id, alert.camera_id
    else:
        alert_id = alert
        incident_id, camera_id = parse_alert_id(alert_id)
    ts = int(time.time() * 1000) if ts_ms is None else int(ts_ms)
    # Deterministic from its content, so a retried publish of the same ack carries the same id.
    digest = hashlib.sha1(f"{alert_id}\0{by}\0{ts}".encode()).hexdigest()[:16]
    return AlertAck(
        ack_id=f"ack-{digest}",
        alert_id=alert_id,
        incident_id=incident_id,
        camera_id=camera_id,
        acknowledged_by=by,
        ts_ms=ts,
        note=note,
        source=source,
    )


def publish_ack(
    settings: Settings,
    alert: Alert | str,
    by: str,
    note: str = "",
    *,
    source: str = "console",
    ts_ms: int | None = None,
    timeout_s: float = 15.0,
) -> AlertAck:
    """Publish one acknowledgement (idempotent producer, acks=all) and return it once the broker has it."""
    ack = make_ack(alert, by, note, source=source, ts_ms=ts_ms)
    serde = TopicSerde(settings.schema_registry_url)
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(
        ALERT_ACKS, key=key_bytes(ack.camera_id), value=serde.encode(ALERT_ACKS, ack), on_delivery=delivered
    )
    left = producer.flush(timeout_s)
    if left or errors:
        raise AckError(f"ack {ack.ack_id} not delivered: {errors[0] if errors else 'timed out'}")
    try:
        audit(settings, by, "alert.ack", ack.alert_id, "ok", component=source, ack_id=ack.ack_id, note=note)
    except AuditError as exc:
        # The ack stands (escalation stops); the caller learns that the trail does not show it.
        raise AckError(f"ack {ack.ack_id} delivered but not audited: {exc}") from exc
    return ack
