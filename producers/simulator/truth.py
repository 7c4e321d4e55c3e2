"""Ground truth measured from the simulated trajectories: tracks, line crossings, counts, violations.

Violations are found by applying each rule's definition (with the camera's rule parameters) to the
exact trajectories, so a planted behaviour that did not happen is absent and an unplanted one
would be present; ``Violation.planted`` says whether a plant caused it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from producers.simulator.scene import RULE_PARAMS_DEFAULT, Scene
from producers.simulator.signals import SignalPlan
from producers.simulator.world import CLASSES, World, in_any
from schemas.records import Phase, ZoneKind

DIRECTION_CONVENTION = (
    "CountingLine.in_direction is a crossing from the left to the right of points[0]->points[1] as seen "
    "on screen (image y down); a track crosses when its box bottom-centre does."
)


@dataclass(slots=True)
class TruthTrack:
    """One true object on one camera; arrays are per visible frame."""

    camera_id: str
    track_id: int
    class_id: int
    kind: str  # vehicle | pedestrian
    lane_id: str | None
    behaviour: str  # normal, crosswalk, sidewalk, or the planted kind
    wrong_way: bool
    frame_seq: np.ndarray
    ts_ms: np.ndarray
    box: np.ndarray  # (n, 4) x1 y1 x2 y2 pixels (perfect detection)
    ground: np.ndarray  # (n, 2) metres (the box bottom-centre through the calibration homography)
    speed_kmh: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {
            "camera_id": self.camera_id,
            "track_id": self.track_id,
            "class_id": self.class_id,
            "kind": self.kind,
            "lane_id": self.lane_id,
            "behaviour": self.behaviour,
            "wrong_way": self.wrong_way,
            "frame_seq": self.frame_seq.tolist(),
            "ts_ms": self.ts_ms.tolist(),
            "box": np.round(self.box.astype(np.float64), 3).tolist(),
            "ground": np.round(self.ground, 4).tolist(),
            "speed_kmh": np.round(self.speed_kmh, 3).tolist(),
        }


@dataclass(slots=True)
class Crossing:
    camera_id: str
    line_id: str
    direction: str
    class_id: int
    ts_ms: int  # capture time of the first frame on the far side
    track_id: int
    speed_kmh: float
    lane_id: str | None
    exact_ts_ms: float  # interpolated moment the ground point crossed


@dataclass(slots=True)
class Violation:
    type: str  # records.EventType name
    camera_id: str
    track_id: int | None
    ts_ms: int  # start of the violation (the moment of a red-light crossing, a speeding run's start...)
    end_ts_ms: int | None = None
    class_id: int | None = None
    lane_id: str | None = None
    line_id: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    planted: bool = True
    lane_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LaneMinute:
    camera_id: str
    lane_id: str
    window_start_ms: int
    volume: int  # vehicles passing 30% of the lane's length
    volume_by_class: dict[str, int]
    mean_speed_kmh: float | None  # mean over all vehicle samples in the lane (space-mean)
    vehicles_mean: float  # mean number of vehicles present
    density_veh_per_km: float
    queue_vehicles_max: int  # most vehicles slower than 7 km/h at once


@dataclass(slots=True)
class Truth:
    """Everything the simulator knows, for accuracy tests."""

    scenario: str
    seed: int
    fps: float
    start_ms: int
    duration_s: float
    tracks: list[TruthTrack] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    lane_minutes: list[LaneMinute] = field(default_factory=list)
    plants: list[dict[str, Any]] = field(default_factory=list)
    rule_params: dict[str, dict[str, float]] = field(default_factory=dict)
    _by_frame: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def counts(self) -> dict[tuple[str, str, str, int], int]:
        """True counts per (camera, line, direction, class id)."""
        return dict(Counter((c.camera_id, c.line_id, c.direction, c.class_id) for c in self.crossings))

    def violations_of(self, kind: str) -> list[Violation]:
        return [v for v in self.violations if v.type == kind]

    def track(self, camera_id: str, track_id: int) -> TruthTrack:
        for t in self.tracks:
            if t.camera_id == camera_id and t.track_id == track_id:
                return t
        raise KeyError((camera_id, track_id))

    def match_box(
        self, camera_id: str, ts_ms: int, box: list[float] | np.ndarray, min_iou: float = 0.3
    ) -> int | None:
        """The truth track whose box at ``ts_ms`` overlaps ``box`` most (IoU >= ``min_iou``), else None.

        For scoring reported events against the truth: an event's evidence (capture time + box)
        names the true object it is about, whatever track id the tracker gave it.
        """
        ids, boxes = self._frame_boxes(camera_id, int(ts_ms))
        if len(ids) == 0:
            return None
        b = np.asarray(box, dtype=np.float64).reshape(4)
        x1 = np.maximum(boxes[:, 0], b[0])
        y1 = np.maximum(boxes[:, 1], b[1])
        x2 = np.minimum(boxes[:, 2], b[2])
        y2 = np.minimum(boxes[:, 3], b[3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (b[2] - b[0]) * (b[3] - b[1])
        iou = inter / np.maximum(area - inter, 1e-9)
        k = int(np.argmax(iou))
        return int(ids[k]) if iou[k] >= min_iou else None

    def _frame_boxes(self, camera_id: str, ts_ms: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._by_frame
        if index is None:
            groups: dict[tuple[str, int], tuple[list[int], list[np.ndarray]]] = {}
            for t in self.tracks:
                for ts, bx in zip(t.ts_ms.tolist(), t.box, strict=True):
                    ids, boxes = groups.setdefault((t.camera_id, ts), ([], []))
                    ids.append(t.track_id)
                    boxes.append(bx)
            index = {k: (np.asarray(i), np.asarray(b, dtype=np.float64)) for k, (i, b) in groups.items()}
            self._by_frame = index
        return index.get((camera_id, ts_ms), (np.zeros(0, np.int64), np.zeros((0, 4))))

    @classmethod
    def read(cls, path: str | Path) -> Truth:
        """Load a truth file written by ``write`` (tracks included if they were written)."""
        doc = json.loads(Path(path).read_text())
        tracks = [
            TruthTrack(
                t["camera_id"], t["track_id"], t["class_id"], t["kind"], t["lane_id"], t["behaviour"],
                t["wrong_way"], np.asarray(t["frame_seq"], np.int64), np.asarray(t["ts_ms"], np.int64),
                np.asarray(t["box"], np.float32).reshape(-1, 4), np.asarray(t["ground"]).reshape(-1, 2),
                np.asarray(t["speed_kmh"]),
            )
            for t in doc["tracks"]
        ]  # fmt: skip
        return cls(
            doc["scenario"], doc["seed"], doc["fps"], doc["start_ms"], doc["duration_s"], tracks,
            [Crossing(**c) for c in doc["crossings"]], [Violation(**v) for v in doc["violations"]],
            [LaneMinute(**m) for m in doc["lane_minutes"]], doc["plants"], doc["rule_params"],
        )  # fmt: skip

    def as_dict(self, *, include_tracks: bool = True) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "fps": self.fps,
            "start_ms": self.start_ms,
            "duration_s": self.duration_s,
            "direction_convention": DIRECTION_CONVENTION,
            "rule_params": self.rule_params,
            "counts": [
                {"camera_id": c, "line_id": ln, "direction": d, "class_id": k, "count": n}
                for (c, ln, d, k), n in sorted(self.counts.items())
            ],
            "crossings": [asdict(c) for c in self.crossings],
            "violations": [asdict(v) for v in self.violations],
            "lane_minutes": [asdict(m) for m in self.lane_minutes],
            "plants": self.plants,
            "tracks": [t.as_dict() for t in self.tracks] if include_tracks else [],
        }

    def write(self, path: str | Path, *, include_tracks: bool = True) -> Path:
        """Write the truth as JSON (sorted keys: byte-identical for the same seed)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.as_dict(include_tracks=include_tracks), sort_keys=True))
        return out


