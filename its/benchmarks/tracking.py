"""Tracking benchmarks: our tracker next to ``trackers``' ByteTrack on the same detections.

``quality``: a MOT sequence's ground truth made into detections by the simulator's noise model
(jitter, ~10 % temporally correlated misses, false positives, realistic scores), tracked by both,
scored with ``trackers``' own TrackEval-parity metrics (MOTA, IDF1, HOTA).

``throughput``: detection frames per second on one core with 20 objects a frame, ours through
tracking + measurements + rules + windows (the whole per-frame engine), the peer through tracking alone.

``trackers`` is an optional extra (``pip install -e .[bench]``); without it each case reports the
peer as missing instead of failing.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from its.benchmarks.report import BenchReport, Case, machine
from processors.analytics.engine import CameraEngine
from processors.analytics.scene import SceneModel
from processors.analytics.settings import AnalyticsSettings
from processors.analytics.tracker import GroundMap, Tracker, TrackerParams
from schemas import records as r
from schemas.boxes import Boxes

PEER = "trackers ByteTrack 2.6.1"
MISSING = "trackers not installed: pip install -e '.[bench]' (see README)"


def _peer_available() -> bool:
    try:
        import trackers  # noqa: F401
    except ImportError:
        return False
    return True


# --- quality --------------------------------------------------------------------------------------


def noisy_sequence(gt: Path, seed: int = 0) -> tuple[list[Boxes], tuple[int, int]]:
    from producers.simulator.noise import apply_noise, read_mot_gt

    frames, size = read_mot_gt(gt)
    return apply_noise(frames, np.random.default_rng(seed), "default", image_size=size), size


def _write_mot(path: Path, rows: list[tuple[int, int, np.ndarray]]) -> None:
    with path.open("w") as f:
        for frame, tid, b in rows:
            f.write(f"{frame},{tid},{b[0]:.2f},{b[1]:.2f},{b[2] - b[0]:.2f},{b[3] - b[1]:.2f},1,-1,-1,-1\n")


def track_ours(frames: list[Boxes], fps: float, size: tuple[int, int]) -> list[tuple[int, int, np.ndarray]]:
    tr = Tracker(TrackerParams())
    out = []
    for k, b in enumerate(frames):
        ts = round(k * 1000 / fps)
        dead = tr.update(ts, b.xyxy.astype(np.float64), b.score.astype(np.float64), b.class_id, size)
        tr.keep(~dead)
        m = np.nonzero((tr["det"] >= 0) & (tr["id"] >= 0))[0]
        for i in m:
            out.append((k + 1, int(tr["id"][i]), b.xyxy[tr["det"][i]]))
    return out


def track_peer(frames: list[Boxes], fps: float) -> list[tuple[int, int, np.ndarray]]:
    import supervision as sv
    from trackers import ByteTrackTracker

    bt = ByteTrackTracker(frame_rate=fps)
    out = []
    for k, b in enumerate(frames):
        det = sv.Detections(xyxy=b.xyxy.astype(np.float32), confidence=b.score, class_id=b.class_id)
        res = bt.update(det)
        for box, tid in zip(res.xyxy, res.tracker_id, strict=True):
            if tid >= 0:
                out.append((k + 1, int(tid), box))
    return out


def _mot17_gt(gt: Path, workdir: Path) -> Path:
    """The ground truth with MOT17 columns: MOT15 files (TUD-Campus) put -1 where MOT17 has class 1
    (pedestrian) and visibility, and the TrackEval-parity scorer keeps only class-1 rows."""
    rows = np.loadtxt(gt, delimiter=",", ndmin=2)
    if rows.shape[1] < 9:
        rows = np.concatenate([rows, -np.ones((len(rows), 9 - rows.shape[1]))], axis=1)
    rows[rows[:, 7] < 0, 7] = 1
    rows[rows[:, 8] < 0, 8] = 1
    out = workdir / "gt.txt"
    np.savetxt(
        out, rows[:, :9], delimiter=",", fmt=["%d", "%d", "%.2f", "%.2f", "%.2f", "%.2f", "%d", "%d", "%.2f"]
    )
    return out


def _metrics(gt: Path, rows: list[tuple[int, int, np.ndarray]], workdir: Path, name: str) -> dict[str, float]:
    from trackers.eval import evaluate_mot_sequence

    path = workdir / f"{name}.txt"
    _write_mot(path, rows)
    res = evaluate_mot_sequence(gt, path, metrics=["CLEAR", "HOTA", "Identity"])
    return {
        "MOTA": float(res.CLEAR.MOTA),
        "IDF1": float(res.Identity.IDF1),
        "HOTA": float(res.HOTA.HOTA),
        "IDSW": float(res.CLEAR.IDSW),
    }


def quality(sequence: Path, fps: float = 25.0, seed: int = 0) -> BenchReport:
    """MOTA / IDF1 / HOTA of ours and the peer on one MOT sequence (``DIR/gt.txt`` or ``DIR/gt/gt.txt``)."""
    gt = sequence / "gt.txt" if (sequence / "gt.txt").is_file() else sequence / "gt" / "gt.txt"
    if not gt.is_file():
        raise FileNotFoundError(f"no gt.txt in {sequence}")
    frames, size = noisy_sequence(gt, seed)
    report = BenchReport("tracking-quality", machine())
    peer_ok = _peer_available()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not peer_ok:
            # The metrics come from the same optional package: without it there is nothing to score with.
            for metric in ("MOTA", "IDF1", "HOTA"):
                report.cases.append(
                    Case(f"{sequence.name} {metric}", metric, "ratio", float("nan"), None, MISSING)
                )
            return report
        gt_eval = _mot17_gt(gt, work)
        ours = _metrics(gt_eval, track_ours(frames, fps, size), work, "ours")
        peer = _metrics(gt_eval, track_peer(frames, fps), work, "peer")
    for metric in ("MOTA", "IDF1", "HOTA"):
        report.cases.append(
            Case(
                f"{sequence.name} noisy GT detections",
                metric,
                "ratio",
                round(ours[metric], 4),
                round(peer[metric], 4),
                PEER,
                target="ours >= peer",
            )
        )
    report.cases.append(
        Case(
            f"{sequence.name} noisy GT detections",
            "IDSW",
            "count",
            ours["IDSW"],
            peer["IDSW"],
            PEER,
            higher_is_better=False,
        )
    )
    return report


# --- throughput -------------------------------------------------------------------------------------


def _bench_camera() -> r.Camera:
    """A four-lane road at 10 px/m with a counting line, a crosswalk and every rule enabled."""
    p = r.Point
    img = [p(0, 0), p(1280, 0), p(1280, 720), p(0, 720)]
    cal = r.Calibration(img, [p(q.x / 10, q.y / 10) for q in img])
    lanes = [
        r.Lane(
            f"l{k}",
            [p(0, 200 + 100 * k), p(1280, 200 + 100 * k), p(1280, 300 + 100 * k), p(0, 300 + 100 * k)],
            [p(0, 250 + 100 * k), p(1280, 250 + 100 * k)]
            if k < 2
            else [p(1280, 250 + 100 * k), p(0, 250 + 100 * k)],
            60.0,
        )
        for k in range(4)
    ]
    lines = [r.CountingLine("mid", [p(640, 150), p(640, 650)], "in", "out")]
    zones = [r.Zone("cw", r.ZoneKind.CROSSWALK, [p(900, 180), p(960, 180), p(960, 620), p(900, 620)])]
    return r.Camera("bench", "bench", r.Location(0, 0), r.SceneConfig(lines, zones, lanes, [], cal, []), 0)


def synthetic_frames(
    n_frames: int, objects: int = 20, fps: float = 10.0, seed: int = 0
) -> list[r.Detections]:
    """``objects`` vehicles on four lanes, wrapping around the image, with detector-like jitter."""
    rng = np.random.default_rng(seed)
    lane = np.arange(objects) % 4
    direction = np.where(lane < 2, 1.0, -1.0)
    y = 250.0 + 100 * lane + 30
    x0 = rng.uniform(0, 1280, objects)
    v = rng.uniform(100, 250, objects) * direction  # px/s: 36-90 km/h at 10 px/m
    out = []
    for f in range(n_frames):
        t = f / fps
        x = (x0 + v * t) % 1400 - 60
        jit = rng.normal(0, 1.0, (objects, 4))
        b = np.stack([x - 22, y - 30, x + 22, y], axis=1) + jit
        out.append(
            r.Detections(
                "bench",
                f,
                round(t * 1000),
                1280,
                720,
                "bench",
                "1",
                b.ravel().tolist(),
                [2] * objects,
                rng.uniform(0.6, 0.95, objects).round(3).tolist(),
            )
        )
    return out


def throughput(frames: int = 3000, objects: int = 20) -> BenchReport:
    dets = synthetic_frames(frames, objects)
    cam = _bench_camera()

    def ours() -> None:
        eng = CameraEngine(cam, AnalyticsSettings())
        for d in dets:
            eng.on_detections(d)

    def timed(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return frames / best

    ours_fps = timed(ours)
    tracker_only = []

    # The tracker as the engine runs it: with the camera's ground-plane model.
    ground = GroundMap(SceneModel(cam).homography, (640.0, 360.0))

    def ours_tracker() -> None:
        tr = Tracker(ground=ground)
        for d in dets:
            b = np.asarray(d.boxes).reshape(-1, 4)
            dead = tr.update(d.capture_ts_ms, b, np.asarray(d.scores), np.asarray(d.class_ids), (1280, 720))
            tr.keep(~dead)

    tracker_only.append(timed(ours_tracker))
    peer_fps = None
    if _peer_available():
        import supervision as sv
        from trackers import ByteTrackTracker

        svd = [
            sv.Detections(
                xyxy=np.asarray(d.boxes, np.float32).reshape(-1, 4),
                confidence=np.asarray(d.scores),
                class_id=np.asarray(d.class_ids),
            )
            for d in dets
        ]

        def peer() -> None:
            bt = ByteTrackTracker(frame_rate=10.0)
            for s in svd:
                bt.update(s)

        peer_fps = timed(peer)
    report = BenchReport("tracking", machine())
    name = PEER if peer_fps else MISSING
    report.cases.append(
        Case(
            f"{objects} objects/frame, tracking+rules+windows (ours) vs tracking alone (peer), 1 core",
            "detection frames/s",
            "frames/s",
            round(ours_fps, 1),
            round(peer_fps, 1) if peer_fps else None,
            name,
            target="10,000 frames/s on 2 cores (5,000 per core)",
        )
    )
    report.cases.append(
        Case(
            f"{objects} objects/frame, tracking alone, 1 core",
            "detection frames/s",
            "frames/s",
            round(tracker_only[0], 1),
            round(peer_fps, 1) if peer_fps else None,
            name,
            target="ours >= peer",
        )
    )
    return report
