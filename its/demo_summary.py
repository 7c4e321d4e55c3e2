"""The demo's closing summary, read from ClickHouse through the sink's read-only query endpoint.

Every query is limited to this run (capture time from the demo's start), so a data directory reused
by several demos reports only the last one. Latency is measured in ClickHouse too: an event's capture
time (``events.ts``) to the time the sink wrote the batch that carries it (``sink_offsets.committed_at``,
written just before the batch's insert), matched by the event's Kafka partition and offset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from its.settings import Settings
from schemas import records as r
from schemas import topics as t

CLASS = (
    "transform(toUInt8(ifNull(class_id, 255)), [0, 1, 2, 3, 5, 7], "
    "['person', 'bicycle', 'car', 'motorcycle', 'bus', 'truck'], 'other')"
)

EXAMPLE_QUERIES = [
    (
        "crossings by camera, class and direction",
        "SELECT camera_id, transform(class_id, [0, 1, 2, 3, 5, 7], ['person', 'bicycle', 'car', "
        "'motorcycle', 'bus', 'truck'], 'other') AS class, direction, count() AS crossings, "
        "round(quantile(0.85)(speed_kmh), 1) AS p85_kmh FROM events WHERE event_type = 'LINE_CROSSING' "
        "GROUP BY camera_id, class, direction ORDER BY camera_id, crossings DESC",
    ),
    (
        "violations with their evidence frame",
        "SELECT ts, camera_id, event_type, severity, lane_id, track_id, round(speed_kmh, 1) AS kmh, "
        "evidence_frame_seq FROM events WHERE event_type != 'LINE_CROSSING' ORDER BY ts DESC LIMIT 20",
    ),
    (
        "level of service per lane, 1-minute windows",
        "SELECT camera_id, lane_id, count() AS windows, sum(volume) AS vehicles, "
        "round(avg(mean_speed_kmh), 1) AS mean_kmh, round(avg(occupancy), 3) AS occupancy, "
        "topK(1)(level_of_service)[1] AS typical_los FROM traffic_stats WHERE window_s = 60 "
        "GROUP BY camera_id, lane_id ORDER BY camera_id, lane_id",
    ),
]


def _since(start_ms: int, column: str) -> str:
    return f"{column} >= fromUnixTimestamp64Milli(toInt64({int(start_ms)}), 'UTC')"


def table_counts(client: Any, start_ms: int) -> dict[str, int]:
    """Rows of this run per analytics table (rollups: rows of the hours/days the run touched)."""
    hour = f"hour >= toStartOfHour(fromUnixTimestamp64Milli(toInt64({int(start_ms)}), 'UTC'))"
    day = f"day >= toDate(fromUnixTimestamp64Milli(toInt64({int(start_ms)}), 'UTC'))"
    queries = {
        "cameras": "SELECT count() FROM cameras FINAL",
        "detections": f"SELECT count() FROM detections WHERE {_since(start_ms, 'capture_ts')}",
        "events": f"SELECT count() FROM events WHERE {_since(start_ms, 'ts')}",
        "alerts": f"SELECT count() FROM alerts WHERE {_since(start_ms, 'last_ts')}",
        "traffic_stats": "SELECT count() FROM traffic_stats WHERE "
        + _since(start_ms - 60_000, "window_start"),
        "camera_health": f"SELECT count() FROM camera_health WHERE {_since(start_ms, 'ts')}",
        "detections_hourly": f"SELECT count() FROM detections_hourly WHERE {hour}",
        "events_hourly": f"SELECT count() FROM events_hourly WHERE {hour}",
        "traffic_hourly": f"SELECT count() FROM traffic_hourly WHERE {hour}",
        "traffic_daily": f"SELECT count() FROM traffic_daily WHERE {day}",
        "model_registry": "SELECT count() FROM model_registry",
    }
    return {name: int(client.command(sql)) for name, sql in queries.items()}


def _rows(client: Any, sql: str) -> tuple[list[str], list[tuple]]:
    res = client.query(sql)
    return list(res.column_names), [tuple(row) for row in res.result_rows]


def queries(start_ms: int, sink_group: str) -> dict[str, str]:
    since_ts = _since(start_ms, "ts")
    return {
        "crossings by class and direction": f"""
            SELECT {CLASS} AS class, direction, count() AS crossings,
                   round(quantile(0.5)(speed_kmh), 1) AS p50_kmh
            FROM events WHERE event_type = 'LINE_CROSSING' AND {since_ts}
            GROUP BY class, direction ORDER BY crossings DESC""",
        "speed percentiles (line crossings)": f"""
            SELECT if(startsWith(camera_id, 'sim-'), 'simulated', 'real clip') AS cameras,
                   count() AS measured,
                   round(quantile(0.5)(speed_kmh), 1) AS p50_kmh,
                   round(quantile(0.85)(speed_kmh), 1) AS p85_kmh,
                   round(quantile(0.95)(speed_kmh), 1) AS p95_kmh,
                   round(toFloat64(max(speed_kmh)), 1) AS max_kmh
            FROM events WHERE event_type = 'LINE_CROSSING' AND speed_kmh IS NOT NULL AND {since_ts}
            GROUP BY cameras ORDER BY cameras DESC""",
        "violations by type": f"""
            SELECT event_type, severity, count() AS events, uniqExact(camera_id) AS cameras
            FROM events WHERE event_type != 'LINE_CROSSING' AND {since_ts}
            GROUP BY event_type, severity ORDER BY events DESC""",
        "alerts (latest revision of each)": f"""
            SELECT alert_type, severity, status, count() AS alerts, sum(n) AS events
            FROM (SELECT alert_id, argMax(alert_type, revision) AS alert_type,
                         argMax(severity, revision) AS severity,
                         argMax(status, revision) AS status, max(count) AS n
                  FROM alerts WHERE {_since(start_ms, "last_ts")} GROUP BY alert_id)
            GROUP BY alert_type, severity, status ORDER BY alerts DESC""",
        "level of service (1-minute windows)": f"""
            SELECT level_of_service, count() AS windows, sum(volume) AS vehicles,
                   round(avg(mean_speed_kmh), 1) AS mean_kmh
            FROM traffic_stats WHERE window_s = 60 AND {_since(start_ms - 60_000, "window_start")}
            GROUP BY level_of_service ORDER BY level_of_service""",
        "end-to-end latency, capture -> ClickHouse (ms)": f"""
            SELECT if(e.event_type = 'LINE_CROSSING', 'line crossings', 'violations') AS events,
                   if(startsWith(e.camera_id, 'sim-'), 'simulated', 'real clip via inference') AS path,
                   count() AS n,
                   round(quantile(0.5)(dateDiff('millisecond', e.ts, s.committed_at))) AS p50_ms,
                   round(quantile(0.99)(dateDiff('millisecond', e.ts, s.committed_at))) AS p99_ms
            FROM events AS e
            ASOF INNER JOIN
            (
                SELECT toUInt32(partition) AS partition, max_offset, committed_at FROM sink_offsets
                WHERE topic = '{t.EVENTS}' AND consumer_group = '{sink_group}'
            ) AS s ON toUInt32(e._partition) = s.partition AND e._offset <= s.max_offset
            WHERE {_since(start_ms, "e.ts")}
            GROUP BY events, path ORDER BY events, path""",
        "detections, capture -> produced (ms)": f"""
            SELECT source, model_name, count() AS frames, sum(objects) AS boxes,
                   round(quantile(0.5)(dateDiff('millisecond', capture_ts, processed_ts))) AS p50_ms,
                   round(quantile(0.99)(dateDiff('millisecond', capture_ts, processed_ts))) AS p99_ms,
                   round(quantile(0.5)(inference_ms), 1) AS inference_p50_ms
            FROM detections WHERE {_since(start_ms, "capture_ts")}
            GROUP BY source, model_name ORDER BY frames DESC""",
    }


def print_table(console: Console, title: str, columns: list[str], rows: list[tuple]) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    if not rows:
        table.add_row(*(["(none)"] + [""] * (len(columns) - 1)))
    console.print(table)


def print_webhook(console: Console, hooks: dict[str, Any], alert_rows: int) -> bool:
    """The webhook receiver's tally; False when alerts were written but none reached the receiver, or
    a delivery carried a wrong signature."""
    rows = [(status, n) for status, n in hooks.get("by_status", {}).items()]
    print_table(
        console,
        f"alert webhook: signed POSTs received at {hooks.get('url')}",
        ["alert status", "deliveries"],
        rows,
    )
    delivered, distinct, bad = (
        hooks.get("deliveries", 0),
        hooks.get("distinct_alerts", 0),
        hooks.get("bad_signatures", 0),
    )
    good = not bad and (delivered > 0 or alert_rows == 0)
    mark = "[green]✓[/]" if good else "[red]✗[/]"
    console.print(
        f"{mark} webhook: {delivered} deliveries of {distinct} distinct alerts "
        f"({alert_rows} alert rows in ClickHouse), {bad} with a bad signature"
    )
    return good


def _detections_of(client: Any, camera_id: str, start_ms: int, last_s: int = 60) -> list[r.Detections]:
    res = client.query(
        "SELECT frame_seq, toUnixTimestamp64Milli(capture_ts), width, height, model_name, model_version, "
        "boxes, class_ids, scores FROM detections "
        f"WHERE camera_id = '{camera_id}' AND {_since(start_ms, 'capture_ts')} "
        f"AND capture_ts >= (SELECT max(capture_ts) FROM detections WHERE camera_id = '{camera_id}') "
        f"- INTERVAL {int(last_s)} SECOND ORDER BY capture_ts, frame_seq"
    )
    return [
        r.Detections(
            camera_id=camera_id,
            frame_seq=int(seq),
            capture_ts_ms=int(ts),
            width=int(w),
            height=int(h),
            model_name=mn,
            model_version=mv,
            boxes=[float(v) for v in b],
            class_ids=[int(c) for c in cl],
            scores=[float(s) for s in sc],
        )
        for seq, ts, w, h, mn, mv, b, cl, sc in res.result_rows
    ]


def keyframe(settings: Settings, client: Any, start_ms: int, artifacts: Path) -> dict[str, Any] | None:
    """The annotated keyframe of the signalised simulated junction (its registration from Kafka)."""
    from its.demo import SIM_CAMERA_0, SIM_SCENARIO
    from its.demo_keyframe import simulated_background, write_keyframe
    from producers.registry import CameraRegistry

    camera = CameraRegistry(settings.kafka_config(), settings.schema_registry_url).all().get(SIM_CAMERA_0)
    if camera is None:
        return None
    dets = _detections_of(client, SIM_CAMERA_0, start_ms)
    if not dets:
        return None
    return write_keyframe(
        artifacts / "annotated_keyframe.jpg", camera, dets, lambda d: simulated_background(SIM_SCENARIO, 0, d)
    )


def collect(settings: Settings, start_ms: int, artifacts: Path, console: Console) -> dict[str, Any]:
    """Print the summary tables, write the keyframe; the figures as a dict (also summary.json)."""
    from connectors.clickhouse.client import connect

    cfg = settings.sink
    client = connect(settings.clickhouse_dsn, via_endpoint=(cfg.query_user, cfg.query_password))
    out: dict[str, Any] = {"start_ms": start_ms, "sections": {}}
    try:
        counts = table_counts(client, start_ms)
        out["table_rows"] = counts
        print_table(
            console,
            "ClickHouse rows written by this run",
            ["table", "rows"],
            [(k, f"{v:,}") for k, v in counts.items()],
        )
        for title, sql in queries(start_ms, cfg.group_id).items():
            cols, rows = _rows(client, sql)
            out["sections"][title] = {"columns": cols, "rows": rows}
            print_table(console, title, cols, rows)
        console.print(
            "[dim]latency: events.ts (capture time of the frame the event is measured on) to "
            "sink_offsets.committed_at (the sink's batch holding the event, written just before its insert). "
            "Line crossings wait for their centred speed fit (0.75 s after the crossing); violations are "
            "emitted when the rule's condition has lasted its time. Simulated cameras are paced by the "
            "wall clock, so their capture times are true; the first second or two of their records are "
            "sent in a burst while the simulator computes its world.[/]"
        )
        try:
            out["keyframe"] = keyframe(settings, client, start_ms, artifacts)
        except Exception as exc:
            console.print(f"[red]✗ annotated keyframe failed: {exc!r}[/]")
            out["keyframe"] = None
    finally:
        client.close()
    if out.get("keyframe"):
        k = out["keyframe"]
        console.print(
            f"[green]✓[/] annotated keyframe: {k['path']} ({k['camera_id']} frame {k['frame_seq']}, "
            f"{k['tracks']} tracks, {k['with_speed']} with speeds)"
        )
    console.print("\n[bold]Try these on the data (the store is free once the demo has stopped):[/]")
    for title, sql in EXAMPLE_QUERIES:
        console.print(f"[dim]# {title}[/]")
        console.print(f'its sql "{sql}"', soft_wrap=True, markup=False, highlight=False)
    return out
