"""`its process analytics`: detections (+ signal phases, camera registrations) -> events, alerts,
traffic statistics, on the transactional runtime.

Exactly-once with state: every batch's outputs, a snapshot of each camera engine the batch touched
(on the compacted changelog ``its.analytics-state.v1``) and the input offsets are committed in one
Kafka transaction. On assignment the processor reads the camera registrations (compacted, all
partitions) and the changelog up to their committed ends, so a restarted or rebalanced instance
continues each camera exactly where the committed outputs stop; outputs carry deterministic ids.

If a transaction aborts, the runtime redoes the batch from its first offsets; the engines it touched
are rolled back to their last committed snapshots first (the handler notices that the runtime's
committed-batch count did not move since the previous call).

Co-partitioning: detections and signals of one camera must reach the same instance; with one instance
that always holds. With several, give the signals topic the detections topic's partition count.
Operator acknowledgements (its.alert-acks.v1) have the detections topic's partition count and key, so
an ack reaches the instance that owns the camera's incidents and is applied in the same transaction
as everything else (its effect is in the camera's snapshot).

Latency: ``its_analytics_capture_to_event_seconds`` and ``its_analytics_capture_to_alert_seconds``
measure from the capture timestamp to the moment the batch's outputs go to the transactional producer
(the commit follows within ``its_stream_batch_seconds``). Records older than an hour are a replay or a
backfill, not live latency, and are not observed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter, Histogram

from its.settings import Settings
from processors.analytics import state as st
from processors.analytics.engine import CameraEngine, Engine, Output
from processors.analytics.scene import SceneError
from processors.runtime import InputRecord, OutputRecord, StreamProcessor, dead_letter
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import (
    ALERT_ACKS,
    ALERTS,
    ANALYTICS_STATE,
    CAMERAS,
    DETECTIONS,
    EVENTS,
    SIGNALS,
    TRAFFIC_STATS,
)
from schemas.validate import ERROR_TYPE as INVALID_RECORD
from schemas.validate import validate_detections, validate_signal

log = logging.getLogger(__name__)
NAME = "analytics"

# Seconds; the seed's targets are sub-second for events, a few seconds for alerts.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
LIVE_LIMIT_S = 3600.0  # older capture times are replays or backfills: not observed as latency
CAPTURE_TO_EVENT = Histogram(
    "its_analytics_capture_to_event_seconds",
    "Capture timestamp of an event to its hand-over to the transactional producer",
    ["event_type"],
    buckets=_LATENCY_BUCKETS,
)
CAPTURE_TO_ALERT = Histogram(
    "its_analytics_capture_to_alert_seconds",
    "Capture timestamp of the evidence frame of an alert revision raised by an event (OPEN, UPDATED) "
    "to its hand-over to the transactional producer",
    ["alert_type"],
    buckets=_LATENCY_BUCKETS,
)
ACKS = Counter(
    "its_analytics_acks",
    "Operator acknowledgements read: applied, ignored (incident not open or already acknowledged), "
    "unknown_camera",
    ["outcome"],
)


def read_compacted(
    settings: Settings, serde: TopicSerde, topic: str, timeout_s: float = 60.0
) -> dict[str, object]:
    """Latest committed record per key of a whole topic (every partition, up to its end now)."""
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"its-{NAME}-bootstrap",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
    )
    latest: dict[str, object] = {}
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions) if topic in meta.topics else []
        ends: dict[int, int] = {}
        for p in parts:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        if not ends:
            return latest
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout_s
        pending = set(ends)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {topic}: {len(pending)} partitions short of their end in {timeout_s} s"
                )
            for msg in consumer.consume(500, 0.2):
                if msg.error():
                    continue
                try:
                    latest[(msg.key() or b"").decode()] = serde.decode(msg)
                except Exception as exc:  # a bad record on a compacted topic must not stop the processor
                    log.warning("undecodable record skipped", extra={"topic": topic, "error": str(exc)})
            # The position passes transaction markers too, so it reaches the end even when the last
            # offset of a partition is a commit marker that is never delivered as a message.
            for tp in consumer.position([TopicPartition(topic, p) for p in sorted(pending)]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
    finally:
        consumer.close()
    return latest


class AnalyticsProcessor:
    """The handler and rebalance callbacks around one ``Engine``."""

    def __init__(
        self, settings: Settings, *, instance_id: str | None = None, metrics_port: int | None = None
    ) -> None:
        self.settings = settings
        cfg = settings.analytics
        self.serde = TopicSerde(settings.schema_registry_url)
        self.engine = Engine(cfg)
        self.registrations: dict[str, r.Camera] = {}
        self.committed: dict[str, bytes] = {}  # camera -> snapshot known committed
        self.in_flight: dict[str, bytes] = {}  # camera -> snapshot of the batch not yet known committed
        self._batches_seen = -1
        self.runtime = StreamProcessor(
            NAME,
            settings,
            inputs=[CAMERAS, SIGNALS, DETECTIONS, ALERT_ACKS],
            group_id=cfg.group_id,
            handle=self.handle,
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            max_batch=cfg.max_batch,
            max_wait_ms=cfg.max_wait_ms,
            metrics_port=cfg.metrics_port if metrics_port is None else metrics_port,
            instance_id=instance_id,
            serde=self.serde,
        )

    def run(self) -> None:
        self.runtime.run()

    # --- rebalances --------------------------------------------------------------------------------

    def on_assign(self, partitions: list[tuple[str, int]]) -> None:
        """Camera registrations and engine snapshots up to their committed ends, before any detection."""
        self.registrations = {
            k: v
            for k, v in read_compacted(self.settings, self.serde, CAMERAS).items()
            if isinstance(v, r.Camera)
        }
        snaps = read_compacted(self.settings, self.serde, ANALYTICS_STATE)
        self.committed = {k: v.state for k, v in snaps.items() if isinstance(v, r.AnalyticsState)}
        self.in_flight = {}
        self.engine = Engine(self.settings.analytics)
        self._batches_seen = self.runtime._committed_batches
        log.info(
            "analytics state loaded",
            extra={"cameras": len(self.registrations), "snapshots": len(self.committed)},
        )

    def on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        # Another instance may own these cameras next: forget everything; assignment reloads.
        self.engine = Engine(self.settings.analytics)
        self.in_flight = {}

    # --- the batch ---------------------------------------------------------------------------------

    def _camera(self, camera_id: str) -> CameraEngine | None:
        eng = self.engine.cameras.get(camera_id)
        if eng is not None:
            return eng
        reg = self.registrations.get(camera_id)
        if reg is None:
            return None
        self.engine.on_camera(reg)
        eng = self.engine.cameras[camera_id]
        blob = self.committed.get(camera_id)
        if blob is not None:
            try:
                eng.load_state(blob)
            except ValueError as exc:
                log.error(
                    "snapshot unusable; camera restarts", extra={"camera_id": camera_id, "error": str(exc)}
                )
        return eng

    def _sync_commits(self) -> None:
        """Promote the previous batch's snapshots if it committed; otherwise roll its cameras back."""
        done = self.runtime._committed_batches
        if done != self._batches_seen:
            self.committed.update(self.in_flight)
        else:
            for cam in self.in_flight:
                self.engine.cameras.pop(cam, None)  # rebuilt from the committed snapshot on next use
        self.in_flight = {}
        self._batches_seen = done

    def handle(self, batch: list[InputRecord]) -> Iterable[OutputRecord]:
        self._sync_commits()
        outputs: list[OutputRecord] = []
        touched: set[str] = set()
        out = Output()
        # Records that decode but are poison (NaN/inverted/out-of-frame boxes, clocks far off) go to the
        # dead-letter topic with their reason instead of into a camera's state (schemas/validate.py).
        now_ms = int(time.time() * 1000)
        limits = self.settings.input_limits
        for inp in batch:
            rec = inp.record
            if isinstance(rec, r.Detections | r.SignalPhase):
                check = validate_detections if isinstance(rec, r.Detections) else validate_signal
                reason = check(rec, now_ms, limits)  # type: ignore[arg-type]
                if reason is not None:
                    payload = self.serde.encode(inp.topic, rec)  # the record as read, for inspection
                    outputs.append(dead_letter(inp, reason, INVALID_RECORD, NAME, payload=payload))
                    continue
            if isinstance(rec, r.Camera):
                try:
                    self.engine.on_camera(rec)  # validates; replaces an existing engine's scene
                except SceneError as exc:
                    outputs.append(dead_letter(inp, str(exc), "SceneError", NAME))
                    continue
                self.registrations[rec.camera_id] = rec
                self.engine.cameras.pop(rec.camera_id, None)
                if self.committed.get(rec.camera_id) is not None or rec.camera_id in touched:
                    # Keep the camera's state across a re-registration where the snapshot still fits.
                    self._camera(rec.camera_id)
            elif isinstance(rec, r.SignalPhase):
                eng = self._camera(rec.camera_id)
                if eng is None:
                    outputs.append(
                        dead_letter(
                            inp, f"signal for unregistered camera {rec.camera_id!r}", "UnknownCamera", NAME
                        )
                    )
                    continue
                eng.on_signal(rec)
                touched.add(rec.camera_id)
            elif isinstance(rec, r.Detections):
                eng = self._camera(rec.camera_id)
                if eng is None:
                    outputs.append(
                        dead_letter(
                            inp,
                            f"detections for unregistered camera {rec.camera_id!r}",
                            "UnknownCamera",
                            NAME,
                        )
                    )
                    continue
                if rec.frame_ref is None:
                    rec.frame_ref = r.FrameRef(inp.topic, inp.partition, inp.offset)
                out.extend(eng.on_detections(rec))
                touched.add(rec.camera_id)
            elif isinstance(rec, r.AlertAck):
                # Not a dead letter when unknown: an ack may name a camera removed since, or an incident
                # another instance resolved; it is an operator's note, not data that failed.
                eng = self._camera(rec.camera_id)
                if eng is None:
                    ACKS.labels("unknown_camera").inc()
                    continue
                acked = eng.alerts.on_ack(rec)
                ACKS.labels("applied" if acked else "ignored").inc()
                if acked:
                    out.alerts.extend(acked)
                    touched.add(rec.camera_id)
        observe_latency(out, time.time())
        outputs += [OutputRecord(EVENTS, e.camera_id, e) for e in out.events]
        outputs += [OutputRecord(ALERTS, a.camera_id, a) for a in out.alerts]
        outputs += [OutputRecord(TRAFFIC_STATS, s.camera_id, s) for s in out.stats]
        for cam in sorted(touched):
            eng = self.engine.cameras[cam]
            blob = eng.to_state()
            self.in_flight[cam] = blob
            outputs.append(
                OutputRecord(ANALYTICS_STATE, cam, r.AnalyticsState(cam, eng.last_ts or 0, st.FORMAT, blob))
            )
        return outputs


def observe_latency(out: Output, now_s: float) -> None:
    """Capture -> event and capture -> alert latencies of one batch's outputs (live records only)."""
    for e in out.events:
        lat = now_s - e.ts_ms / 1000.0
        if 0.0 <= lat <= LIVE_LIMIT_S:
            CAPTURE_TO_EVENT.labels(e.event_type.value).observe(lat)
    for a in out.alerts:
        # Escalations and resolutions are raised by the clock, not by a frame: no capture to measure from.
        if a.status not in (r.AlertStatus.OPEN, r.AlertStatus.UPDATED):
            continue
        ts = a.evidence.capture_ts_ms if a.evidence is not None else a.last_ts_ms
        lat = now_s - ts / 1000.0
        if 0.0 <= lat <= LIVE_LIMIT_S:
            CAPTURE_TO_ALERT.labels(a.alert_type.value).observe(lat)


def build_processor(
    settings: Settings, *, instance_id: str | None = None, metrics_port: int | None = None
) -> AnalyticsProcessor:
    return AnalyticsProcessor(settings, instance_id=instance_id, metrics_port=metrics_port)
