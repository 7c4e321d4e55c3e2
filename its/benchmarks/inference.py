"""``its bench inference``: JPEG bytes -> boxes on CPU, our batched path next to a naive per-frame loop.

Ours is the processor's handler path without Kafka: a batch of JPEGs decoded on a thread pool,
letterboxed into one reusable buffer, one detector call (one forward pass where the model's batch
dimension is dynamic; the shipped models are fixed batch-1 exports, so ONNX Runtime runs per image
on the batched tensor), vectorised decode + NMS. The peer is the loop everyone writes first:
``imdecode`` -> ``detect([img])`` per frame, same model, same session options, same frames.

Latency is per frame: the time from its batch's start to its boxes (a frame waits for its batch).
``ultralytics`` predict on the same ONNX file is reported where ultralytics (and torch) import.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from its.benchmarks.report import BenchReport, Case, machine
from processors.inference.detector import OnnxDetector, load_detector
from processors.inference.processor import decode_jpeg

MODELS = ("yolox_nano_coco_416", "yolov8n_coco_int8_640")
BATCHES = (1, 8, 32)
NAIVE = "naive per-frame loop (same model)"
CLIPS = ("video/highway_cars_720p.mp4", "video/intel_car-detection.mp4")


def load_jpegs(assets: Path, n: int) -> list[bytes]:
    """``n`` JPEG-encoded frames of a traffic clip from the assets directory (read, never copied)."""
    for clip in CLIPS:
        path = assets / clip
        if not path.is_file():
            continue
        cap = cv2.VideoCapture(str(path))
        out: list[bytes] = []
        while len(out) < n:
            ok, frame = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
        cap.release()
        return out
    raise FileNotFoundError(f"no benchmark clip under {assets} (looked for {CLIPS})")


def _percentiles(latencies_s: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(latencies_s) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def run_batched(
    det: OnnxDetector, jpegs: list[bytes], batch: int, pool: ThreadPoolExecutor
) -> tuple[float, list[float]]:
    """Frames/s and per-frame latencies (s) of our path at ``batch``."""
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(0, len(jpegs), batch):
        chunk = jpegs[i : i + batch]
        t0 = time.perf_counter()
        images = list(pool.map(decode_jpeg, chunk)) if len(chunk) > 1 else [decode_jpeg(chunk[0])]
        det.detect(images)
        latencies += [time.perf_counter() - t0] * len(chunk)
    return len(jpegs) / (time.perf_counter() - start), latencies


def run_naive(det: OnnxDetector, jpegs: list[bytes]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    start = time.perf_counter()
    for jpeg in jpegs:
        t0 = time.perf_counter()
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        det.detect([img])
        latencies.append(time.perf_counter() - t0)
    return len(jpegs) / (time.perf_counter() - start), latencies


def ultralytics_peer(model_path: Path, jpegs: list[bytes], imgsz: int) -> tuple[float | None, str]:
    """Frames/s of ultralytics predict on the same ONNX file, or None and why not."""
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        return None, f"ultralytics predict: not installable here ({exc.msg}; needs torch)"
    model = YOLO(str(model_path), task="detect")
    images = [decode_jpeg(j) for j in jpegs]
    model.predict(images[:1], imgsz=imgsz, verbose=False)
    start = time.perf_counter()
    for img in images:
        model.predict(img, imgsz=imgsz, conf=0.25, iou=0.45, verbose=False)
    return len(images) / (time.perf_counter() - start), "ultralytics predict (same ONNX)"


def run(
    assets: Path,
    frames: int = 32,
    models: Sequence[str] = MODELS,
    batches: Sequence[int] = BATCHES,
    threads: int = 0,
) -> BenchReport:
    report = BenchReport("inference", machine())
    jpegs = load_jpegs(assets, frames)
    pool = ThreadPoolExecutor(4, thread_name_prefix="bench-jpeg")
    try:
        for name in models:
            path = assets / "models" / f"{name}.onnx"
            det = load_detector(path, intra_op_threads=threads)
            assert isinstance(det, OnnxDetector)
            det.detect([decode_jpeg(jpegs[0])])  # warm-up
            for batch in batches:
                # Paired runs (naive, then ours, on the same frames): load from other processes on a
                # shared machine drifts, so each ratio compares neighbours in time.
                naive_fps, naive_lat = run_naive(det, jpegs)
                fps, lat = run_batched(det, jpegs, batch, pool)
                p50, p99 = _percentiles(lat)
                n50, n99 = _percentiles(naive_lat)
                label = f"{name} batch {batch}"
                report.cases += [
                    Case(
                        label,
                        "throughput",
                        "frames/s",
                        round(fps, 2),
                        round(naive_fps, 2),
                        NAIVE,
                        "ratio >= 1",
                    ),
                    Case(
                        label,
                        "latency p50",
                        "ms",
                        round(p50, 1),
                        round(n50, 1),
                        NAIVE,
                        "< 30 ms on GPU",
                        False,
                    ),
                    Case(label, "latency p99", "ms", round(p99, 1), round(n99, 1), NAIVE, "", False),
                ]
            peer_fps, why = ultralytics_peer(path, jpegs[:16], det.input_size[0])
            best = max(c.ours for c in report.cases if c.case.startswith(name) and c.metric == "throughput")
            report.cases.append(
                Case(
                    f"{name} best batch", "throughput", "frames/s", best, peer_fps and round(peer_fps, 2), why
                )
            )
    finally:
        pool.shutdown()
    return report
