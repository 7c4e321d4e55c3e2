"""`its privacy erase` on the real embedded ClickHouse: exactly one camera's rows in range go, rollups
are rebuilt at the edges, the audit trail stays and records the erase; retention TTLs are in force."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from typer.testing import CliRunner

from connectors.clickhouse.client import connect, quote_identifier
from connectors.clickhouse.migrate import migrate
from connectors.clickhouse.rows import TABLES, TableBuffer
from connectors.clickhouse.writer import ArrowWriter
from infra.topics import ensure_topics
from its.privacy.erase import RAW, ROLLUPS, uncovered_tables
from schemas import examples
from schemas import records as r
from schemas import topics as t
from schemas.serde import TopicSerde

pytestmark = [pytest.mark.security, pytest.mark.integration]

HOUR = 3600_000
# Offsets (minutes) of one row per raw table; the range below is [90, 195) min: 3 inside, 4 outside.
MINUTES = (10, 70, 100, 150, 185, 200, 300)
RANGE = (90, 195)


@pytest.fixture(scope="module")
def migrated(clickhouse_store: Any) -> Iterator[tuple[Any, str, str]]:
    """One migrated database for the module (migrating costs seconds; tests use their own cameras)."""
    database = f"erase_{uuid.uuid4().hex[:10]}"
    client = connect(clickhouse_store.dsn, database=database)
    migrate(client)
    try:
        yield client, database, clickhouse_store.dsn
    finally:
        client.close()
        clickhouse_store.client.command(f"DROP DATABASE IF EXISTS {quote_identifier(database)} SYNC")


def _records(camera: str, t0: int) -> dict[str, list[Any]]:
    """One record per offset for every raw sink table, built from the contract examples."""
    ex = examples.example_records()
    out: dict[str, list[Any]] = {}
    for i, minute in enumerate(MINUTES):
        ts = t0 + minute * 60_000
        out.setdefault(t.DETECTIONS, []).append(
            dataclasses.replace(ex[t.DETECTIONS], camera_id=camera, capture_ts_ms=ts, frame_seq=i)
        )
        out.setdefault(t.EVENTS, []).append(
            dataclasses.replace(ex[t.EVENTS], camera_id=camera, ts_ms=ts, event_id=f"{camera}-e{i}")
        )
        out.setdefault(t.ALERTS, []).append(
            dataclasses.replace(
                ex[t.ALERTS],
                camera_id=camera,
                alert_id=f"{camera}-a{i}",
                first_ts_ms=ts,
                last_ts_ms=ts + 5 * 60_000,
            )
        )
        out.setdefault(t.TRAFFIC_STATS, []).append(
            dataclasses.replace(
                ex[t.TRAFFIC_STATS],
                camera_id=camera,
                stats_id=f"{camera}-s{i}",
                window_start_ms=ts,
                window_end_ms=ts + 60_000,
                volume=10 + i,
            )
        )
        out.setdefault(t.HEALTH, []).append(dataclasses.replace(ex[t.HEALTH], camera_id=camera, ts_ms=ts))
    return out


def _load(client: Any, database: str, camera: str, t0: int) -> None:
    """Insert through the sink's own row builders and Arrow writer (the views fill the rollups)."""
    writer = ArrowWriter(client, database)
    try:
        for topic, recs in _records(camera, t0).items():
            buf = TableBuffer(TABLES[topic])
            for offset, rec in enumerate(recs):
                buf.add(rec, 0, offset)
            writer.insert(TABLES[topic].table, buf.to_arrow(), None)
    finally:
        writer.close()
    received = [datetime.fromtimestamp((t0 + m * 60_000) / 1000, UTC) for m in MINUTES]
    dead = [[t.FRAMES, 0, i, camera, "too big", "X", "", ts] for i, ts in enumerate(received)]
    columns = ["topic", "partition", "offset", "key", "reason", "error_type", "payload", "received_at"]
    client.insert("dead_letters", dead, database=database, column_names=columns)


def _counts(client: Any, database: str, camera: str) -> dict[str, int]:
    out = {}
    for table in [*RAW, *(ro.table for ro in ROLLUPS), "audit"]:
        col = "key" if table == "dead_letters" else ("target" if table == "audit" else "camera_id")
        out[table] = int(
            client.command(
                f"SELECT count() FROM {database}.{table} WHERE {col} = {{c:String}}", parameters={"c": camera}
            )
        )
    return out


