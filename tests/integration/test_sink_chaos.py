"""Acceptance: the sink killed with SIGKILL at five moments ends exactly where a failure-free run ends.

200,000 records (cameras, detection frames, events, alerts, traffic windows, heartbeats, plus a few
undecodable values) are produced once. A failure-free sink fills store A. Another sink fills store
B while dying five times: three times by the test hook at the three points of a flush (after the
offset intent, between two table inserts, after the inserts and before the Kafka commit) and twice
by an outside SIGKILL at a random moment. Both stores must hold the same counts and exact sums,
match what was produced, and contain no duplicate id.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer

from connectors.clickhouse import sample_data
from schemas import topics as t
from tests.integration.sink_support import FINGERPRINT, SinkEnv, create_topics, dump_and_kill, wait_for_log

pytestmark = pytest.mark.integration

RECORDS = int(os.environ.get("ITS_TEST_SINK_RECORDS", "200000"))
GARBAGE = 7  # undecodable values on the detections topic: the DLQ path runs in every batch run


@pytest.fixture(scope="module")
def produced(kafka_broker, schema_registry) -> tuple[str, Counter[str]]:
    prefix = f"chaos{uuid.uuid4().hex[:6]}."
    create_topics(kafka_broker.bootstrap, prefix)
    records = list(sample_data.generate(RECORDS, seed=11))
    counts = Counter(
        sample_data.produce({"bootstrap.servers": kafka_broker.bootstrap}, schema_registry, records, prefix)
    )
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i in range(GARBAGE):
        producer.produce(prefix + t.DETECTIONS, b"\x00\x00\x00\x00\x01not avro" + bytes([i]), key=b"cam-0001")
    assert producer.flush(30) == 0
    return prefix, counts


def _expected(records_by_topic: Counter[str]) -> dict[str, int]:
    return {
        "cameras": records_by_topic[t.CAMERAS],
        "detections": records_by_topic[t.DETECTIONS],
        "events": records_by_topic[t.EVENTS],
        "alerts": records_by_topic[t.ALERTS],
        "traffic_stats": records_by_topic[t.TRAFFIC_STATS],
        "camera_health": records_by_topic[t.HEALTH],
        "dead_letters": GARBAGE,
    }


def test_sigkill_five_times_equals_failure_free_run(
    kafka_broker, schema_registry, produced, tmp_path
) -> None:
    prefix, counts = produced
    assert sum(counts.values()) >= 200_000 or RECORDS < 200_000
    # ~12 flushes per run, so every crash point is reached whatever the record count.
    common = {
        "ITS_SINK__BATCH_ROWS": str(max(1000, RECORDS // 12)),
        "ITS_SINK__BATCH_MS": "400",
        "ITS_SINK__INSTANCE_ID": "sink-0",  # static membership: a restart needs no rebalance wait
        "ITS_TEST_SINK_LOG_LEVEL": "INFO",
    }

    clean = SinkEnv(tmp_path / "clean", kafka_broker.bootstrap, schema_registry, prefix, extra=common)
    started = time.monotonic()
    clean.run_until_idle()
    clean_s = time.monotonic() - started
    baseline = clean.sql(FINGERPRINT)[0]
    expected = _expected(counts)
    assert {k: baseline[k] for k in expected} == expected
    assert baseline["detections_unique"] == baseline["detections"]
    assert baseline["events_unique"] == baseline["events"]
    assert baseline["alerts_unique"] == baseline["alerts"]
    assert baseline["traffic_stats_unique"] == baseline["traffic_stats"]
    assert baseline["hourly_frames"] == baseline["detections"] == baseline["registry_frames"]
    assert baseline["hourly_volume"] == baseline["daily_volume"] == baseline["volume"]

    chaos = SinkEnv(tmp_path / "chaos", kafka_broker.bootstrap, schema_registry, prefix, extra=common)
    # Three deaths inside a flush, by the test hook (SIGKILL of itself at that exact point).
    for point, batch in (("after_intent", 2), ("mid_insert", 2), ("after_insert", 3)):
        proc = chaos.start(ITS_SINK__CRASH_AT=point, ITS_SINK__CRASH_AFTER_BATCHES=str(batch))
        try:
            rc = proc.wait(120)
        finally:
            dump_and_kill(proc)
        assert rc == -signal.SIGKILL, f"{point}: exit {rc}: {chaos.last_log()}"
        assert "test hook: SIGKILL" in chaos.last_log()
    # Two deaths from outside at random moments of a running sink.
    rng = random.Random(int(os.environ.get("ITS_TEST_CHAOS_SEED", "5")))
    for _ in range(2):
        proc = chaos.start()
        wait_for_log(chaos, proc, "partitions assigned")
        time.sleep(rng.uniform(0.3, 2.5))  # somewhere in the middle of consuming and flushing
        alive = proc.poll() is None
        proc.kill()
        proc.wait(30)
        assert alive, f"sink ended before the kill: {chaos.last_log()}"
    progress = chaos.sql("SELECT count() AS n FROM detections")[0]["n"]
    chaos.run_until_idle()
    after = chaos.sql(FINGERPRINT)[0]

    assert after == baseline
    print(f"\nchaos: {sum(counts.values()) + GARBAGE} records, clean run {clean_s:.1f} s, "
          f"{progress} detection rows before the last restart; fingerprint {after}")  # fmt: skip
