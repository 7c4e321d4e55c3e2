"""Fault test: the broker is stopped for 20 s in the middle of a run and restarted on the same ports.

Afterwards the topic holds every frame the producer accepted, in order, with no duplicates: the
sequence numbers on its.frames.v1 are exactly 0..N-1 where N is what the producer accepted. A broker of
its own (free ports, own data dir) keeps the session broker out of it.
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid

import pytest

from infra.kafka import LocalKafka
from infra.topics import ensure_topics
from its.settings import Settings
from schemas.topics import FRAMES, HEALTH
from tests.edge_helpers import CLIP, REPO, edge_env, finish, read_camera, start_edge

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def own_broker(tmp_path_factory):
    broker = LocalKafka(
        tmp_path_factory.mktemp("outage-kafka"),
        REPO / ".cache",
        Settings().kafka_version,
        _free_port(),
        _free_port(),
    )
    try:
        broker.start(timeout=180)
        ensure_topics({"bootstrap.servers": broker.bootstrap})
        yield broker
    finally:
        broker.stop(timeout=20)


def test_broker_outage_spools_and_replays_in_order(own_broker, schema_registry, tmp_path) -> None:
    cam = f"cam-outage-{uuid.uuid4().hex[:8]}"
    env = edge_env(
        own_broker.bootstrap,
        schema_registry,
        tmp_path,
        ITS_EDGE__SPOOL_AFTER_S="2",
        ITS_EDGE__FLUSH_TIMEOUT_S="60",
        ITS_EDGE__HEALTH_INTERVAL_S="2",
    )
    # Paced at the clip's own rate (a live camera), looped; 45 s of capture with a 20 s outage inside.
    proc = start_edge(
        ["--camera-id", cam, "--source", str(CLIP), "--loop", "--mode", "cloud", "--duration", "45"], env
    )
    try:
        time.sleep(10)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        own_broker.stop(timeout=30)
        down_at = time.monotonic()
        time.sleep(20)
        assert proc.poll() is None, "the producer must keep capturing while the broker is down"
        own_broker.start(timeout=180)
        up_after = time.monotonic() - down_at
        code, summary, err = finish(proc, timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, err[-3000:]
    pub, s = summary["publisher"], summary["cameras"][0]
    assert up_after >= 20
    assert pub["outages"] >= 1 and pub["spooled"] > 50 and pub["replayed"] >= pub["spooled"]
    assert pub["dropped"] == {} and pub["left_in_spool_bytes"] == 0 and pub["delivery_failed"] == 0
    assert s["dropped"] == 0 and s["skipped_blur"] == 0

    frames = read_camera(own_broker.bootstrap, schema_registry, FRAMES, cam)
    seqs = [f.frame_seq for f in frames]
    assert len(seqs) == len(set(seqs)), "no duplicates"
    assert seqs == list(range(s["published"])), "every accepted frame, in order"
    ts = [f.capture_ts_ms for f in frames]
    assert all(b > a for a, b in itertools.pairwise(ts))
    # ~10 fps for the ~45 s run: the outage did not stop capture.
    assert len(frames) >= 300
    beats = read_camera(own_broker.bootstrap, schema_registry, HEALTH, cam)
    assert any(b.spool_bytes > 0 for b in beats), "heartbeats written during the outage report the spool"
