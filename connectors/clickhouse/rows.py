"""Typed records -> columns of the analytics tables, built as Arrow tables (one insert per table per batch).

Each catalogue topic maps to one table. Columns are appended record by record into Python lists
and turned into one Arrow table at flush time: the insert itself is columnar (no per-row SQL).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from schemas import records as r
from schemas import topics as t

TS = pa.timestamp("ms", tz="UTC")
_STR = pa.string()


def _map(key: pa.DataType, value: pa.DataType) -> pa.DataType:
    return pa.map_(key, value)


@dataclass(frozen=True)
class TableSpec:
    """One analytics table: its name, Arrow schema and how a record becomes a row of it."""

    table: str
    schema: pa.Schema
    row: Callable[[Any], tuple[Any, ...]]  # record -> values without _partition/_offset

    @property
    def names(self) -> list[str]:
        return self.schema.names


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _camera(c: r.Camera) -> tuple[Any, ...]:
    loc = c.location
    return (
        c.camera_id,
        c.name,
        loc.latitude,
        loc.longitude,
        _s(loc.address),
        _s(loc.intersection_id),
        str(c.mode),
        _s(c.source),
        c.fps,
        c.timezone,
        list(c.labels.items()),
        [lane.lane_id for lane in c.scene.lanes],
        [lane.speed_limit_kmh for lane in c.scene.lanes],
        c.registered_ts_ms,
    )


def _detections(d: r.Detections) -> tuple[Any, ...]:
    return (
        d.camera_id,
        d.capture_ts_ms,
        d.frame_seq,
        d.processed_ts_ms,
        d.width,
        d.height,
        d.model_name,
        d.model_version,
        str(d.source),
        len(d.class_ids),
        d.class_ids,
        d.scores,
        d.boxes,
        d.track_ids or [],
        d.inference_ms,
    )


def _event(e: r.Event) -> tuple[Any, ...]:
    ev = e.evidence
    ref = ""
    if ev is not None and ev.frame_ref is not None:
        ref = f"{ev.frame_ref.topic}/{ev.frame_ref.partition}/{ev.frame_ref.offset}"
    return (
        e.event_id,
        e.camera_id,
        str(e.event_type),
        str(e.severity),
        e.ts_ms,
        e.end_ts_ms,
        e.track_id,
        e.class_id,
        _s(e.lane_id),
        _s(e.line_id),
        _s(e.direction),
        e.confidence,
        e.measurements.get("speed_kmh"),
        list(e.measurements.items()),
        _s(e.signal_phase),
        _s(e.model_version),
        list(e.attributes.items()),
        ev.frame_seq if ev is not None else None,
        ref,
    )


def _alert(a: r.Alert) -> tuple[Any, ...]:
    loc = a.location
    return (
        a.alert_id,
        a.incident_id,
        a.camera_id,
        str(a.alert_type),
        str(a.severity),
        str(a.status),
        a.revision,
        a.count,
        a.escalation_level,
        a.first_ts_ms,
        a.last_ts_ms,
        a.title,
        a.description,
        a.suggested_action,
        a.event_ids,
        loc.latitude if loc else None,
        loc.longitude if loc else None,
        _s(a.acknowledged_by),
        a.acknowledged_ts_ms,
    )


def _stats(s: r.TrafficStats) -> tuple[Any, ...]:
    return (
        s.stats_id,
        s.camera_id,
        _s(s.lane_id),
        s.window_start_ms,
        s.window_end_ms,
        s.window_s,
        s.volume,
        list(s.volume_by_class.items()),
        s.mean_speed_kmh,
        s.p85_speed_kmh,
        s.occupancy,
        s.density_veh_per_km,
        s.queue_length_m,
        s.queue_vehicles,
        str(s.level_of_service),
        s.late_records,
    )


def _health(h: r.Health) -> tuple[Any, ...]:
    return (
        h.camera_id,
        h.ts_ms,
        str(h.mode),
        str(h.status),
        h.producer_id,
        h.fps_in,
        h.fps_out,
        h.frames_dropped,
        h.frames_skipped_blur,
        h.decode_errors,
        h.reconnects,
        h.queue_depth,
        h.spool_bytes,
        h.uptime_s,
        _s(h.last_error),
    )


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([*fields, ("_partition", pa.uint16()), ("_offset", pa.int64())])


f32, f64, i64 = pa.float32(), pa.float64(), pa.int64()
TABLES: dict[str, TableSpec] = {
    t.CAMERAS: TableSpec(
        "cameras",
        _schema(
            ("camera_id", _STR), ("name", _STR), ("latitude", f64), ("longitude", f64), ("address", _STR),
            ("intersection_id", _STR), ("mode", _STR), ("source", _STR), ("fps", f32), ("timezone", _STR),
            ("labels", _map(_STR, _STR)), ("lane_ids", pa.list_(_STR)),
            ("lane_speed_limits_kmh", pa.list_(f32)), ("registered_at", TS),
        ),
        _camera,
    ),
    t.DETECTIONS: TableSpec(
        "detections",
        _schema(
            ("camera_id", _STR), ("capture_ts", TS), ("frame_seq", pa.uint64()), ("processed_ts", TS),
            ("width", pa.uint16()), ("height", pa.uint16()), ("model_name", _STR), ("model_version", _STR),
            ("source", _STR), ("objects", pa.uint16()), ("class_ids", pa.list_(pa.uint8())),
            ("scores", pa.list_(f32)), ("boxes", pa.list_(f32)), ("track_ids", pa.list_(i64)),
            ("inference_ms", f32),
        ),
        _detections,
    ),
    t.EVENTS: TableSpec(
        "events",
        _schema(
            ("event_id", _STR), ("camera_id", _STR), ("event_type", _STR), ("severity", _STR), ("ts", TS),
            ("end_ts", TS), ("track_id", i64), ("class_id", pa.uint8()), ("lane_id", _STR),
            ("line_id", _STR), ("direction", _STR), ("confidence", f32), ("speed_kmh", f32),
            ("measurements", _map(_STR, f64)), ("signal_phase", _STR), ("model_version", _STR),
            ("attributes", _map(_STR, _STR)), ("evidence_frame_seq", pa.uint64()), ("evidence_ref", _STR),
        ),
        _event,
    ),
    t.ALERTS: TableSpec(
        "alerts",
        _schema(
            ("alert_id", _STR), ("incident_id", _STR), ("camera_id", _STR), ("alert_type", _STR),
            ("severity", _STR), ("status", _STR), ("revision", pa.uint32()), ("count", pa.uint32()),
            ("escalation_level", pa.uint8()), ("first_ts", TS), ("last_ts", TS), ("title", _STR),
            ("description", _STR), ("suggested_action", _STR), ("event_ids", pa.list_(_STR)),
            ("latitude", f64), ("longitude", f64), ("acknowledged_by", _STR), ("acknowledged_ts", TS),
        ),
        _alert,
    ),
    t.TRAFFIC_STATS: TableSpec(
        "traffic_stats",
        _schema(
            ("stats_id", _STR), ("camera_id", _STR), ("lane_id", _STR), ("window_start", TS),
            ("window_end", TS), ("window_s", pa.uint32()), ("volume", pa.uint32()),
            ("volume_by_class", _map(_STR, pa.uint32())), ("mean_speed_kmh", f32), ("p85_speed_kmh", f32),
            ("occupancy", f32), ("density_veh_per_km", f32), ("queue_length_m", f32),
            ("queue_vehicles", pa.uint32()), ("level_of_service", _STR), ("late_records", pa.uint32()),
        ),
        _stats,
    ),
    t.HEALTH: TableSpec(
        "camera_health",
        _schema(
            ("camera_id", _STR), ("ts", TS), ("mode", _STR), ("status", _STR), ("producer_id", _STR),
            ("fps_in", f32), ("fps_out", f32), ("frames_dropped", pa.uint64()),
            ("frames_skipped_blur", pa.uint64()), ("decode_errors", pa.uint64()), ("reconnects", pa.uint32()),
            ("queue_depth", pa.uint32()), ("spool_bytes", pa.uint64()), ("uptime_s", f64),
            ("last_error", _STR),
        ),
        _health,
    ),
}  # fmt: skip


def keep_detection(record: r.Detections, sample: float) -> bool:
    """Deterministic sampling: the same frame is kept or dropped on every run (replay, redo)."""
    if sample >= 1.0:
        return True
    h = zlib.crc32(f"{record.camera_id}:{record.frame_seq}".encode())
    return h < sample * 2**32


class TableBuffer:
    """Rows of one table for one batch, kept as one list per column."""

    __slots__ = ("_cols", "rows", "spec")

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self._cols: list[list[Any]] = [[] for _ in spec.names]
        self.rows = 0

    def add(self, record: Any, partition: int, offset: int) -> None:
        values = (*self.spec.row(record), partition, offset)
        for col, value in zip(self._cols, values, strict=True):
            col.append(value)
        self.rows += 1

    def to_arrow(self) -> pa.Table:
        arrays = [
            pa.array(col, type=field.type) for col, field in zip(self._cols, self.spec.schema, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=self.spec.schema)