def _audit_entries(
    settings: Any, registry: str, camera: str, timeout: float = 30
) -> list[tuple[Any, r.AuditEntry]]:
    """The audit entries about ``camera`` on its.audit.v1 (read from the start of every partition)."""
    serde = TopicSerde(registry)
    consumer = Consumer(settings.kafka_config(**{"group.id": f"t-{uuid.uuid4().hex[:8]}",
                                                  "enable.partition.eof": True}))  # fmt: skip
    parts = t.BY_NAME[t.AUDIT].partitions
    consumer.assign([TopicPartition(t.AUDIT, p, OFFSET_BEGINNING) for p in range(parts)])
    found, eof, deadline = [], set(), time.monotonic() + timeout
    try:
        while len(eof) < parts and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                continue
            rec = serde.decode(msg)
            if rec.target == camera:
                found.append((msg, rec))
    finally:
        consumer.close()
    return found


def test_erase_removes_exactly_the_camera_rows_in_range_and_is_audited(
    migrated, kafka_broker, schema_registry, kafka_settings, monkeypatch
) -> None:
    client, database, dsn = migrated
    ensure_topics(kafka_settings.kafka_config(), [t.BY_NAME[t.AUDIT]])
    cam, other = f"erase-{uuid.uuid4().hex[:6]}", f"keep-{uuid.uuid4().hex[:6]}"
    # Two days ago on the hour: inside every retention tier (raw detections keep 7 days).
    t0 = (time.time_ns() // 1_000_000 // HOUR - 48) * HOUR
    for camera in (cam, other):
        _load(client, database, camera, t0)
    # An audit row about the camera: the erase must leave the trail alone.
    trail = TableBuffer(TABLES[t.AUDIT])
    trail.add(dataclasses.replace(examples.example_records()[t.AUDIT], target=cam), 0, 0)
    ArrowWriter(client, database).insert("audit", trail.to_arrow(), None)
    before_cam, before_other = _counts(client, database, cam), _counts(client, database, other)
    assert all(before_cam[table] == len(MINUTES) for table in RAW), before_cam

    lo, hi = (datetime.fromtimestamp((t0 + m * 60_000) / 1000, UTC) for m in RANGE)
    monkeypatch.setenv("ITS_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("ITS_SCHEMA_REGISTRY_URL", schema_registry)
    from its.cli import app
    from its.settings import get_settings

    def run(*extra: str) -> dict[str, Any]:
        get_settings.cache_clear()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level  # the CLI points logging at the runner's stream
        args = ["privacy", "erase", "--camera", cam, "--from", lo.isoformat(), "--to", hi.isoformat(),
                "--dsn", dsn, "--database", database, "--json", *extra]  # fmt: skip
        try:
            result = CliRunner().invoke(app, args)
        finally:
            root.handlers[:], root.level = handlers, level
            get_settings.cache_clear()
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout.strip().splitlines()[-1])

    dry = run("--dry-run")
    assert dry["dry_run"] and _counts(client, database, cam) == before_cam  # nothing changed
    assert {k: v["removed"] for k, v in dry["tables"].items() if v["kind"] == "raw"} == {k: 3 for k in RAW}

    report = run()
    assert not report["dry_run"] and report["uncovered_tables"] == [] and report["missing_tables"] == []
    for table in RAW:  # exactly the three rows inside the range
        assert report["tables"][table] == {"kind": "raw", "before": 3, "after": 0, "removed": 3, "rebuilt": 0}
    after_cam = _counts(client, database, cam)
    assert {k: after_cam[k] for k in RAW} == {k: len(MINUTES) - 3 for k in RAW}
    assert _counts(client, database, other) == before_other  # the other camera: untouched
    assert after_cam["audit"] == 1  # the trail: untouched

    # What is left is exactly the rows outside [lo, hi).
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return client.query(sql.format(db=database), parameters={"c": cam}).result_rows

    kept = rows("SELECT toUnixTimestamp64Milli(capture_ts) FROM {db}.detections"
                " WHERE camera_id = {{c:String}} ORDER BY capture_ts")  # fmt: skip
    assert [v - t0 for (v,) in kept] == [m * 60_000 for m in MINUTES if not RANGE[0] <= m < RANGE[1]]
    # Rollups equal what the views make of the remaining raw rows: edge hours rebuilt, inner hours gone.
    hourly = rows("SELECT hour, sum(frames) FROM {db}.detections_hourly WHERE camera_id = {{c:String}}"
                  " GROUP BY hour ORDER BY hour")  # fmt: skip
    raw = rows("SELECT toStartOfHour(capture_ts) AS h, count() FROM {db}.detections"
               " WHERE camera_id = {{c:String}} GROUP BY h ORDER BY h")  # fmt: skip
    assert [(int(h.timestamp()), n) for h, n in hourly] == [(int(h.timestamp()), n) for h, n in raw]
    assert len(hourly) == 4 and report["tables"]["detections_hourly"]["rebuilt"] >= 2
    daily = client.command(
        f"SELECT sum(volume) FROM {database}.traffic_daily WHERE camera_id = {{c:String}}",
        parameters={"c": cam},
    )
    assert int(daily) == sum(10 + i for i, m in enumerate(MINUTES) if not RANGE[0] <= m < RANGE[1])

    # Audited on its.audit.v1 with the per-table counts; into the audit table by the sink's row builder.
    entries = [
        (m, e) for m, e in _audit_entries(kafka_settings, schema_registry, cam) if e.action == "privacy.erase"
    ]
    assert [(e.outcome, e.details["dry_run"]) for _, e in entries] == [("ok", "True"), ("ok", "False")]
    last = entries[-1][1]
    assert last.details["removed"] == str(report["removed"]) and last.details["removed.detections"] == "3"
    assert last.component == "privacy" and last.details["from"] == lo.isoformat()
    buf = TableBuffer(TABLES[t.AUDIT])
    for msg, rec in entries:
        buf.add(rec, msg.partition(), msg.offset())
    ArrowWriter(client, database).insert("audit", buf.to_arrow(), None)
    trail_rows = rows("SELECT action, outcome, details['removed.events'] FROM {db}.audit"
                      " WHERE target = {{c:String}} ORDER BY ts")  # fmt: skip
    assert trail_rows[-2:] == [("privacy.erase", "ok", "3"), ("privacy.erase", "ok", "3")]


# Retention tiers of the deployment plan (seed section 4: data lifecycle), in days.
TIERS = {
    "detections": 7,  # video/detections hot tier
    "events": 365,  # cold tier: one year
    "alerts": 365,
    "camera_health": 90,  # real-time metrics
    "traffic_stats": 1825,  # aggregated analytics: five years
    "traffic_daily": 1825,  # daily aggregates: five years
    "detections_hourly": 730,  # hourly aggregates: two years
    "events_hourly": 730,
    "traffic_hourly": 730,
    "dead_letters": 30,  # like the DLQ topic (raw frames inside)
    "audit": 2555,  # audit logs: seven years
}
NO_TTL = {"cameras", "sink_offsets", "model_registry", "schema_migrations"}  # reference data and state


def test_every_data_table_has_its_retention_ttl(migrated) -> None:
    client, database, _dsn = migrated
    rows = client.query(
        "SELECT name, engine_full FROM system.tables"
        " WHERE database = {db:String} AND engine LIKE '%MergeTree'",
        parameters={"db": database},
    ).result_rows
    engines = dict(rows)
    assert set(TIERS) | NO_TTL <= set(engines), sorted(engines)
    for table, days in TIERS.items():
        assert " TTL " in engines[table] and f"toIntervalDay({days})" in engines[table], (
            table,
            engines[table],
        )
    # Any other table (a later migration) must say how long it keeps data too.
    assert [name for name, engine in engines.items() if name not in NO_TTL and " TTL " not in engine] == []
    for table in NO_TTL:
        assert " TTL " not in engines[table], table
    # The erase plan knows every table that holds a camera_id.
    columns = client.query(
        "SELECT table, groupArray(name) FROM system.columns WHERE database = {db:String} GROUP BY table",
        parameters={"db": database},
    ).result_rows
    assert uncovered_tables({tbl: set(cols) for tbl, cols in columns}) == []
