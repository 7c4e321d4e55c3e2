"""The edge process: one capture thread per camera, one shared publisher, heartbeats, metrics.

    runner = EdgeRunner(settings, [CameraConfig(camera_id="cam-1", source="clip.mp4", mode="cloud")])
    summary = runner.run()          # until every finite source ends, SIGTERM, or ``duration_s``

A camera whose source fails (missing file, unreachable URL) is reported (log, heartbeat OFFLINE with
the error, summary) while the other cameras keep running.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from infra.kafka.signing import Signer
from its.service import Service
from its.settings import Settings
from producers import metrics as m
from producers.modes import (
    BandwidthMeter,
    Measurements,
    Thresholds,
    decide,
    local_utilisation,
    measure_rtt_ms,
    parse_mode,
)
from producers.publisher import OutRecord, Publisher
from producers.redact import redact_url
from producers.sampling import KeyframeSelector, Sampler, analyse, encode_jpeg, resize_to_width
from producers.sequence import FrameSequence
from producers.settings import EdgeSettings
from producers.sources import Backoff, Captured, Source, SourceError, open_source
from schemas import records as r
from schemas.serde import TopicSerde, key_bytes
from schemas.topics import DETECTIONS, FRAMES, HEALTH

log = logging.getLogger(__name__)


class CameraConfig(BaseModel):
    """One camera of ``its edge run``; unset fields fall back to the ``edge`` settings section."""

    model_config = ConfigDict(extra="forbid")

    camera_id: str = Field(min_length=1, max_length=128)
    source: str
    mode: str | None = None
    loop: bool = False
    fps: float | None = Field(None, gt=0)
    keyframe_every: int | None = Field(None, ge=1)
    blur_threshold: float | None = Field(None, ge=0)
    resize_width: int | None = Field(None, ge=16)
    jpeg_quality: int | None = Field(None, ge=1, le=100)
    realtime: bool | None = None
    max_frames: int | None = Field(None, ge=1, description="Stop after this many sampled frames")


def load_cameras_file(path: Path) -> list[CameraConfig]:
    """``cameras: [{camera_id, source, mode, ...}, ...]`` from a YAML file."""
    if not path.is_file():
        raise FileNotFoundError(f"camera config {path} is not a file")
    doc = yaml.safe_load(path.read_text()) or {}
    items = doc.get("cameras") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty 'cameras:' list")
    cams = [CameraConfig.model_validate(item) for item in items]
    ids = [c.camera_id for c in cams]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: camera ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return cams


@dataclass(slots=True)
class CameraStats:
    frames_in: int = 0
    sampled: int = 0
    skipped_blur: int = 0
    published: int = 0  # sampled frames whose records were submitted
    keyframes: int = 0
    frames_sent: int = 0  # Frame records submitted
    detections_sent: int = 0
    detect_errors: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    status: str = "starting"  # starting, running, finished, failed, stopped
    error: str | None = None
    mode_history: list[str] = field(default_factory=list)


class DetectorPool:
    """The edge detector, loaded once per process on first use (shared code with the inference processor)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._detect_lock = threading.Lock()
        self._detector: Any = None
        self.error: str | None = None

    def model_path(self) -> Path:
        path = Path(self._settings.edge.model).expanduser()
        if not path.is_absolute() and not path.exists():
            path = self._settings.assets_path / path
        return path

    def get(self) -> Any:
        with self._lock:
            if self._detector is None and self.error is None:
                try:
                    from processors.inference.detector import load_detector

                    path = self.model_path()
                    if not path.is_file():
                        raise FileNotFoundError(f"edge model {path} not found")
                    self._detector = load_detector(str(path), conf=self._settings.edge.conf)
                    log.info(
                        "edge detector loaded",
                        extra={"model": self._detector.name, "version": self._detector.version},
                    )
                except Exception as exc:  # ImportError, missing model, bad ONNX: edge mode is unavailable
                    self.error = f"edge detector unavailable: {exc}"
                    log.error(self.error)
            return self._detector

    def detect(self, image: Any) -> Any:
        """Boxes of one frame. Serialised: the detector reuses one letterbox buffer between calls."""
        detector = self.get()
        with self._detect_lock:
            return detector.detect([image])[0]


