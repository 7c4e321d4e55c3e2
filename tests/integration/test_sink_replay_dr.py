"""Replay reproduces the live rows of a time range exactly; a backup taken mid-run, restored, and
resumed ends equal to a failure-free run."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from connectors.clickhouse import sample_data
from schemas import topics as t
from tests.integration.sink_support import FINGERPRINT, SinkEnv, create_topics, stop, wait_for_endpoint

pytestmark = pytest.mark.integration

HOUR = sample_data.HOUR_MS


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _produce(kafka_broker, schema_registry, records, prefix: str) -> Counter[str]:
    conf = {"bootstrap.servers": kafka_broker.bootstrap}
    return Counter(sample_data.produce(conf, schema_registry, records, prefix))


def test_replay_of_a_time_range_reproduces_the_live_rows(kafka_broker, schema_registry, tmp_path) -> None:
    prefix = f"rp{uuid.uuid4().hex[:6]}."
    create_topics(kafka_broker.bootstrap, prefix, partitions=3)
    start = sample_data.default_start_ms()
    _produce(kafka_broker, schema_registry, sample_data.generate(20_000, seed=21, start_ms=start), prefix)
    env = SinkEnv(tmp_path, kafka_broker.bootstrap, schema_registry, prefix)
    env.run_until_idle()

    lo, hi = start + HOUR, start + 2 * HOUR
    topics = [t.DETECTIONS, t.EVENTS, t.TRAFFIC_STATS]
    args = ["replay", "--from", _iso(lo), "--to", _iso(hi), "--into", "replay_1h"]
    for topic in topics:
        args += ["--topic", topic]
    done = env.its(*args)
    assert done.returncode == 0, done.stderr
    reported = json.loads(done.stdout.strip().splitlines()[-1])["rows"]

    checks = {
        "detections": ("capture_ts", "cityHash64(camera_id, frame_seq, capture_ts, objects, boxes, _offset)"),
        "events": ("ts", "cityHash64(event_id, camera_id, ts, speed_kmh, measurements, _offset)"),
        "traffic_stats": (
            "window_start",
            "cityHash64(stats_id, volume, occupancy, _offset)",
        ),
    }
    for table, (ts, digest) in checks.items():
        window = f"{ts} >= fromUnixTimestamp64Milli({lo}) AND {ts} < fromUnixTimestamp64Milli({hi})"
        live = env.sql(
            f"SELECT count() AS n, groupBitXor({digest}) AS h FROM default.{table} WHERE {window}"
        )[0]
        again = env.sql(f"SELECT count() AS n, groupBitXor({digest}) AS h FROM replay_1h.{table}")[0]
        assert live["n"] > 0 and again == live, table
        assert reported[table] == live["n"]
    # The hourly rollup of the replayed hour equals the live one for that hour.
    hour = f"hour = toStartOfHour(fromUnixTimestamp64Milli({lo}))"
    live = env.sql(f"SELECT sum(events) AS n FROM default.events_hourly WHERE {hour}")[0]["n"]
    assert env.sql(f"SELECT sum(events) AS n FROM replay_1h.events_hourly WHERE {hour}")[0]["n"] == live
    # Nothing else was written: the live database is unchanged, a second replay adds nothing.
    assert reported.get("cameras", 0) == 0
    assert env.its(*args).returncode == 0
    assert env.sql("SELECT count() AS n FROM replay_1h.events")[0]["n"] == reported["events"]
    refused = env.its("replay", "--topic", t.EVENTS, "--from", "0", "--into", "default")
    assert refused.returncode == 1 and "live database" in refused.stderr


def test_backup_mid_run_restore_and_resume_equals_failure_free_run(
    kafka_broker, schema_registry, tmp_path
) -> None:
    prefix = f"dr{uuid.uuid4().hex[:6]}."
    create_topics(kafka_broker.bootstrap, prefix, partitions=3)
    records = list(sample_data.generate(30_000, seed=31))
    first, second = records[:12_000], records[12_000:]
    counts = _produce(kafka_broker, schema_registry, first, prefix)

    env = SinkEnv(
        tmp_path / "live",
        kafka_broker.bootstrap,
        schema_registry,
        prefix,
        extra={"ITS_SINK__BATCH_ROWS": "2000"},
    )
    proc = env.start()
    try:
        wait_for_endpoint(env, proc)
        deadline = time.monotonic() + 120
        while env.sql("SELECT count() AS n FROM detections")[0]["n"] < counts[t.DETECTIONS]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        # Keep producing while the backup runs: it is taken between two batches of a busy sink. The
        # last part is produced after the backup returns, so the backup is behind Kafka however fast
        # the sink is, and the restore has something to catch up on.
        during, after = second[:6_000], second[6_000:]
        producing = threading.Thread(
            target=lambda: counts.update(_produce(kafka_broker, schema_registry, during, prefix))
        )
        producing.start()
        time.sleep(0.5)
        backed = env.its("dr", "backup", str(tmp_path / "backup"))
        producing.join()
        assert backed.returncode == 0, backed.stderr
        counts.update(_produce(kafka_broker, schema_registry, after, prefix))
        manifest = json.loads(backed.stdout.strip().splitlines()[-1])
        assert manifest["offsets"], manifest
        deadline = time.monotonic() + 120
        while env.sql("SELECT count() AS n FROM detections")[0]["n"] < counts[t.DETECTIONS]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        locked = env.its("dr", "restore", str(tmp_path / "backup"))
        assert locked.returncode == 1 and "stop it first" in locked.stderr
    finally:
        assert stop(proc) == 0, env.last_log()

    restored = env.its("dr", "restore", str(tmp_path / "backup"))
    assert restored.returncode == 0, restored.stderr
    restore_report = json.loads(restored.stdout.strip().splitlines()[-1])
    after_restore = restore_report["rows"]
    assert 0 < after_restore["detections"] < counts[t.DETECTIONS], after_restore
    refill_started = time.monotonic()
    env.run_until_idle()
    refill_s = time.monotonic() - refill_started
    resumed = env.sql(FINGERPRINT)[0]

    clean = SinkEnv(tmp_path / "clean", kafka_broker.bootstrap, schema_registry, prefix)
    clean.run_until_idle()
    baseline = clean.sql(FINGERPRINT)[0]
    assert resumed == baseline
    assert baseline["detections"] == counts[t.DETECTIONS] and baseline["events"] == counts[t.EVENTS]
    gap = sum(counts.values()) - sum(
        after_restore[k]
        for k in ("cameras", "detections", "events", "alerts", "traffic_stats", "camera_health")
    )
    print(f"\nDR: backup {manifest['seconds']} s / {manifest['bytes']} bytes; restore "
          f"{restore_report['seconds']} s; refill of {gap} records after the backup {refill_s:.1f} s "
          "(sink start included)")  # fmt: skip