def write_truth(truth: Truth, path: str | Path, *, include_tracks: bool = True) -> Path:
    return truth.write(path, include_tracks=include_tracks)


# --- measuring -----------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where ``mask`` is True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def measure(
    world: World,
    camera_id: str,
    cols: dict[str, np.ndarray],
    ts_of_frame: np.ndarray,
    plan: SignalPlan | None,
    rule_params: dict[str, dict[str, float]] | None = None,
) -> tuple[list[TruthTrack], list[Crossing], list[Violation], list[LaneMinute]]:
    """Tracks, crossings, violations and per-minute lane statistics of one camera."""
    scene: Scene = world.scene
    params = {**RULE_PARAMS_DEFAULT, **(rule_params or {})}
    vis = cols["visible"]
    frame, tid, xy = cols["frame"][vis], cols["tid"][vis], cols["xy"][vis]
    speed, s, box = cols["speed"][vis], cols["s"][vis], cols["box"][vis]
    order = np.lexsort((frame, tid))
    frame, tid, xy, speed, s, box = frame[order], tid[order], xy[order], speed[order], s[order], box[order]
    bounds = np.flatnonzero(np.diff(tid)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(tid)]])
    dt = 1.0 / world.fps
    tracks: list[TruthTrack] = []
    crossings: list[Crossing] = []
    violations: list[Violation] = []
    road = scene.polygons(ZoneKind.ROADWAY)
    crosswalks = scene.polygons(ZoneKind.CROSSWALK)
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if b <= a:
            continue
        t_id = int(tid[a])
        meta = world.meta[t_id]
        lane = scene.lanes[meta.lane] if meta.lane is not None else None
        wrong_way = lane is not None and lane.reverse_of is not None
        fr = frame[a:b]
        ts = ts_of_frame[fr]
        p = xy[a:b]
        v_kmh = speed[a:b] * 3.6
        class_id = CLASSES[meta.class_name][0]
        tracks.append(
            TruthTrack(
                camera_id,
                t_id,
                class_id,
                meta.kind,
                lane.lane_id if lane else None,
                meta.behaviour,
                wrong_way,
                fr.astype(np.int64),
                ts.astype(np.int64),
                box[a:b],
                p,
                v_kmh,
            )
        )
        # Line crossings between consecutive visible frames.
        contiguous = np.diff(fr) == 1
        for line in scene.lines:
            la, lb = np.asarray(line.a, float), np.asarray(line.b, float)
            d = lb - la
            side = np.sign(d[0] * (p[:, 1] - la[1]) - d[1] * (p[:, 0] - la[0]))
            # A point exactly on the line belongs to the positive side; a zero would hide the crossing.
            side[side == 0] = 1
            inner = np.sign(d[0] * (line.inner[1] - la[1]) - d[1] * (line.inner[0] - la[0]))
            change = np.flatnonzero((side[:-1] * side[1:] < 0) & contiguous)
            for k in change.tolist():
                p0, p1 = p[k], p[k + 1]
                # Where along the line the step crossed it: must be inside the segment.
                c0 = d[0] * (p0[1] - la[1]) - d[1] * (p0[0] - la[0])
                c1 = d[0] * (p1[1] - la[1]) - d[1] * (p1[0] - la[0])
                w = c0 / (c0 - c1)
                hit = p0 + (p1 - p0) * w
                u = float(np.dot(hit - la, d) / np.dot(d, d))
                if not 0.0 <= u <= 1.0:
                    continue
                direction = line.in_direction if side[k + 1] == inner else line.out_direction
                crossings.append(
                    Crossing(
                        camera_id,
                        line.line_id,
                        direction,
                        class_id,
                        int(ts[k + 1]),
                        t_id,
                        float(v_kmh[k] + (v_kmh[k + 1] - v_kmh[k]) * w),
                        lane.lane_id if lane else None,
                        float(ts[k] + (ts[k + 1] - ts[k]) * w),
                    )
                )
        planted = meta.plant is not None
        if meta.kind == "pedestrian":
            in_road = in_any(p, road) & ~in_any(p, crosswalks)
            need = params["PEDESTRIAN_IN_ROADWAY"]["min_duration_s"]
            for r0, r1 in _runs(in_road):
                if (r1 - r0) * dt >= need:
                    violations.append(
                        Violation(
                            "PEDESTRIAN_IN_ROADWAY",
                            camera_id,
                            t_id,
                            int(ts[r0]),
                            int(ts[r1 - 1]),
                            class_id,
                            measurements={"duration_s": round((r1 - r0) * dt, 3)},
                            planted=planted,
                        )
                    )
            continue
        assert lane is not None
        sl = s[a:b]
        limit = lane.speed_limit_kmh
        if wrong_way:
            travelled = np.abs(sl - sl[0])
            k = (
                int(np.argmax(travelled >= params["WRONG_WAY"]["min_distance_m"]))
                if travelled[-1] >= params["WRONG_WAY"]["min_distance_m"]
                else -1
            )
            if k >= 0:
                violations.append(
                    Violation(
                        "WRONG_WAY",
                        camera_id,
                        t_id,
                        int(ts[0]),
                        int(ts[-1]),
                        class_id,
                        lane.lane_id,
                        measurements={
                            "speed_kmh": round(float(np.median(v_kmh)), 3),
                            "distance_m": round(float(travelled[-1]), 3),
                        },
                        planted=planted,
                    )
                )
        # Speeding: over limit + tolerance for at least min_duration.
        sp = params["SPEEDING"]
        for r0, r1 in _runs(v_kmh > limit + sp["tolerance_kmh"]):
            if (r1 - r0) * dt >= sp["min_duration_s"]:
                seg = v_kmh[r0:r1]
                violations.append(
                    Violation(
                        "SPEEDING",
                        camera_id,
                        t_id,
                        int(ts[r0]),
                        int(ts[r1 - 1]),
                        class_id,
                        lane.lane_id,
                        measurements={
                            "speed_kmh": round(float(seg.max()), 3),
                            "mean_speed_kmh": round(float(seg.mean()), 3),
                            "limit_kmh": limit,
                            "duration_s": round((r1 - r0) * dt, 3),
                        },
                        planted=planted,
                    )
                )
        # Lane blockage: stopped in a travel lane for at least min_duration.
        lb = params["LANE_BLOCKAGE"]
        for r0, r1 in _runs(v_kmh < min(lb["max_speed_kmh"], 1.8)):
            if (r1 - r0) * dt >= lb["min_duration_s"]:
                violations.append(
                    Violation(
                        "LANE_BLOCKAGE",
                        camera_id,
                        t_id,
                        int(ts[r0]),
                        int(ts[r1 - 1]),
                        class_id,
                        lane.lane_id,
                        measurements={
                            "duration_s": round((r1 - r0) * dt, 3),
                            "threshold_s": lb["min_duration_s"],
                        },
                        planted=planted,
                    )
                )
        if lane.stop_s is None or wrong_way:
            continue
        cross = np.flatnonzero((sl[:-1] < lane.stop_s) & (sl[1:] >= lane.stop_s) & contiguous)
        for k in cross.tolist():
            w = (lane.stop_s - sl[k]) / max(sl[k + 1] - sl[k], 1e-9)
            t_exact = (ts[k] + (ts[k + 1] - ts[k]) * w) / 1000.0 - ts_of_frame[0] / 1000.0
            if lane.signal_id is not None and plan is not None:
                if plan.phase(lane.signal_id, t_exact) == Phase.RED:
                    red_for = plan.red_elapsed(lane.signal_id, t_exact)
                    if red_for > params["RED_LIGHT"]["grace_s"]:
                        violations.append(
                            Violation(
                                "RED_LIGHT",
                                camera_id,
                                t_id,
                                int(ts[k + 1]),
                                None,
                                class_id,
                                lane.lane_id,
                                line_id=f"stop-{lane.lane_id}",
                                measurements={
                                    "red_for_s": round(red_for, 3),
                                    "speed_kmh": round(float(v_kmh[k + 1]), 3),
                                },
                                planted=planted,
                            )
                        )
            elif lane.stop_sign:
                z0, z1 = lane.stop_zone or (lane.stop_s - 12.0, lane.stop_s)
                inside = (sl >= z0) & (sl <= z1)
                inside[k + 2 :] = False
                min_v = float(v_kmh[inside].min()) if inside.any() else float(v_kmh[k])
                if min_v > params["STOP_SIGN"]["max_stop_speed_kmh"]:
                    violations.append(
                        Violation(
                            "STOP_SIGN",
                            camera_id,
                            t_id,
                            int(ts[k + 1]),
                            None,
                            class_id,
                            lane.lane_id,
                            line_id=f"stop-{lane.lane_id}",
                            measurements={"min_speed_kmh": round(min_v, 3)},
                            planted=planted,
                        )
                    )
    minutes = lane_minutes(world, camera_id, tracks, ts_of_frame)
    violations.extend(congestion(world, camera_id, minutes, ts_of_frame))
    return tracks, crossings, violations, minutes


