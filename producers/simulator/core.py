"""``simulate(scenario, seed)``: cameras, signal phases, detections and the truth of a scenario."""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from producers.simulator.noise import apply_noise, profile_named
from producers.simulator.scene import RULE_PARAMS_DEFAULT, Scene, build, to_camera_record
from producers.simulator.signals import SignalPlan
from producers.simulator.truth import Truth, measure
from producers.simulator.world import World
from schemas import records as r
from schemas.boxes import Boxes

REPO = Path(__file__).resolve().parents[2]
DEFAULT_START_MS = 1_767_254_400_000  # 2026-01-01T08:00:00Z: fixed so output is byte-identical
MODEL_NAME = "simulator"
MODEL_VERSION = "1"


def scenario_dirs() -> list[Path]:
    """Where scenario files are looked up: ``ITS_SCENARIOS_DIR`` (os.pathsep list), then tests/scenarios."""
    dirs = [Path(p) for p in os.environ.get("ITS_SCENARIOS_DIR", "").split(os.pathsep) if p]
    return [*dirs, REPO / "tests" / "scenarios"]


def list_scenarios() -> list[str]:
    names: set[str] = set()
    for d in scenario_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_scenario(scenario: str) -> dict[str, Any]:
    """A scenario by name (searched in ``scenario_dirs()``) or by path to a YAML file."""
    path = Path(scenario)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        for d in scenario_dirs():
            cand = d / f"{scenario}.yaml"
            if cand.is_file():
                path = cand
                break
        else:
            raise FileNotFoundError(
                f"scenario {scenario!r} not found in {[str(d) for d in scenario_dirs()]}; "
                f"known: {', '.join(list_scenarios()) or 'none'}"
            )
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not doc.get("cameras"):
        raise ValueError(f"{path}: a scenario needs a 'cameras' list")
    doc.setdefault("name", path.stem)
    return doc


@dataclass(slots=True)
class Simulation:
    """A simulated run: what the cameras would publish, and what really happened."""

    scenario: str
    seed: int
    cameras: list[r.Camera]
    signals: list[r.SignalPhase]  # time-ordered
    detections: list[r.Detections]  # time-ordered; frame_seq increasing per camera
    truth: Truth
    fps: float = 10.0
    # Parallel to ``detections``: the true track id of each box (-1 for a false positive).
    detection_truth_ids: list[np.ndarray] = field(default_factory=list)
    scenes: dict[str, Scene] = field(default_factory=dict)

    def stream(self) -> Iterator[r.Camera | r.SignalPhase | r.Detections]:
        """Everything merged in time order: cameras first, a signal change before a frame at the same ms."""
        yield from self.cameras
        sig = ((s.ts_ms, 0, i, s) for i, s in enumerate(self.signals))
        det = ((d.capture_ts_ms, 1, i, d) for i, d in enumerate(self.detections))
        for _, _, _, rec in heapq.merge(sig, det, key=lambda e: (e[0], e[1], e[2])):
            yield rec

    def write_truth(self, path: str | Path, *, include_tracks: bool = True) -> Path:
        return self.truth.write(path, include_tracks=include_tracks)


def _camera_templates(doc: dict[str, Any], cameras: int | None) -> list[dict[str, Any]]:
    templates = list(doc["cameras"])
    n = len(templates) if cameras is None else int(cameras)
    if n < 1:
        raise ValueError("cameras must be >= 1")
    return [templates[i % len(templates)] for i in range(n)]


