"""``its process inference``: frames (``its.frames.v1``) -> detections (``its.detections.v1``), exactly once.

The runtime (``processors.runtime.StreamProcessor``) hands over up to ``max_batch`` frames from any
cameras, collected for at most ``max_wait_ms``; this handler decodes the JPEGs (threads: OpenCV
releases the GIL), groups frames by the model version their camera uses (canary rollout), runs one
batched detector call per group and splits the boxes back per frame. An undecodable JPEG becomes a
dead letter; the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from its.settings import Settings
from processors.inference.detector import Detector, file_sha256, load_detector, resolve_model_path
from processors.inference.registry import ModelRegistry, choose
from processors.runtime import InputRecord, OutputRecord, StreamProcessor, dead_letter
from schemas.records import Detections, DetectionSource, Frame, FrameRef, ModelEntry
from schemas.topics import DETECTIONS, FRAMES
from schemas.validate import DEFAULT_LIMITS, jpeg_size, validate_frame
from schemas.validate import ERROR_TYPE as INVALID_RECORD

log = logging.getLogger(__name__)

_MS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH = Histogram(
    "its_inference_batch_size", "Frames per forward pass", buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128)
)
QUEUE_WAIT = Histogram(
    "its_inference_queue_wait_seconds", "Frame produce time (Kafka timestamp) to batch start", buckets=_MS
)
STAGE = Histogram("its_inference_stage_seconds", "Time per batch and stage", ["stage"], buckets=_MS)
FRAMES_DONE = Counter("its_inference_frames", "Frames run through a model", ["model", "version"])
OBJECTS = Counter("its_inference_detections", "Boxes output", ["model", "version"])
BAD_FRAMES = Counter("its_inference_bad_frames", "Frames sent to the dead-letter topic", ["reason"])
FPS = Gauge("its_inference_frames_per_second", "Frames/s over the last batches")


class FrameDecodeError(ValueError):
    """The frame's JPEG bytes do not decode to an image."""


def decode_jpeg(data: bytes, max_pixels: int = DEFAULT_LIMITS.max_pixels) -> np.ndarray:
    """JPEG bytes -> BGR uint8 HxWx3 (raises ``FrameDecodeError``)."""
    if not data:
        raise FrameDecodeError("empty JPEG payload")
    # imdecode also sniffs PNG, TIFF, WebP...: only a JPEG whose frame header we can read (and so
    # size-check before any pixel is allocated) reaches it. Found by tests/fuzz (decompression bombs).
    size = jpeg_size(data)
    if size is None:
        raise FrameDecodeError(f"undecodable JPEG ({len(data)} bytes): no JPEG frame header")
    if size[0] * size[1] > max_pixels:
        raise FrameDecodeError(
            f"JPEG header's image {size[0]}x{size[1]} is oversized (limit {max_pixels} pixels)"
        )
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise FrameDecodeError(f"undecodable JPEG ({len(data)} bytes)")
    return img


