"""`its process analytics` under kill -9: a simulated run is processed by a subprocess that is
SIGKILLed at random moments and restarted; a read_committed consumer then sees exactly the events,
alerts and window statistics of a failure-free run (the same engine in process), with no duplicates.

Engine state (tracks, rule timers, open windows, incidents) lives in the changelog snapshots written
in the same transaction as the outputs, so a restart continues mid-track without re-emitting."""

from __future__ import annotations

import dataclasses
import os
import random
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.topics import ensure_topics
from processors.analytics.engine import Engine, Output
from producers.simulator import simulate
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import ALERTS, BY_NAME, CAMERAS, DETECTIONS, EVENTS, SIGNALS, TRAFFIC_STATS
from tests.integration import inference_support as s
from tests.integration.processor_support import ProcessorUnderTest

pytestmark = pytest.mark.integration

KILLS = 3


def _group_at_end(bootstrap: str, group: str) -> None:
    """The test's processor group starts at the current end of its inputs (topics are session-shared)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [
            TopicPartition(t, p, s.high_watermark(consumer, t, p))
            for t in (CAMERAS, SIGNALS, DETECTIONS)
            for p in range(BY_NAME[t].partitions)
        ]
        consumer.commit(offsets=parts, asynchronous=False)
    finally:
        consumer.close()


def _simulated(prefix: str) -> tuple[list[r.Camera], list[r.Detections]]:
    sim = simulate("highway", seed=3, noise="default", duration_s=150, cameras=2)
    rename = {c.camera_id: f"{prefix}-{i}" for i, c in enumerate(sim.cameras)}
    cams = [dataclasses.replace(c, camera_id=rename[c.camera_id]) for c in sim.cameras]
    dets = []
    for d in sim.detections:
        d.camera_id = rename[d.camera_id]
        d.frame_ref = r.FrameRef("its.frames.v1", 0, d.frame_seq)  # fixed, so both runs agree byte for byte
        dets.append(d)
    return cams, dets


def _reference(cams: list[r.Camera], dets: list[r.Detections]) -> Output:
    eng = Engine()
    for c in cams:
        eng.on_camera(c)
    out = Output()
    for d in dets:  # per camera in partition order, which is all the engine's state depends on
        out.extend(eng.on_detections(d))
    return out


def test_outputs_equal_the_failure_free_run_across_sigkills(
    kafka_broker, schema_registry, kafka_settings, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    ensure_topics({"bootstrap.servers": bootstrap})
    serde = TopicSerde(schema_registry)
    prefix = s.camera_prefix()
    cams, dets = _simulated(prefix)
    want = _reference(cams, dets)
    assert want.events and want.stats and want.alerts

    group = f"analytics-eos-{uuid.uuid4().hex[:8]}"
    _group_at_end(bootstrap, group)
    starts = {t: s.end_offsets(bootstrap, t) for t in (EVENTS, ALERTS, TRAFFIC_STATS)}
    s.produce(bootstrap, [(c.camera_id, serde.encode(CAMERAS, c)) for c in cams], topic=CAMERAS)
    s.produce(bootstrap, [(d.camera_id, serde.encode(DETECTIONS, d)) for d in dets], topic=DETECTIONS)

    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": bootstrap,
        "ITS_SCHEMA_REGISTRY_URL": schema_registry,
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_ANALYTICS__GROUP_ID": group,
        "ITS_ANALYTICS__MAX_BATCH": "100",
        "ITS_ANALYTICS__MAX_WAIT_MS": "50",
        "ITS_LOG_FORMAT": "text",
    }
    runner = ProcessorUnderTest(
        ["process", "analytics"], env, f"eos-{uuid.uuid4().hex[:6]}", tmp_path / "processor.log"
    )
    rng = random.Random()
    for _ in range(KILLS):
        runner.start()
        runner.wait_for_progress()
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere inside a later batch / transaction
        runner.kill()
    runner.start()
    mine = lambda rec: rec.camera_id.startswith(prefix)  # noqa: E731
    try:
        events = s.read_committed(
            bootstrap, serde, EVENTS, starts[EVENTS], mine, want=len(want.events), timeout=300, settle=3.0
        )
        stats = s.read_committed(
            bootstrap,
            serde,
            TRAFFIC_STATS,
            starts[TRAFFIC_STATS],
            mine,
            want=len(want.stats),
            timeout=60,
            settle=2.0,
        )
        alerts = s.read_committed(
            bootstrap, serde, ALERTS, starts[ALERTS], mine, want=len(want.alerts), timeout=60, settle=2.0
        )
    finally:
        code = runner.stop()
    assert code == 0, runner.log_path.read_text()[-3000:]
    log = runner.log_path.read_text()
    assert log.count("stream processor started") == KILLS + 1

    for name, got, ref, key in (
        ("events", events, want.events, lambda e: e.event_id),
        ("stats", stats, want.stats, lambda x: x.stats_id),
        ("alerts", alerts, want.alerts, lambda a: a.alert_id),
    ):
        ids = Counter(key(x) for x in got)
        doubled = {k: n for k, n in ids.items() if n > 1}
        assert not doubled, f"{name}: {len(doubled)} duplicate ids, e.g. {list(doubled)[:3]}"
        assert set(ids) == {key(x) for x in ref}, f"{name}: ids differ from the failure-free run"
        # Compared as encoded Avro: floats on the wire are float32; decoded records differ in the last bits.
        topic = {"events": EVENTS, "stats": TRAFFIC_STATS, "alerts": ALERTS}[name]
        by_id = {key(x): serde.encode(topic, x) for x in got}
        differ = [key(x) for x in ref if by_id[key(x)] != serde.encode(topic, x)]
        assert not differ, (
            f"{name}: {len(differ)} records differ from the failure-free run, e.g. {differ[:3]}"
        )
