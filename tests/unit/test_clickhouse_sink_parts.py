"""Pure parts of the ClickHouse sink: DDL rendering, read-only gate, dedup tokens, replay bounds,
deterministic sampling and the Arrow rows of every topic."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.clickhouse.endpoint import is_read_only
from connectors.clickhouse.errors import MigrationError
from connectors.clickhouse.migrate import discover, render
from connectors.clickhouse.replay import Bound
from connectors.clickhouse.rows import TABLES, TableBuffer, keep_detection
from connectors.clickhouse.runner import schema_variables
from connectors.clickhouse.sink import table_token
from connectors.settings import SinkSettings
from schemas import examples
from schemas import records as r
from schemas import topics as t

pytestmark = pytest.mark.unit


def test_render_fills_variables_defaults_and_replicated_engines() -> None:
    sql = "CREATE TABLE a (x UInt8) ENGINE = ReplacingMergeTree(v) ORDER BY x TTL d + INTERVAL ${ttl:7} DAY"
    assert render(sql).endswith("INTERVAL 7 DAY")
    assert "INTERVAL 30 DAY" in render(sql, {"ttl": 30})
    replicated = render(sql, {}, ("/ch/{shard}/{table}", "{replica}"))
    assert "ENGINE = ReplicatedReplacingMergeTree('/ch/{shard}/{table}', '{replica}', v)" in replicated
    plain = render("CREATE TABLE b (x UInt8) ENGINE = MergeTree ORDER BY x", {}, ("/p", "r"))
    assert "ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY x" in plain
    with pytest.raises(MigrationError, match="no value"):
        render("SELECT ${missing}")


def test_analytics_migration_takes_every_ttl_setting() -> None:
    analytics = next(m for m in discover() if m.name == "analytics")
    cfg = SinkSettings(ttl_detections_days=3, ttl_events_days=100, ttl_aggregates_days=2000)
    text = " ".join(render(s, schema_variables(cfg)) for s in analytics.statements)
    assert "toDateTime(capture_ts) + INTERVAL 3 DAY" in text
    assert "toDateTime(ts) + INTERVAL 100 DAY" in text
    assert "day + INTERVAL 2000 DAY" in text and "${" not in text


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1", "  with x AS (SELECT 1) SELECT * FROM x", "SHOW TABLES", "DESCRIBE events",
     "EXPLAIN SELECT 1", "(SELECT 1)", "-- note\nSELECT 1", "SELECT ';' AS semi"],
)  # fmt: skip
def test_read_statements_pass(sql: str) -> None:
    assert is_read_only(sql) == (True, "")


@pytest.mark.parametrize(
    "sql",
    ["INSERT INTO t VALUES (1)", "DROP TABLE t", "SELECT 1; DROP TABLE t", "ALTER TABLE t DELETE WHERE 1",
     "SET readonly = 0", "OPTIMIZE TABLE t", "SYSTEM STOP MERGES", "", "BACKUP DATABASE d TO File('/x')"],
)  # fmt: skip
def test_everything_else_is_refused(sql: str) -> None:
    ok, why = is_read_only(sql)
    assert not ok and why


def test_token_is_sorted_and_names_every_range() -> None:
    ranges = [("its.events.v1", 3, 10, 20), ("its.events.v1", 1, 5, 9)]
    assert table_token(ranges) == "its.events.v1-1-5-9,its.events.v1-3-10-20"
    assert table_token(reversed(ranges)) == table_token(ranges)


def test_bounds_parse_times_and_offsets() -> None:
    assert Bound.parse("1234") == Bound(offset=1234)
    assert Bound.parse("2026-11-27T08:00:00Z").ms == 1_795_766_400_000
    assert Bound.parse("2026-11-27T08:00:00") == Bound.parse("2026-11-27T08:00:00+00:00")
    with pytest.raises(ValueError, match="neither"):
        Bound.parse("yesterday")


def test_sampling_is_deterministic_and_close_to_the_share() -> None:
    frames = [examples.example_records()[t.DETECTIONS] for _ in range(1)]
    det = frames[0]
    kept = 0
    for seq in range(10_000):
        det.frame_seq = seq
        first = keep_detection(det, 0.25)
        assert first == keep_detection(det, 0.25)
        kept += first
    assert 2_300 < kept < 2_700
    assert keep_detection(det, 1.0)


@pytest.mark.parametrize("topic", sorted(TABLES))
def test_every_example_record_becomes_an_arrow_row(topic: str) -> None:
    spec = TABLES[topic]
    buf = TableBuffer(spec)
    buf.add(examples.example_records()[topic], 4, 77)
    table = buf.to_arrow()
    assert table.num_rows == 1 and table.schema == spec.schema
    row = table.to_pylist()[0]
    assert (row["_partition"], row["_offset"]) == (4, 77)
    if topic == t.DETECTIONS:
        assert row["objects"] == 2 and row["class_ids"] == [2, 0] and len(row["boxes"]) == 8
    if topic == t.EVENTS:
        assert row["speed_kmh"] == pytest.approx(42.5) and row["evidence_ref"] == "its.frames.v1/3/1234"
    assert all(isinstance(c, pa.ChunkedArray) for c in table.columns)


def test_alert_without_location_or_ack_has_nulls() -> None:
    alert = examples.example_records()[t.ALERTS]
    alert.location, alert.acknowledged_ts_ms = None, None
    buf = TableBuffer(TABLES[t.ALERTS])
    buf.add(alert, 0, 0)
    row = buf.to_arrow().to_pylist()[0]
    assert row["latitude"] is None and row["acknowledged_ts"] is None
    assert isinstance(alert, r.Alert)
