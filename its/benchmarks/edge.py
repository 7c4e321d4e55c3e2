"""``its bench edge``: frames/s per core of the edge producer next to its ceiling.

Ours: ``its edge run``'s pipeline in cloud mode (decode every frame, sample 10 fps by capture time,
blur + scene analysis, JPEG encode, Avro, idempotent Kafka produce, acknowledgement) reading a file as
fast as it can. Ceiling (the peer): plain OpenCV ``read()`` of every frame and ``imencode`` of the same
sampled frames, no analysis, no Kafka. Our file source converts only the frames it samples to BGR
(``grab()`` for the others), so a second, stricter ceiling does the same and is reported too.
All are measured as sampled frames per CPU-second of the process (all threads, librdkafka's
included): frames/s per core.

Sources: the 720p clip in the assets (local only, read in place) and a 1080p file made from it by
upscaling into a temporary directory. A third case runs the simulator's load generator (if present):
N simulated cameras at 10 fps of detections and the producer's CPU share.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2

from its.benchmarks.report import BenchReport, Case, machine
from its.settings import Settings
from producers.sampling import Sampler, encode_jpeg

CLIP_720P = Path("video") / "highway_cars_720p.mp4"
PEER = "OpenCV read+imencode, no Kafka (ceiling)"
STRICT_PEER = "OpenCV grab, retrieve sampled only, imencode, no Kafka"


def make_1080p(src: Path, dst: Path, frames: int = 150) -> Path:
    """``frames`` frames of ``src`` upscaled to 1920x1080 (MPEG-4 part 2: every OpenCV build writes it)."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1920, 1080))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v video here")
    n = 0
    while n < frames:
        ok, image = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_LINEAR))
        n += 1
    writer.release()
    cap.release()
    return dst


def ceiling(
    path: Path, sampled: int, fps: float = 10.0, quality: int = 85, *, grab_unsampled: bool = False
) -> tuple[int, float, float]:
    """Plain OpenCV, no Kafka: read every frame (looping), imencode the sampled ones.

    ``grab_unsampled``: the stricter ceiling that, like our file source, only ``grab()``s the frames it
    will not sample (no colour conversion). Returns (frames, cpu_s, wall_s).
    """
    cpu0, t0 = time.process_time(), time.perf_counter()
    sampler = Sampler(fps)
    done = 0
    offset = 0.0
    while done < sampled:
        cap = cv2.VideoCapture(str(path))
        last = 0.0
        while done < sampled:
            if grab_unsampled:
                if not cap.grab():
                    break
                last = cap.get(cv2.CAP_PROP_POS_MSEC)
                if not sampler.accept(offset + last):
                    continue
                ok, image = cap.retrieve()
            else:
                ok, image = cap.read()
                if not ok:
                    break
                last = cap.get(cv2.CAP_PROP_POS_MSEC)
                if not sampler.accept(offset + last):
                    continue
            encode_jpeg(image, quality)
            done += 1
        cap.release()
        offset += last + 1000.0 / 30
    return done, time.process_time() - cpu0, time.perf_counter() - t0


def ours(
    settings: Settings, path: Path, sampled: int, data_dir: Path
) -> tuple[int, float, float, dict[str, Any]]:
    """The edge pipeline on ``path`` until ``sampled`` frames are acknowledged.

    Returns (frames, cpu_s, wall_s, summary)."""
    from producers.edge import CameraConfig, EdgeRunner

    local = settings.model_copy(
        update={
            "data_dir": data_dir,
            "edge": settings.edge.model_copy(update={"metrics_port": 0, "mode": "cloud"}),
        }
    )
    cam = CameraConfig(
        camera_id=f"bench-edge-{uuid.uuid4().hex[:8]}",
        source=str(path),
        loop=True,
        realtime=False,
        max_frames=sampled,
    )
    runner = EdgeRunner(local, [cam], handle_signals=False)
    cpu0, t0 = time.process_time(), time.perf_counter()
    summary = runner.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    published = summary["cameras"][0]["published"]
    if summary["publisher"]["delivered"] < published:
        raise RuntimeError(f"only {summary['publisher']['delivered']} of {published} frames acknowledged")
    return published, cpu, wall, summary


def run(
    settings: Settings, frames: int = 300, sim_cameras: int = 1000, sim_seconds: float = 10.0
) -> BenchReport:
    report = BenchReport("edge", machine())
    clip = settings.assets_path / CLIP_720P
    if not clip.is_file():
        raise FileNotFoundError(f"{clip} is missing (ITS_ASSETS_DIR points at the shared assets)")
    tmp = Path(tempfile.mkdtemp(prefix="its-bench-edge-"))
    try:
        sources = {"720p": clip, "1080p": make_1080p(clip, tmp / "upscaled_1080p.mp4")}
        for name, path in sources.items():
            ceiling(path, 10)  # warm the decoder and the page cache outside the timing
            n_peer, cpu_peer, _ = ceiling(path, frames)
            n_strict, cpu_strict, _ = ceiling(path, frames, grab_unsampled=True)
            n_ours, cpu_ours, wall_ours, _ = ours(settings, path, frames, tmp / f"data-{name}")
            per_core = round(n_ours / cpu_ours, 1)
            case = f"{name} source, 10 fps sampled+encoded+published"
            report.cases += [
                Case(case, "throughput per core", "frames/s/core", per_core, round(n_peer / cpu_peer, 1),
                     PEER, "ratio >= 0.8"),
                Case(f"{case} (vs grab-only ceiling)", "throughput per core", "frames/s/core", per_core,
                     round(n_strict / cpu_strict, 1), STRICT_PEER, "reported"),
                Case(f"{name} source, wall clock (ours)", "throughput", "frames/s",
                     round(n_ours / wall_ours, 1), None, "-", ""),
            ]  # fmt: skip
        report.cases.extend(_simulated(settings, sim_cameras, sim_seconds))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _simulated(settings: Settings, cameras: int, seconds: float) -> list[Case]:
    """N simulated cameras at 10 fps of detections through the simulator's load API (if it exists)."""
    if cameras <= 0:
        return []
    try:
        from producers.simulator.load import run_load
    except ImportError:
        return []
    load = run_load(settings, cameras=cameras, fps=10.0, duration_s=seconds, register=False)
    target = cameras * 10.0
    return [
        Case(
            f"{cameras} simulated cameras at 10 fps (detections)",
            "sustained records/s",
            "records/s",
            load.records_per_s,
            target,
            "target rate",
            "ratio >= 1 (1,000 cameras = 10,000 records/s)",
        ),
        Case(
            f"{cameras} simulated cameras at 10 fps: producer CPU",
            "CPU share",
            "cores",
            load.cpu_share_of_core,
            float(cameras and (load.cpu_share_of_core / max(load.cpu_share_of_machine, 1e-9))),
            "cores on this machine",
            f"behind schedule {load.behind_s} s; {load.delivery_errors} delivery errors",
            higher_is_better=False,
        ),
    ]