def lane_minutes(
    world: World, camera_id: str, tracks: list[TruthTrack], ts_of_frame: np.ndarray
) -> list[LaneMinute]:
    """Per lane and minute: volume by class, space-mean speed, density, queue."""
    scene = world.scene
    fps = world.fps
    per_min = round(60 * fps)
    n_min = max(1, int(np.ceil(len(ts_of_frame) / per_min)))
    out: list[LaneMinute] = []
    for lane in scene.lanes:
        if lane.reverse_of is not None:
            continue
        mine = [t for t in tracks if t.kind == "vehicle" and t.lane_id == lane.lane_id and not t.wrong_way]
        s_ref = 0.3 * lane.line.length
        vol = [Counter() for _ in range(n_min)]
        spd_sum = np.zeros(n_min)
        spd_n = np.zeros(n_min)
        present = np.zeros(len(ts_of_frame))
        queue = np.zeros(len(ts_of_frame))
        for t in mine:
            along = (t.ground - lane.line.points[0]) @ lane.line.dirs[0]
            k = np.flatnonzero((along[:-1] < s_ref) & (along[1:] >= s_ref))
            for j in k.tolist():
                m = int(t.frame_seq[j + 1]) // per_min
                vol[m][CLASSES_BY_ID[t.class_id]] += 1
            mins = t.frame_seq // per_min
            np.add.at(spd_sum, mins, t.speed_kmh)
            np.add.at(spd_n, mins, 1)
            np.add.at(present, t.frame_seq, 1)
            np.add.at(queue, t.frame_seq, (t.speed_kmh < 7.0).astype(float))
        for m in range(n_min):
            sl_ = slice(m * per_min, (m + 1) * per_min)
            veh = float(present[sl_].mean()) if present[sl_].size else 0.0
            out.append(
                LaneMinute(
                    camera_id,
                    lane.lane_id,
                    int(ts_of_frame[m * per_min]),
                    sum(vol[m].values()),
                    dict(vol[m]),
                    round(float(spd_sum[m] / spd_n[m]), 3) if spd_n[m] else None,
                    round(veh, 3),
                    round(veh / (lane.line.length / 1000.0), 3),
                    int(queue[sl_].max()) if queue[sl_].size else 0,
                )
            )
    return out