class ModelRouter:
    """Which detector each camera uses: the registry's stable/canary choice, else the configured model."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        cfg = settings.inference
        self.settings = settings
        self.registry = registry
        self.refresh_s = cfg.registry_refresh_s
        self._last_refresh = 0.0
        self._detectors: dict[tuple[str, str], Detector] = {}
        path = resolve_model_path(cfg.model, settings.assets_path)
        self.default = self._load(path, cfg.model_name, cfg.model_version)
        self.model_name = self.default.name
        self.entries: dict[tuple[str, str], ModelEntry] = {}

    def _load(self, path: str | Path, name: str | None, version: str | None) -> Detector:
        cfg = self.settings.inference
        det = load_detector(
            path,
            conf=cfg.conf,
            iou=cfg.iou,
            classes=cfg.classes,
            providers=cfg.providers,
            name=name,
            version=version,
            intra_op_threads=cfg.intra_op_threads,
        )
        self._detectors[(det.name, det.version)] = det
        return det

    def refresh(self, force: bool = False) -> None:
        """Re-read the registry (every ``refresh_s``); load versions that became stable or canary."""
        if self.registry is None or (not force and time.monotonic() - self._last_refresh < self.refresh_s):
            return
        self._last_refresh = time.monotonic()
        try:
            self.entries = dict(self.registry.refresh(timeout=5))
        except Exception as exc:  # the registry being unreachable must not stop inference
            log.warning("model registry refresh failed", extra={"error": repr(exc)})
            return
        for entry in self.entries.values():
            if entry.name != self.model_name or entry.stage.value not in ("STABLE", "CANARY"):
                continue
            key = (entry.name, entry.version)
            if key in self._detectors:
                continue
            try:
                if file_sha256(entry.path) != entry.sha256:
                    raise ValueError(f"checksum of {entry.path} differs from the registry's")
                self._load(entry.path, entry.name, entry.version)
                log.info("model version loaded", extra={"model": entry.name, "version": entry.version})
            except Exception as exc:
                log.error(
                    "cannot load registered model",
                    extra={"model": entry.name, "version": entry.version, "error": repr(exc)},
                )

    def detector_for(self, camera_id: str) -> Detector:
        entry = choose(self.entries, self.model_name, camera_id) if self.entries else None
        if entry is not None:
            det = self._detectors.get((entry.name, entry.version))
            if det is not None:
                return det
        return self.default


class InferenceHandler:
    """The per-batch work of the processor (usable without Kafka, e.g. in benchmarks)."""

    def __init__(self, router: ModelRouter, *, component: str = "inference", decode_threads: int = 0) -> None:
        self.router = router
        self.component = component
        threads = decode_threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="jpeg") if threads > 1 else None
        self._window: list[tuple[float, int]] = []

    def _decode_all(self, frames: list[Frame]) -> list[np.ndarray | Exception]:
        def one(f: Frame) -> np.ndarray | Exception:
            try:
                return decode_jpeg(f.jpeg)
            except FrameDecodeError as exc:
                return exc

        if self._pool is None or len(frames) < 4:
            return [one(f) for f in frames]
        return list(self._pool.map(one, frames))

    def __call__(self, batch: list[InputRecord]) -> Iterator[OutputRecord]:
        start = time.perf_counter()
        now_ms = time.time() * 1000
        self.router.refresh()
        for inp in batch:
            if inp.timestamp_ms > 0:
                QUEUE_WAIT.observe(max(now_ms - inp.timestamp_ms, 0) / 1000)
        # Hostile or broken frames (oversized, decompression-bomb headers, clocks far off) never reach the
        # decoder: each goes to the dead-letter topic with its reason (schemas/validate.py).
        limits = self.router.settings.input_limits
        valid: list[InputRecord] = []
        for inp in batch:
            reason = validate_frame(inp.record, int(now_ms), limits)
            if reason is None:
                valid.append(inp)
            else:
                BAD_FRAMES.labels("invalid_frame").inc()
                yield dead_letter(inp, reason, INVALID_RECORD, self.component, payload=inp.record.jpeg)
        batch = valid
        frames: list[Frame] = [inp.record for inp in batch]
        images = self._decode_all(frames)
        t_decoded = time.perf_counter()
        STAGE.labels("decode").observe(t_decoded - start)

        groups: dict[int, list[int]] = defaultdict(list)
        detectors: dict[int, Detector] = {}
        for i, (inp, img) in enumerate(zip(batch, images, strict=True)):
            if isinstance(img, Exception):
                BAD_FRAMES.labels("undecodable_jpeg").inc()
                yield dead_letter(inp, str(img), type(img).__name__, self.component, payload=frames[i].jpeg)
                continue
            det = self.router.detector_for(frames[i].camera_id)
            detectors[id(det)] = det
            groups[id(det)].append(i)

        for key, idx in groups.items():
            det = detectors[key]
            BATCH.observe(len(idx))
            t0 = time.perf_counter()
            results = det.detect([images[i] for i in idx])  # type: ignore[misc]
            elapsed = time.perf_counter() - t0
            timings = getattr(det, "last_timings", None) or {"infer_ms": elapsed * 1000}
            for stage in ("pre", "infer", "post"):
                if f"{stage}_ms" in timings:
                    STAGE.labels(stage).observe(timings[f"{stage}_ms"] / 1000)
            per_frame_ms = timings.get("infer_ms", elapsed * 1000) / len(idx)
            FRAMES_DONE.labels(det.name, det.version).inc(len(idx))
            processed = int(time.time() * 1000)
            for i, boxes in zip(idx, results, strict=True):
                f, inp, img = frames[i], batch[i], images[i]
                OBJECTS.labels(det.name, det.version).inc(len(boxes))
                yield OutputRecord(
                    DETECTIONS,
                    f.camera_id,
                    Detections(
                        camera_id=f.camera_id,
                        frame_seq=f.frame_seq,
                        capture_ts_ms=f.capture_ts_ms,
                        width=int(img.shape[1]),  # type: ignore[union-attr]
                        height=int(img.shape[0]),  # type: ignore[union-attr]
                        model_name=det.name,
                        model_version=det.version,
                        source=DetectionSource.CLOUD,
                        frame_ref=FrameRef(inp.topic, inp.partition, inp.offset),
                        inference_ms=round(per_frame_ms, 3),
                        processed_ts_ms=processed,
                        **boxes.record_columns(),  # type: ignore[arg-type]
                    ),
                )
        self._rate(len(batch), time.perf_counter() - start)

    def _rate(self, n: int, seconds: float) -> None:
        now = time.monotonic()
        self._window = [(t, k) for t, k in self._window if now - t < 10] + [(now, n)]
        span = max(now - self._window[0][0], seconds, 1e-3)
        FPS.set(sum(k for _, k in self._window) / span)


def build_processor(
    settings: Settings,
    *,
    instance_id: str | None = None,
    metrics_port: int | None = None,
    handle_signals: bool = True,
) -> StreamProcessor:
    """The inference processor with its settings, model router and (optionally) the registry."""
    cfg = settings.inference
    registry = ModelRegistry(settings) if cfg.use_registry else None
    router = ModelRouter(settings, registry)
    router.refresh(force=True)
    handler = InferenceHandler(router)
    return StreamProcessor(
        "inference",
        settings,
        inputs=[FRAMES],
        group_id=cfg.group_id,
        handle=handler,
        max_batch=cfg.max_batch,
        max_wait_ms=cfg.max_wait_ms,
        metrics_port=cfg.metrics_port if metrics_port is None else metrics_port,
        instance_id=instance_id or cfg.instance_id,
        max_in_flight=cfg.max_in_flight,
        handle_signals=handle_signals,
    )
