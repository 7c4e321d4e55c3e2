"""The webhook sink against a local HTTP server on 127.0.0.1: signed JSON, retries with backoff,
dead-letter after the last attempt. The first test needs no broker; the second runs the whole sink."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from connectors.webhook import WebhookSink, deliver, sign
from its.settings import Settings
from schemas.examples import example_records
from schemas.serde import TopicSerde
from schemas.topics import ALERTS, DLQ
from tests.integration import inference_support as s

SECRET = "s3cret"


class Receiver:
    """An integrator's endpoint: verifies the signature, fails on demand, records what it accepted."""

    def __init__(self, fail: dict[str, int]) -> None:
        self.fail = dict(fail)  # alert_id -> number of 503s before success (large: always)
        self.accepted: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.bad_signatures = 0
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, self.headers.get("X-ITS-Signature", "")):
                    recv.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                doc = json.loads(body)
                aid = doc["alert_id"]
                recv.attempts[aid] = recv.attempts.get(aid, 0) + 1
                if recv.fail.get(aid, 0) > 0:
                    recv.fail[aid] -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                recv.accepted.append(doc)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _alert(n: int, prefix: str = "cam"):
    a = example_records()[ALERTS]
    return dataclasses.replace(a, alert_id=f"{prefix}:{n}", camera_id=f"{prefix}-0")


@pytest.mark.unit
def test_signed_json_retries_with_backoff_then_gives_up() -> None:
    sleeps: list[float] = []
    with Receiver({"cam:1": 2, "cam:2": 99}) as rx, httpx.Client(timeout=5) as client:
        ok = deliver(client, rx.url, SECRET, _alert(1), sleep=sleeps.append)
        assert ok.ok and ok.attempts == 3 and sleeps == [0.5, 1.0]
        sleeps.clear()
        bad = deliver(client, rx.url, SECRET, _alert(2), sleep=sleeps.append)
        assert not bad.ok and bad.attempts == 3 and "503" in bad.reason and sleeps == [0.5, 1.0]
        wrong = deliver(client, rx.url, "not-the-secret", _alert(3), sleep=sleeps.append)
        assert not wrong.ok and wrong.attempts == 1 and "permanent" in wrong.reason  # 401: no retry
    assert rx.bad_signatures == 1
    assert [d["alert_id"] for d in rx.accepted] == ["cam:1"]
    doc = rx.accepted[0]
    assert doc["severity"] == "HIGH" and doc["alert_type"] == "RED_LIGHT" and doc["evidence"]["frame_ref"]
    assert sign(SECRET, b"x").startswith("sha256=")


@pytest.mark.integration
def test_sink_delivers_and_dead_letters(kafka_broker, schema_registry) -> None:
    bootstrap = kafka_broker.bootstrap
    from infra.topics import ensure_topics

    ensure_topics({"bootstrap.servers": bootstrap})
    serde = TopicSerde(schema_registry)
    prefix = s.camera_prefix()
    alerts = [_alert(i, prefix) for i in range(5)]
    group = f"webhook-{uuid.uuid4().hex[:8]}"
    consumer_start = s.end_offsets(bootstrap, ALERTS)
    dlq_start = s.end_offsets(bootstrap, DLQ)
    # Start the group at the current end, so only this test's alerts are delivered.
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(ALERTS, p, o) for p, o in consumer_start.items()], asynchronous=False)
    c.close()
    s.produce(bootstrap, [(a.camera_id, serde.encode(ALERTS, a)) for a in alerts], topic=ALERTS)
    settings = Settings(kafka_bootstrap=bootstrap, schema_registry_url=schema_registry)
    with Receiver({f"{prefix}:1": 1, f"{prefix}:3": 99}) as rx:
        sink = WebhookSink(settings, rx.url, SECRET, group_id=group, backoff_s=0.05)
        sink.run(max_idle_s=5.0, metrics_port=0)
    assert sorted(d["alert_id"] for d in rx.accepted) == [f"{prefix}:{i}" for i in (0, 1, 2, 4)]
    assert rx.attempts[f"{prefix}:1"] == 2 and rx.attempts[f"{prefix}:3"] == 3
    dead = s.read_committed(
        bootstrap,
        serde,
        DLQ,
        dlq_start,
        lambda d: (d.key or b"").startswith(prefix.encode()),
        want=1,
        timeout=30,
    )
    assert len(dead) == 1 and dead[0].component == "webhook-sink" and "3 attempts" in dead[0].reason
    assert json.loads(dead[0].payload)["alert_id"] == f"{prefix}:3"
    assert sink.delivered == 4 and sink.dead_lettered == 1
