"""The publisher stopped while the broker is unreachable keeps every record, in order, on disk, and the
next run sends them before anything new: nothing lost, nothing twice."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from producers.publisher import OutRecord, Publisher

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_all(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    consumer.assign([TopicPartition(topic, 0, -2)])
    out: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg.value())
        while (msg := consumer.poll(1.0)) is not None:  # anything extra would be a duplicate
            if not msg.error():
                out.append(msg.value())
        return out
    finally:
        consumer.close()


@pytest.fixture(params=["refused", "silent"])
def dead_bootstrap(request):
    """A broker address that refuses connections, or one that accepts them and never answers (the
    records then sit in librdkafka, are purged at shutdown and must go back to the spool's head)."""
    if request.param == "refused":
        yield "refused", f"127.0.0.1:{_closed_port()}"
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
        yield "silent", f"127.0.0.1:{sock.getsockname()[1]}"


def test_shutdown_during_outage_keeps_order_for_the_next_run(kafka_broker, dead_bootstrap, tmp_path) -> None:
    kind, address = dead_bootstrap
    topic = f"t-edge-pub-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    spool = tmp_path / "spool"

    def rec(i: int) -> OutRecord:
        return OutRecord(topic, b"cam-1", f"r{i:03d}".encode(), "cam-1", droppable=False, seq=i)

    down = Publisher({"bootstrap.servers": address}, spool, spool_after_s=1.0).start()
    for i in range(5):
        down.submit(rec(i))
    time.sleep(2.5)  # long enough to declare the broker unreachable
    assert down.spooling
    for i in range(5, 10):
        down.submit(rec(i))
    time.sleep(0.3)
    summary = down.close(timeout=1.0)
    assert summary["delivered"] == 0 and summary["left_in_spool_bytes"] > 0
    # Live records librdkafka held were purged back to the head of the spool; the rest was spooled.
    assert summary["purged_to_spool"] + summary["spooled"] == 10
    if kind == "silent":
        assert summary["purged_to_spool"] == 5 and summary["spooled"] == 5

    up = Publisher({"bootstrap.servers": kafka_broker.bootstrap}, spool).start()
    for i in range(10, 15):
        up.submit(rec(i))
    summary = up.close(timeout=30)
    assert summary["left_in_spool_bytes"] == 0 and summary["delivery_failed"] == 0
    values = _read_all(kafka_broker.bootstrap, topic, 15)
    assert values == [f"r{i:03d}".encode() for i in range(15)], "all, in order, once"