CLASSES_BY_ID = {v[0]: k for k, v in CLASSES.items()}


def congestion(
    world: World, camera_id: str, minutes: list[LaneMinute], ts_of_frame: np.ndarray
) -> list[Violation]:
    """Planted congestion: demand above capacity from ``at_s`` on the listed lanes (one record per lane).

    The moment is the first full minute whose space-mean speed fell below half the limit; the
    measurements give the mean speed and density over the congested minutes.
    """
    out: list[Violation] = []
    for p in world.plants:
        if p.kind != "CONGESTION":
            continue
        for lid in p.params.get("lanes", []):
            lane = world.scene.lanes[world.scene.lane_index(lid)]
            rows = [m for m in minutes if m.lane_id == lid and m.mean_speed_kmh is not None]
            slow = [m for m in rows if m.mean_speed_kmh < 0.5 * lane.speed_limit_kmh]  # type: ignore[operator]
            if not slow:
                continue
            out.append(
                Violation(
                    "CONGESTION",
                    camera_id,
                    None,
                    slow[0].window_start_ms,
                    int(slow[-1].window_start_ms + 60_000),
                    None,
                    lid,
                    measurements={
                        "mean_speed_kmh": round(float(np.mean([m.mean_speed_kmh for m in slow])), 3),
                        "density_veh_per_km": round(float(np.mean([m.density_veh_per_km for m in slow])), 3),
                        "congested_minutes": float(len(slow)),
                        "demand_from_ms": float(ts_of_frame[0] + p.at_s * 1000),
                    },
                    planted=True,
                    lane_ids=[lid],
                )
            )
    return out
