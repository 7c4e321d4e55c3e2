"""``its sink webhook``: every alert on ``its.alerts.v1`` POSTed as signed JSON to an integrator's URL.

Body: the alert as JSON (the Avro record's fields, enums as their names), UTF-8, keys sorted.
Headers: ``X-ITS-Signature: sha256=<hex HMAC-SHA256 of the body with the shared secret>``,
``X-ITS-Alert-Id`` (deterministic: a receiver drops repeats by it) and ``X-ITS-Attempt``.

Delivery: up to 3 attempts with exponential backoff (``backoff_s``, doubled each time) on connection
errors, timeouts, 429 and 5xx; a 4xx other than 429 is permanent. An alert that cannot be delivered goes
to ``its.dlq.v1`` with the reason and the body, so nothing is dropped silently. Offsets are committed
after an alert is delivered or dead-lettered: at-least-once towards the receiver, deduplicated by id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass

import httpx
from confluent_kafka import Consumer, KafkaError, Producer
from prometheus_client import Counter, Histogram

from its.service import Service
from its.settings import Settings
from schemas.codec import to_avro
from schemas.records import Alert, DeadLetter
from schemas.serde import TopicSerde
from schemas.topics import ALERTS, DLQ

log = logging.getLogger(__name__)
COMPONENT = "webhook-sink"
SIGNATURE_HEADER = "X-ITS-Signature"
METRICS_PORT = 9105

DELIVERIES = Counter("its_webhook_deliveries_total", "Alerts handled, by outcome", ["outcome"])
DELIVERY_SECONDS = Histogram(
    "its_webhook_delivery_seconds",
    "POST time per alert, retries included",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
)


def alert_body(alert: Alert) -> bytes:
    return json.dumps(to_avro(alert), sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    """The signature header's value; receivers recompute it and compare with ``hmac.compare_digest``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Delivery:
    ok: bool
    attempts: int
    reason: str = ""
    status: int | None = None


def deliver(
    client: httpx.Client,
    url: str,
    secret: str,
    alert: Alert,
    *,
    attempts: int = 3,
    backoff_s: float = 0.5,
    sleep=time.sleep,
) -> Delivery:
    """POST one alert, retrying transient failures with exponential backoff."""
    body = alert_body(alert)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        "X-ITS-Alert-Id": alert.alert_id,
    }
    reason, status = "", None
    for attempt in range(1, attempts + 1):
        try:
            resp = client.post(url, content=body, headers={**headers, "X-ITS-Attempt": str(attempt)})
            status = resp.status_code
            if 200 <= status < 300:
                return Delivery(True, attempt, status=status)
            reason = f"HTTP {status}: {resp.text[:200]}"
            if 400 <= status < 500 and status != 429:
                return Delivery(False, attempt, f"permanent failure, {reason}", status)
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            sleep(backoff_s * 2 ** (attempt - 1))
    return Delivery(False, attempts, f"gave up after {attempts} attempts, last: {reason}", status)


class WebhookSink:
    """Consume alerts, deliver each, dead-letter failures, commit."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        secret: str,
        *,
        group_id: str = "its-webhook-sink",
        attempts: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
    ) -> None:
        self.settings, self.url, self.secret = settings, url, secret
        self.attempts, self.backoff_s = attempts, backoff_s
        self.serde = TopicSerde(settings.schema_registry_url)
        self.client = httpx.Client(timeout=timeout_s)
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                }
            )
        )
        self.producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
        self._stop = threading.Event()
        self.delivered = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_idle_s: float | None = None, metrics_port: int = METRICS_PORT) -> None:
        """Until stopped (SIGTERM/SIGINT in the main thread), or ``max_idle_s`` without a record.

        Serves ``/metrics`` and ``/healthz`` on ``metrics_port`` (0: any free port) meanwhile.
        """
        health = lambda: (True, {"delivered": self.delivered, "dead_lettered": self.dead_lettered})  # noqa: E731
        with Service(COMPONENT, port=metrics_port, health=health) as svc:
            self._consume(svc, max_idle_s)

    def _consume(self, svc: Service, max_idle_s: float | None) -> None:
        self.consumer.subscribe([ALERTS])
        idle_since = time.monotonic()
        try:
            while not (self._stop.is_set() or svc.stopping):
                msg = self.consumer.poll(0.5)
                if msg is None:
                    if max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                        break
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error", extra={"error": str(msg.error())})
                    continue
                idle_since = time.monotonic()
                self._handle(msg)
                self.consumer.commit(message=msg, asynchronous=False)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            self.client.close()

    def _handle(self, msg) -> None:
        try:
            alert = self.serde.decode(msg)
        except Exception as exc:
            DELIVERIES.labels("undecodable").inc()
            self._dead_letter(msg, f"undecodable alert: {exc}", type(exc).__name__, msg.value())
            return
        with DELIVERY_SECONDS.time():
            result = deliver(
                self.client, self.url, self.secret, alert, attempts=self.attempts, backoff_s=self.backoff_s
            )
        DELIVERIES.labels("delivered" if result.ok else "dead_lettered").inc()
        if result.ok:
            self.delivered += 1
            return
        log.warning("webhook delivery failed", extra={"alert_id": alert.alert_id, "reason": result.reason})
        self._dead_letter(
            msg, f"webhook {self.url}: {result.reason}", "WebhookDeliveryFailed", alert_body(alert)
        )

    def _dead_letter(self, msg, reason: str, error_type: str, payload: bytes | None) -> None:
        record = DeadLetter(
            source_topic=msg.topic() or ALERTS,
            source_partition=msg.partition() or 0,
            source_offset=msg.offset() or 0,
            reason=reason[:2000],
            error_type=error_type,
            component=COMPONENT,
            ts_ms=int(time.time() * 1000),
            key=msg.key(),
            payload=payload,
        )
        self.producer.produce(DLQ, key=msg.key(), value=self.serde.encode(DLQ, record))
        # The dead letter must be durable before the offset moves past the alert.
        if self.producer.flush(30) != 0:
            raise RuntimeError("dead letter not acknowledged by the broker")
        self.dead_lettered += 1
