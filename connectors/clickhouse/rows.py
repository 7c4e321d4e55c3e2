"""Typed records -> columns of the analytics tables, built as Arrow tables (one insert per table per batch).

Each catalogue topic maps to one table. Columns are appended record by record into Python lists
and turned into one Arrow table at flush time: the insert itself is columnar (no per-row SQL).
The high-volume topics (``COLUMNAR``) skip the record objects: a whole batch of Kafka values is
decoded straight into Arrow columns (``ColumnarRows``), about ten times less CPU per row.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import contracts
from schemas import records as r
from schemas import topics as t
from schemas.columnar import BatchDecoder, Decoded, pack
from schemas.errors import RecordDecodeError
from schemas.serde import AvroDeserializer, TopicSerde

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


def _audit(a: r.AuditEntry) -> tuple[Any, ...]:
    return (a.audit_id, a.ts_ms, a.actor, a.action, a.target, a.outcome, a.reason,
            list(a.details.items()), a.component)  # fmt: skip


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
    t.AUDIT: TableSpec(  # append-only trail (migration 0003)
        "audit",
        _schema(
            ("audit_id", _STR), ("ts", TS), ("actor", _STR), ("action", _STR), ("target", _STR),
            ("outcome", _STR), ("reason", _STR), ("details", _map(_STR, _STR)), ("component", _STR),
        ),
        _audit,
    ),
}  # fmt: skip


def keep_detection(record: r.Detections, sample: float) -> bool:
    """Deterministic sampling: the same frame is kept or dropped on every run (replay, redo)."""
    if sample >= 1.0:
        return True
    h = zlib.crc32(f"{record.camera_id}:{record.frame_seq}".encode())
    return h < sample * 2**32


def keep_detections(table: pa.Table, sample: float) -> np.ndarray:
    """``keep_detection`` for every row of a detections table (True: keep)."""
    if sample >= 1.0:
        return np.ones(table.num_rows, bool)
    cams, seqs = table["camera_id"].to_pylist(), table["frame_seq"].to_pylist()
    limit = sample * 2**32
    return np.fromiter(
        (zlib.crc32(f"{c}:{s}".encode()) < limit for c, s in zip(cams, seqs, strict=True)), bool, len(cams)
    )


class TableBuffer:
    """Rows of one table for one batch: Arrow pieces from the columnar path, lists from the record path.

    ``seq`` numbers rows in arrival order; when both paths fed one batch, ``to_arrow`` restores that
    order, so the block inserted is the one the record path alone would have built.
    """

    __slots__ = ("_cols", "_seqs", "_table_seqs", "_tables", "rows", "spec")

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self._cols: list[list[Any]] = [[] for _ in spec.names]
        self._seqs: list[int] = []
        self._tables: list[pa.Table] = []
        self._table_seqs: list[np.ndarray] = []
        self.rows = 0

    def add(self, record: Any, partition: int, offset: int, seq: int = -1) -> None:
        values = (*self.spec.row(record), partition, offset)
        for col, value in zip(self._cols, values, strict=True):
            col.append(value)
        self._seqs.append(seq)
        self.rows += 1

    def add_table(self, table: pa.Table, seqs: np.ndarray) -> None:
        """Rows already built as Arrow (``spec.schema``), with their arrival numbers."""
        if table.num_rows:
            self._tables.append(table)
            self._table_seqs.append(seqs)
            self.rows += table.num_rows

    def to_arrow(self) -> pa.Table:
        pieces = list(self._tables)
        if self._seqs or not pieces:
            arrays = [
                pa.array(col, type=field.type)
                for col, field in zip(self._cols, self.spec.schema, strict=True)
            ]
            pieces.append(pa.Table.from_arrays(arrays, schema=self.spec.schema))
        if len(pieces) == 1:
            return pieces[0]
        table = pa.concat_tables(pieces).combine_chunks()
        if self._seqs and self._tables:
            seqs = np.concatenate([*self._table_seqs, np.array(self._seqs, np.int64)])
            order = np.argsort(seqs, kind="stable")
            if (np.diff(order) != 1).any():
                table = table.take(order)
        return table


# --- the columnar path: Kafka values -> Arrow rows without a record object ------------------------
# For the high-volume topics only; every other table, and every record the batch decoder marks bad,
# takes the record path above, so the two paths give identical rows (a unit test compares them).


def _detections_columns(d: Decoded) -> list[pa.Array]:
    cls = d["class_ids"]
    assert cls.counts is not None
    return [
        d.strings("camera_id"),
        pa.array(d.values("capture_ts_ms"), TS),
        pa.array(d.fit(d.values("frame_seq"), np.uint64)),
        pa.array(d.values("processed_ts_ms"), TS),
        pa.array(d.fit(d.values("width"), np.uint16)),
        pa.array(d.fit(d.values("height"), np.uint16)),
        d.strings("model_name"),
        d.strings("model_version"),
        d.symbols("source"),
        pa.array(d.fit(cls.counts, np.uint16)),
        d.lists("class_ids", pa.uint8()),
        d.lists("scores", f32),
        d.lists("boxes", f32),
        d.lists("track_ids", i64),  # null -> [] as ``track_ids or []``
        pa.array(d.values("inference_ms"), f32),
    ]


def _event_columns(d: Decoded) -> list[pa.Array]:
    def optional(path: str, dtype: pa.DataType, fit: Any = None) -> pa.Array:
        values, valid = d.values(path), d.valid(path)
        if fit is not None:
            values = d.fit(np.where(valid, values, 0), fit)
        return pa.array(values, dtype, mask=~valid)

    speed, found = d.map_lookup("measurements", "speed_kmh")
    with np.errstate(over="ignore"):  # a double beyond float32 becomes inf, as pa.array makes it
        speed32 = speed.astype(np.float32)
    ref = pc.binary_join_element_wise(
        d.strings("evidence.frame_ref.topic", None),
        pc.cast(pa.array(d.values("evidence.frame_ref.partition"), i64), _STR),
        pc.cast(pa.array(d.values("evidence.frame_ref.offset"), i64), _STR),
        "/",
    )
    return [
        d.strings("event_id"),
        d.strings("camera_id"),
        d.symbols("event_type"),
        d.symbols("severity"),
        pa.array(d.values("ts_ms"), TS),
        optional("end_ts_ms", TS),
        optional("track_id", i64),
        optional("class_id", pa.uint8(), np.uint8),
        d.strings("lane_id"),
        d.strings("line_id"),
        d.strings("direction"),
        pa.array(d.values("confidence"), f32),
        pa.array(speed32, f32, mask=~found),
        d.maps("measurements", f64),
        d.strings("signal_phase"),
        d.strings("model_version"),
        d.maps("attributes", _STR),
        optional("evidence.frame_seq", pa.uint64(), np.uint64),
        pc.fill_null(ref, ""),
    ]


# Catalogue topic -> its table's columns from a decoded batch (in schema order, without _partition/_offset).
COLUMNAR: dict[str, Callable[[Decoded], list[pa.Array]]] = {
    t.DETECTIONS: _detections_columns,
    t.EVENTS: _event_columns,
}


class ColumnarRows:
    """Kafka values of one topic -> rows of its table, decoded in one batch (see ``schemas.columnar``).

    Values that are not plain Confluent-framed records of the reader's own schema, and records the
    batch decoder or a range check marks bad, are left to the record path (``rest``), which decodes
    them with fastavro and gives today's row or today's dead letter.
    """

    def __init__(self, topic: str, same_schema: Callable[[int], bool]) -> None:
        """``same_schema(id)``: the registry's schema ``id`` is this topic's contract (no resolution)."""
        self.spec = TABLES[topic]
        self.columns = COLUMNAR[topic]
        self.same_schema = same_schema
        self.decoder = BatchDecoder(contracts.parsed(TopicSerde.record_type(topic).AVRO_NAME))

    def build(
        self, values: list[bytes | None], partitions: np.ndarray, offsets: np.ndarray
    ) -> tuple[pa.Table | None, np.ndarray, np.ndarray]:
        """(table, rows: the input index of each table row, rest: input indexes for the record path)."""
        buf, start, end = pack([v or b"" for v in values])
        n = len(values)
        ok = end - start >= 5
        head = buf[np.where(ok, start, 0)[:, None] + np.arange(5)].astype(np.int64)
        ok &= head[:, 0] == 0
        ids = (head[:, 1] << 24) | (head[:, 2] << 16) | (head[:, 3] << 8) | head[:, 4]
        for sid in np.unique(ids[ok]).tolist():
            if not self.same_schema(sid):
                ok &= ids != sid
        rows = np.flatnonzero(ok)
        for _ in range(3):  # a retry drops the bad rows; a third failure leaves all to the record path
            if not rows.size:
                break
            decoded = self.decoder.decode(buf, start[rows] + 5, end[rows])
            table = None
            if not decoded.bad.any():
                arrays = self.columns(decoded)
                if not decoded.bad.any():
                    arrays += [pa.array(partitions[rows], pa.uint16()), pa.array(offsets[rows], i64)]
                    table = pa.Table.from_arrays(arrays, schema=self.spec.schema)
            if table is not None:
                rest = np.setdiff1d(np.arange(n), rows, assume_unique=True)
                return table, rows, rest
            rows = rows[~decoded.bad]
        return None, rows[:0], np.arange(n)


def reader_schema_check(deserializer: AvroDeserializer[Any]) -> Callable[[int], bool]:
    """``same_schema`` for ``ColumnarRows`` from the record path's deserializer and its registry cache."""
    known: dict[int, bool] = {}

    def same(schema_id: int) -> bool:
        if schema_id not in known:
            try:
                # (writer, None) when the writer schema is the reader's contract.
                known[schema_id] = deserializer._writer(schema_id, ("", -1, -1))[1] is None
            except RecordDecodeError:
                return False  # unknown id (for now): the record path names it in the dead letter
        return known[schema_id]

    return same