class ModeController:
    """The mode each camera runs in; ``auto`` re-decided every ``auto_interval_s`` and logged on change."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        e = settings.edge
        self._settings = settings
        self._publisher = publisher
        self.thresholds = Thresholds(e.auto_latency_ms, e.auto_bandwidth_mbps, e.auto_utilisation)
        self.auto_mode = r.ProcessingMode.CLOUD
        self.reason = "not decided yet"
        self._meter = BandwidthMeter()
        self._next = 0.0

    def measure(self) -> Measurements:
        saturated = (
            len(self._publisher.queue) > 0 or self._publisher.outstanding >= self._publisher.inflight_max
        )
        measured = self._meter.update(self._publisher.stats.acked_bytes, saturated)
        bandwidth = (
            self._settings.edge.uplink_mbps if self._settings.edge.uplink_mbps is not None else measured
        )
        return Measurements(measure_rtt_ms(self._settings.kafka_bootstrap), bandwidth, local_utilisation())

    def maybe_decide(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self._settings.edge.auto_interval_s
        measurements = self.measure()
        mode, reason = decide(measurements, self.thresholds)
        if mode != self.auto_mode or force:
            log.info(
                "auto mode decided",
                extra={
                    "mode": mode.value.lower(),
                    "reason": reason,
                    "latency_ms": measurements.latency_ms,
                    "bandwidth_mbps": measurements.bandwidth_mbps,
                    "utilisation": measurements.utilisation,
                },
            )
        self.auto_mode, self.reason = mode, reason


class CameraWorker:
    """Capture -> sample -> quality -> keyframe -> encode/detect -> submit, on one thread per camera."""

    def __init__(
        self,
        cfg: CameraConfig,
        settings: Settings,
        publisher: Publisher,
        serde: TopicSerde,
        detectors: DetectorPool,
        modes: ModeController,
        producer_id: str,
        stop: threading.Event,
    ) -> None:
        e: EdgeSettings = settings.edge
        self.cfg = cfg
        self.camera_id = cfg.camera_id
        self.mode = parse_mode(cfg.mode or e.mode)
        self.fps = cfg.fps or e.fps
        self.blur_threshold = e.blur_threshold if cfg.blur_threshold is None else cfg.blur_threshold
        self.resize_width = cfg.resize_width or e.resize_width
        self.jpeg_quality = cfg.jpeg_quality or e.jpeg_quality
        self.realtime = e.realtime if cfg.realtime is None else cfg.realtime
        self._settings = settings
        self._publisher = publisher
        self._frame_ser = serde.serializer(FRAMES)
        self._det_ser = serde.serializer(DETECTIONS) if self.mode != r.ProcessingMode.CLOUD else None
        self._serde = serde
        self._detectors = detectors
        self._modes = modes
        self._producer_id = producer_id
        self._key = key_bytes(cfg.camera_id)
        self._stop = stop
        self.sampler = Sampler(self.fps)
        self.keyframes = KeyframeSelector(cfg.keyframe_every or e.keyframe_every, e.scene_change)
        self.seq = FrameSequence(settings.data_path / "edge" / "seq", cfg.camera_id)
        self.stats = CameraStats()
        self.source: Source | None = None
        self.active_mode = self.mode
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"cam-{cfg.camera_id}", daemon=True)
        self._labels = (cfg.camera_id,)
        self._frames_in = m.FRAMES_IN.labels(cfg.camera_id)

    @property
    def source_name(self) -> str:
        return redact_url(self.cfg.source)

    def current_mode(self) -> r.ProcessingMode:
        mode = self._modes.auto_mode if self.mode == r.ProcessingMode.AUTO else self.mode
        if mode in (r.ProcessingMode.EDGE, r.ProcessingMode.HYBRID) and self._detectors.get() is None:
            mode = r.ProcessingMode.CLOUD  # no detector: frames still reach central inference
        if mode != self.active_mode or not self.stats.mode_history:
            self.stats.mode_history.append(mode.value)
            for known in (r.ProcessingMode.CLOUD, r.ProcessingMode.EDGE, r.ProcessingMode.HYBRID):
                m.MODE.labels(self.camera_id, known.value.lower()).set(1 if known == mode else 0)
            self.active_mode = mode
        return mode

    def _run(self) -> None:
        e = self._settings.edge
        try:
            self.source = open_source(
                self.cfg.source,
                loop=self.cfg.loop,
                realtime=self.realtime,
                folder_fps=e.folder_fps,
                open_timeout_s=e.open_timeout_s,
                backoff=Backoff(e.reconnect_initial_s, e.reconnect_max_s, e.reconnect_jitter),
            )
            self.stats.status = "running"
            log.info(
                "camera started",
                extra={
                    "camera_id": self.camera_id,
                    "source": self.source.name,
                    "mode": self.mode.value.lower(),
                    "fps": self.fps,
                },
            )
            filters = self.source.filters
            for cap in self.source.frames(self._stop, self._want):
                if not filters and not self._want(cap.ts_ms):
                    continue
                self._process(cap)
                if self.cfg.max_frames and self.stats.sampled >= self.cfg.max_frames:
                    break
            self.stats.status = "stopped" if self._stop.is_set() else "finished"
        except SourceError as exc:
            self.stats.status, self.stats.error = "failed", str(exc)
            log.error("camera source failed", extra={"camera_id": self.camera_id, "error": str(exc)})
        except Exception as exc:  # a bug in one camera must not take the others down
            self.stats.status, self.stats.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("camera crashed", extra={"camera_id": self.camera_id})
        finally:
            if self.source is not None:
                self.source.close()
                m.CONNECTED.labels(self.camera_id).set(0)
            self.seq.close()
            log.info(
                "camera ended",
                extra={
                    "camera_id": self.camera_id,
                    "status": self.stats.status,
                    "sampled": self.stats.sampled,
                    "published": self.stats.published,
                },
            )

    def _want(self, ts_ms: int) -> bool:
        """Every decoded frame passes here: counted, and kept if the sampler takes it."""
        self.stats.frames_in += 1
        self._frames_in.inc()
        return self.sampler.accept(ts_ms)

    def _process(self, cap: Captured) -> None:
        st = self.stats
        st.sampled += 1
        m.FRAMES_SAMPLED.labels(*self._labels).inc()
        t0 = time.perf_counter()
        a = analyse(cap.image)
        if self.blur_threshold and a.blur_score < self.blur_threshold:
            st.skipped_blur += 1
            m.FRAMES_SKIPPED.labels(self.camera_id, "blur").inc()
            return
        image = resize_to_width(cap.image, self.resize_width)
        keyframe = self.keyframes.is_keyframe(a.thumb)
        mode = self.current_mode()
        seq = self.seq.next()
        h, w = image.shape[:2]
        if keyframe:
            st.keyframes += 1
            m.KEYFRAMES.labels(*self._labels).inc()
        if mode in (r.ProcessingMode.CLOUD, r.ProcessingMode.HYBRID) or keyframe:
            frame = r.Frame(
                camera_id=self.camera_id,
                frame_seq=seq,
                capture_ts_ms=cap.ts_ms,
                width=w,
                height=h,
                is_keyframe=keyframe,
                jpeg=encode_jpeg(image, self.jpeg_quality),
                blur_score=round(a.blur_score, 3),
                producer_id=self._producer_id,
            )
            m.ENCODE_SECONDS.labels(*self._labels).observe(time.perf_counter() - t0)
            self._publisher.submit(
                OutRecord(FRAMES, self._key, self._frame_ser(frame), self.camera_id, not keyframe, seq)
            )
            st.frames_sent += 1
        if mode in (r.ProcessingMode.EDGE, r.ProcessingMode.HYBRID):
            self._detect(image, seq, cap.ts_ms, w, h)
        st.published += 1
        st.first_seq = seq if st.first_seq is None else st.first_seq
        st.last_seq = seq

    def _detect(self, image: Any, seq: int, ts_ms: int, w: int, h: int) -> None:
        detector = self._detectors.get()
        if self._det_ser is None:
            self._det_ser = self._serde.serializer(DETECTIONS)
        t0 = time.perf_counter()
        try:
            boxes = self._detectors.detect(image)
        except Exception as exc:  # one bad frame must not stop the camera
            self.stats.detect_errors += 1
            log.error("edge detection failed", extra={"camera_id": self.camera_id, "error": repr(exc)})
            return
        elapsed = time.perf_counter() - t0
        m.DETECT_SECONDS.labels(*self._labels).observe(elapsed)
        record = r.Detections(
            camera_id=self.camera_id,
            frame_seq=seq,
            capture_ts_ms=ts_ms,
            width=w,
            height=h,
            model_name=detector.name,
            model_version=detector.version,
            source=r.DetectionSource.EDGE,
            inference_ms=round(elapsed * 1000, 3),
            processed_ts_ms=time.time_ns() // 1_000_000,
            **boxes.record_columns(),
        )
        self._publisher.submit(
            OutRecord(DETECTIONS, self._key, self._det_ser(record), self.camera_id, False, seq)
        )
        self.stats.detections_sent += 1

    def summary(self) -> dict[str, Any]:
        st = self.stats
        src = self.source.stats if self.source is not None else None
        return {
            "camera_id": self.camera_id,
            "source": self.source_name,
            "mode": self.mode.value.lower(),
            "modes_used": [x.lower() for x in st.mode_history],
            "status": st.status,
            "error": st.error,
            "frames_in": st.frames_in,
            "sampled": st.sampled,
            "skipped_blur": st.skipped_blur,
            "published": st.published,
            "frames_sent": st.frames_sent,
            "detections_sent": st.detections_sent,
            "keyframes": st.keyframes,
            "first_seq": st.first_seq,
            "last_seq": st.last_seq,
            "dropped": self._publisher.dropped_for(self.camera_id),
            "decode_errors": src.decode_errors if src else 0,
            "reconnects": src.reconnects if src else 0,
            "source_errors": list(src.errors) if src else [],
        }


class EdgeRunner:
    """All cameras of one edge process, their publisher, heartbeats and the metrics/health endpoint."""

    def __init__(
        self,
        settings: Settings,
        cameras: list[CameraConfig],
        *,
        metrics_port: int | None = None,
        duration_s: float | None = None,
        handle_signals: bool = True,
    ) -> None:
        if not cameras:
            raise ValueError("no cameras to run")
        self.settings = settings
        e = settings.edge
        self.producer_id = e.producer_id or socket.gethostname()
        self.duration_s = duration_s
        self.metrics_port = e.metrics_port if metrics_port is None else metrics_port
        self.handle_signals = handle_signals
        self.serde = TopicSerde(settings.schema_registry_url)
        for topic in (FRAMES, DETECTIONS, HEALTH):
            self.serde.serializer(topic)  # registered now: a registry outage later cannot stop publishing
        self.publisher = Publisher(
            settings.kafka_config(),
            e.spool_dir or settings.data_path / "edge" / "spool",
            queue_max_records=e.queue_max_records,
            queue_max_bytes=e.queue_max_bytes,
            inflight_max=e.inflight_max,
            spool_max_bytes=e.spool_max_bytes,
            spool_after_s=e.spool_after_s,
            detections_compression=e.detections_compression,
            signer=Signer.from_settings(settings),
        )
        self.stop_event = threading.Event()
        self.detectors = DetectorPool(settings)
        self.modes = ModeController(settings, self.publisher)
        self.workers = [
            CameraWorker(c, settings, self.publisher, self.serde, self.detectors, self.modes,
                         self.producer_id, self.stop_event)
            for c in cameras
        ]  # fmt: skip
        self._last_beat: dict[str, tuple[float, int, int]] = {}
        self._synced: dict[str, tuple[int, int]] = {}
        self.service: Service | None = None

    def health(self) -> tuple[bool, dict[str, Any]]:
        ok, pub = self.publisher.healthy()
        cams = {w.camera_id: w.stats.status for w in self.workers}
        running = any(s in ("running", "starting", "finished") for s in cams.values())
        return ok and running, {"publisher": pub, "cameras": cams}

    def heartbeat(self) -> None:
        """One its.health.v1 record per camera: rates since the last beat, counters, queue, spool."""
        now = time.monotonic()
        ser = self.serde.serializer(HEALTH)
        for w in self.workers:
            src = w.source.stats if w.source is not None else None
            last_t, last_in, last_out = self._last_beat.get(w.camera_id, (w.started, 0, 0))
            dt = max(now - last_t, 1e-6)
            fps_in = (w.stats.frames_in - last_in) / dt
            fps_out = (w.stats.published - last_out) / dt
            self._last_beat[w.camera_id] = (now, w.stats.frames_in, w.stats.published)
            if src is not None:
                m.CONNECTED.labels(w.camera_id).set(1 if src.connected else 0)
                # Sources count on their own threads; the metrics catch up here, once per beat.
                seen_r, seen_d = self._synced.get(w.camera_id, (0, 0))
                m.RECONNECTS.labels(w.camera_id).inc(max(0, src.reconnects - seen_r))
                m.DECODE_ERRORS.labels(w.camera_id).inc(max(0, src.decode_errors - seen_d))
                self._synced[w.camera_id] = (max(seen_r, src.reconnects), max(seen_d, src.decode_errors))
            if w.stats.status == "failed" or (w.source is not None and w.source.live and not src.connected):
                status = r.HealthStatus.OFFLINE
            elif self.publisher.spooling or (src is not None and src.decode_errors):
                status = r.HealthStatus.DEGRADED
            else:
                status = r.HealthStatus.ONLINE
            record = r.Health(
                camera_id=w.camera_id,
                ts_ms=time.time_ns() // 1_000_000,
                mode=w.active_mode,
                status=status,
                producer_id=self.producer_id,
                fps_in=round(fps_in, 3),
                fps_out=round(fps_out, 3),
                frames_dropped=self.publisher.dropped_for(w.camera_id) + (src.stale_dropped if src else 0),
                frames_skipped_blur=w.stats.skipped_blur,
                decode_errors=src.decode_errors if src else 0,
                reconnects=src.reconnects if src else 0,
                queue_depth=len(self.publisher.queue),
                spool_bytes=self.publisher.spool.bytes,
                uptime_s=round(now - w.started, 3),
                last_error=w.stats.error or (src.last_error if src else None),
            )
            self.publisher.submit(OutRecord(HEALTH, key_bytes(w.camera_id), ser(record), w.camera_id))

    def run(self) -> dict[str, Any]:
        """Run until all finite sources end, a stop signal, or ``duration_s``; returns the summary."""
        e = self.settings.edge
        started = time.monotonic()
        if any(w.mode == r.ProcessingMode.AUTO for w in self.workers):
            self.modes.maybe_decide(force=True)
        with Service(
            "edge", port=self.metrics_port, health=self.health, handle_signals=self.handle_signals
        ) as svc:
            self.service = svc
            self.publisher.start()
            for w in self.workers:
                w.thread.start()
            next_beat = time.monotonic() + e.health_interval_s
            try:
                while not svc.stopping:
                    if not any(w.thread.is_alive() for w in self.workers):
                        break
                    if self.duration_s is not None and time.monotonic() - started >= self.duration_s:
                        break
                    if any(w.mode == r.ProcessingMode.AUTO for w in self.workers):
                        self.modes.maybe_decide()
                    if time.monotonic() >= next_beat:
                        try:
                            self.heartbeat()
                        except Exception:  # a heartbeat bug must not stop the cameras
                            log.exception("heartbeat failed")
                        next_beat += e.health_interval_s
                    svc.wait(0.2)
            finally:
                self.stop_event.set()
                for w in self.workers:
                    w.thread.join(timeout=e.open_timeout_s + 5)
                try:
                    self.heartbeat()  # the final state of every camera, errors included
                finally:
                    publisher = self.publisher.close(e.flush_timeout_s)
        cameras = [w.summary() for w in self.workers]
        return {
            "producer_id": self.producer_id,
            "publisher": publisher,
            "cameras": cameras,
            "seconds": round(time.monotonic() - started, 3),
        }