def simulate(
    scenario: str,
    seed: int = 0,
    *,
    noise: str = "default",
    duration_s: float | None = None,
    fps: float = 10.0,
    cameras: int | None = None,
    start_ms: int | None = None,
) -> Simulation:
    """Run a scenario: deterministic for (scenario file, seed, noise, duration, fps, cameras, start)."""
    doc = load_scenario(scenario)
    name = str(doc["name"])
    duration = float(duration_s if duration_s is not None else doc.get("duration_s", 180.0))
    if fps <= 0 or duration <= 0:
        raise ValueError("fps and duration must be positive")
    start = DEFAULT_START_MS if start_ms is None else int(start_ms)
    prof = profile_named(noise)
    templates = _camera_templates(doc, cameras)
    n_frames = int(np.floor(duration * fps + 1e-9))
    ts_of_frame = start + np.round(np.arange(n_frames) * 1000.0 / fps).astype(np.int64)
    truth = Truth(name, seed, fps, start, duration)
    cam_records: list[r.Camera] = []
    signals: list[r.SignalPhase] = []
    per_camera: list[tuple[str, list[Boxes], list[np.ndarray], int, int]] = []
    scenes: dict[str, Scene] = {}
    for index, tpl in enumerate(templates):
        camera_id = str(tpl.get("camera_id") or f"sim-{name}-{index:04d}")
        if cameras is not None and index >= len(doc["cameras"]):
            camera_id = f"sim-{name}-{index:04d}"
        ss = np.random.SeedSequence([int(seed), index])
        world_rng, noise_rng = (np.random.default_rng(s) for s in ss.spawn(2))
        scene = build(str(tpl["layout"]), float(tpl.get("speed_limit_kmh", 50.0)), tpl.get("camera"))
        plan = None
        if scene.signal_ids:
            sig = tpl.get("signal") or {}
            plan = SignalPlan(
                tuple(scene.signal_ids),
                float(sig.get("green_s", 25.0)),
                float(sig.get("amber_s", 4.0)),
                float(sig.get("all_red_s", 2.0)),
            )
        world = World(scene, tpl, plan, world_rng, duration_s=duration, fps=fps)
        world.run()
        cols = world.columns()
        record = to_camera_record(
            scene,
            camera_id,
            name=f"{name} {scene.layout} #{index}",
            registered_ts_ms=start,
            fps=fps,
            source=f"sim://{name}/{index}",
            index=index,
        )
        cam_records.append(record)
        scenes[camera_id] = scene
        rule_params = {rc.rule: dict(rc.params) for rc in record.scene.rules}
        truth.rule_params = {**RULE_PARAMS_DEFAULT, **rule_params}
        tracks, crossings, violations, minutes = measure(
            world, camera_id, cols, ts_of_frame, plan, rule_params
        )
        truth.tracks.extend(tracks)
        truth.crossings.extend(crossings)
        truth.violations.extend(violations)
        truth.lane_minutes.extend(minutes)
        for k, p in enumerate(world.plants):
            truth.plants.append(
                {
                    "camera_id": camera_id,
                    "index": k,
                    "type": p.kind,
                    "at_s": p.at_s,
                    "spawned_ts_ms": None if p.spawned_t is None else int(start + round(p.spawned_t * 1000)),
                    "track_id": p.track_id,
                    "params": {k2: v for k2, v in p.params.items() if k2 != "type"},
                }
            )
        if plan is not None:
            for t, sig_id, phase in plan.changes(duration):
                signals.append(
                    r.SignalPhase(camera_id, sig_id, phase, int(start + round(t * 1000)), f"sim-{camera_id}")
                )
        # Perfect boxes per frame (visible objects, by track id), then the noise model.
        vis = cols["visible"]
        frame, tid, box = cols["frame"][vis], cols["tid"][vis], cols["box"][vis]
        class_of = {t.track_id: t.class_id for t in tracks}
        cls = np.array([class_of[int(t)] for t in tid], dtype=np.int32)
        cuts = np.searchsorted(frame, np.arange(n_frames + 1))
        frames = [
            Boxes(
                box[cuts[k] : cuts[k + 1]],
                cls[cuts[k] : cuts[k + 1]],
                np.ones(cuts[k + 1] - cuts[k]),
                tid[cuts[k] : cuts[k + 1]],
            )
            for k in range(n_frames)
        ]
        noisy = apply_noise(frames, noise_rng, prof, image_size=(scene.camera.width, scene.camera.height))
        per_camera.append((camera_id, noisy, [], scene.camera.width, scene.camera.height))
    signals.sort(key=lambda s: (s.ts_ms, s.camera_id, s.signal_id))
    detections: list[r.Detections] = []
    truth_ids: list[np.ndarray] = []
    for k in range(n_frames):
        ts = int(ts_of_frame[k])
        for camera_id, noisy, _, width, height in per_camera:
            b = noisy[k]
            detections.append(
                r.Detections(
                    camera_id=camera_id,
                    frame_seq=k,
                    capture_ts_ms=ts,
                    width=width,
                    height=height,
                    model_name=MODEL_NAME,
                    model_version=MODEL_VERSION,
                    boxes=b.xyxy.reshape(-1).tolist(),
                    class_ids=b.class_id.tolist(),
                    scores=b.score.tolist(),
                    source=r.DetectionSource.EDGE,
                    track_ids=None,
                    processed_ts_ms=ts,
                )
            )
            truth_ids.append(b.track_id if b.track_id is not None else np.zeros(0, np.int64))
    truth.tracks.sort(key=lambda t: (t.camera_id, t.track_id))
    truth.crossings.sort(key=lambda c: (c.ts_ms, c.camera_id, c.line_id, c.track_id))
    truth.violations.sort(key=lambda v: (v.ts_ms, v.camera_id, v.type, v.track_id or 0))
    return Simulation(name, seed, cam_records, signals, detections, truth, fps, truth_ids, scenes)
