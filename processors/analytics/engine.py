"""The analytics engine: detections (+ signal phases, camera registrations) in; events, alerts and
windowed statistics out. Pure and deterministic: no Kafka, no clock; the same input sequence gives
the same outputs with the same ids, which is what makes replay and exactly-once possible.

Per frame of one camera the pipeline is::

    tracker.update  ->  ground positions + speed fit  ->  line crossings (hysteresis)
                    ->  rules (vectorised timers per track)  ->  window accumulators  ->  alerts

Every per-track quantity is a column of the tracker's table, so rules run on whole arrays and a
track's rule state is dropped with the track.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from processors.analytics import state as st
from processors.analytics.alerts import AlertManager, AlertPolicy
from processors.analytics.scene import BIT_CROSSWALK, BIT_ROADWAY, BIT_STOP0, SceneModel
from processors.analytics.settings import AnalyticsSettings
from processors.analytics.tracker import GroundMap, Tracker, TrackerParams
from processors.analytics.windows import LOS_RANK, Windows
from schemas import records as r
from schemas.boxes import VEHICLE_CLASSES

log = logging.getLogger(__name__)

HIST = 32  # ground samples kept per track (3.2 s at 10 fps)
_TRACKED = np.zeros(256, dtype=bool)
_TRACKED[[0, 1, 2, 3, 5, 7]] = True  # persons, bicycles, vehicles; not lights or signs
VEHICLE_LENGTH_M = {2: 4.5, 3: 2.2, 5: 12.0, 7: 9.0, 1: 1.8}
_VEH = np.zeros(80, dtype=bool)
_VEH[list(VEHICLE_CLASSES)] = True
_LEN = np.full(80, 4.5)
for _c, _l in VEHICLE_LENGTH_M.items():
    _LEN[_c] = _l
ET = r.EventType
STOP_MOVE_M = 2.0  # a stop ends only after this much travel (under half a car length)


@dataclass(slots=True)
class Output:
    """What one input produced."""

    events: list[r.Event] = field(default_factory=list)
    alerts: list[r.Alert] = field(default_factory=list)
    stats: list[r.TrafficStats] = field(default_factory=list)

    def extend(self, o: Output) -> None:
        self.events.extend(o.events)
        self.alerts.extend(o.alerts)
        self.stats.extend(o.stats)


def _fit_velocity(t: np.ndarray, g: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ground velocity per row: t (M, K) s, g (M, K, 2) m, w (M, K) 0/1 weights.

    Returns (M, 2) m/s and (M,) number of samples used. Rows with < 3 samples or a time spread below
    that of 0.3 s of evenly spaced samples (variance 0.3^2 / 12) get NaN.
    """
    n = w.sum(axis=1)
    nn = np.maximum(n, 1)
    tm = (w * t).sum(axis=1) / nn
    dt = (t - tm[:, None]) * w
    sxx = (dt * dt).sum(axis=1)
    sxy = np.einsum("mk,mkc->mc", dt, g)  # sum(dt) = 0, so the mean of g drops out
    ok = (n >= 3) & (sxx >= 0.0075 * nn)
    vel = np.full((len(t), 2), np.nan)
    vel[ok] = sxy[ok] / sxx[ok, None]
    return vel, n


def _ground_ref(camera: r.Camera) -> tuple[float, float]:
    """An image point on the ground side of the horizon: the centroid of the calibration points."""
    cal = camera.scene.calibration
    if cal is None or not cal.image_points:
        return (0.0, 0.0)
    pts = np.array([[p.x, p.y] for p in cal.image_points], dtype=np.float64)
    return float(pts[:, 0].mean()), float(pts[:, 1].mean())


class CameraEngine:
    """All analytics state of one camera (what a changelog snapshot carries)."""

    def __init__(self, camera: r.Camera, settings: AnalyticsSettings, next_track_id: int = 1) -> None:
        self.camera = camera
        self.cfg = settings
        self.scene = SceneModel(camera)  # raises SceneError on a bad registration
        self.camera_id = camera.camera_id
        sc = self.scene
        self.tracker = Tracker(
            TrackerParams(
                max_lost_s=settings.max_lost_s,
                high_score=settings.track_high_score,
                new_track_score=settings.track_new_score,
            ),
            # Track on the ground plane: image motion under perspective is not constant-velocity.
            GroundMap(sc.homography, _ground_ref(camera)),
        )
        self.tracker.next_id = next_track_id
        n_lines, n_stop_zones = len(sc.lines), len(sc.stop_zones)
        cols = {
            "hist_t": ((HIST,), np.float64, 0.0),  # seconds since the camera's epoch_ms
            "hist_g": ((HIST, 2), np.float64, 0.0),
            "hist_n": ((), np.int64, 0),
            "speed": ((), np.float64, np.nan),  # km/h, trailing fit
            "vel": ((2,), np.float64, 0.0),  # m/s ground
            "lane": ((), np.int32, -1),
            "pos": ((), np.float64, np.nan),  # metres along the lane centreline
            "side": ((n_lines,), np.int8, 0),
            "prev_s": ((n_lines,), np.float64, np.nan),
            "zero_ts": ((n_lines,), np.int64, 0),
            "counted": ((n_lines, 2), bool, False),
            "counted_any": ((), bool, False),
            "over_since": ((), np.int64, -1),
            "over_max": ((), np.float64, 0.0),
            "speeding_done": ((), bool, False),
            "ww_dist": ((), np.float64, 0.0),
            "ww_since": ((), np.int64, -1),
            "ww_done": ((), bool, False),
            "ped_since": ((), np.int64, -1),
            "ped_done": ((), bool, False),
            "stopped_since": ((), np.int64, -1),
            "stop_g": ((2,), np.float64, 0.0),  # filtered ground position where the stop began
            "block_done": ((), bool, False),
            "zone_in": ((n_stop_zones,), np.int8, 0),  # 0 never, 1 inside, 2 left
            "zone_min": ((n_stop_zones,), np.float64, np.inf),
            "zone_entry": ((n_stop_zones,), np.int64, 0),
            "zone_last": ((n_stop_zones,), np.int64, 0),
            "last_box": ((4,), np.float32, 0.0),
            "last_seq": ((), np.int64, 0),
        }
        for name, (shape, dt, fill) in cols.items():
            self.tracker.add_column(name, shape, dt, fill)
        self.epoch_ms: int | None = None
        self.last_ts: int | None = None
        self.max_ts: int | None = None
        self.last_seq = -1
        self.late_records = 0
        self.signals: dict[str, list[tuple[int, str]]] = {}
        # Crossings waiting for the centred speed fit: dicts of plain values (snapshot friendly).
        self.pending: list[dict] = []
        self.congestion: dict[str, list] = {}  # lane key -> [since_ms | None, reported]
        self.frame_ref: r.FrameRef | None = None
        self.windows = Windows(
            self.camera_id, {ln.lane_id: ln.length_m for ln in sc.lanes}, settings.allowed_lateness_ms
        )
        self.alerts = AlertManager(
            self.camera_id,
            camera.location,
            AlertPolicy(
                settings.alert_throttle_s,
                settings.alert_resolve_after_s,
                tuple(settings.alert_escalate_after_s),
            ),
        )
        self._box_lane_stop = self._stop_line_positions()
        self._unsignalled_stop_lines = any(ln.is_stop_line and ln.signal_id is None for ln in sc.lines)

    # --- inputs ------------------------------------------------------------------------------------

    def on_signal(self, sig: r.SignalPhase) -> None:
        hist = self.signals.setdefault(sig.signal_id, [])
        if hist and hist[-1][1] == sig.phase.value:
            return  # repeated phase report: the phase started at the first report
        hist.append((sig.ts_ms, sig.phase.value))
        del hist[:-16]

    def phase_at(self, signal_id: str, ts_ms: int) -> tuple[str, int | None]:
        """Phase of ``signal_id`` at ``ts_ms`` and when that phase began (UNKNOWN, None without data)."""
        phase, since = "UNKNOWN", None
        for t, p in self.signals.get(signal_id, []):
            if t <= ts_ms:
                phase, since = p, t
            else:
                break
        return phase, since

    def on_detections(self, det: r.Detections) -> Output:
        out = Output()
        ts = det.capture_ts_ms
        if self.last_ts is not None and (
            ts < self.last_ts or (ts == self.last_ts and det.frame_seq <= self.last_seq)
        ):
            # The tracker cannot go back in time: an out-of-order or repeated frame is counted as late.
            self.late_records += 1
            self.windows.pending_late += 1
            return out
        if self.epoch_ms is None:
            self.epoch_ms = ts
        self.last_ts, self.last_seq = ts, det.frame_seq
        self.max_ts = ts if self.max_ts is None else max(self.max_ts, ts)
        self.frame_ref = det.frame_ref

        xyxy = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(det.scores, dtype=np.float64)
        classes = np.asarray(det.class_ids, dtype=np.int64)
        keep = _TRACKED[np.clip(classes, 0, 255)]
        if not keep.all():
            xyxy, scores, classes = xyxy[keep], scores[keep], classes[keep]
        tr = self.tracker
        dead = tr.update(ts, xyxy, scores, classes, (det.width, det.height) if det.width > 0 else None)
        if dead.any():
            self._finalise(np.nonzero(dead)[0], out)
            tr.keep(~dead)
        upd = np.nonzero(tr["det"] >= 0)[0]
        if len(upd):
            tr["last_box"][upd] = xyxy[tr["det"][upd]]
            tr["last_seq"][upd] = det.frame_seq
            self._measure(upd, ts, out)
        self._frame_windows(ts)
        self._due_crossings(ts, out)
        self._emit_time(ts, out)
        return out

    # --- measurements --------------------------------------------------------------------------------

    def _measure(self, rows: np.ndarray, ts: int, out: Output) -> None:
        tr, sc = self.tracker, self.scene
        x = tr["x"][rows]
        anchor = np.stack([x[:, 0], x[:, 1] + x[:, 3] / 2], axis=1)  # bottom centre: where it meets the road
        ground = sc.to_ground(anchor)
        t_s = (ts - self.epoch_ms) / 1000.0
        k = tr["hist_n"][rows] % HIST
        tr["hist_t"][rows, k] = t_s
        tr["hist_g"][rows, k] = ground
        tr["hist_n"][rows] += 1
        ht, hg = tr["hist_t"][rows], tr["hist_g"][rows]
        valid = (np.arange(HIST)[None, :] < tr["hist_n"][rows][:, None]) & (
            ht >= t_s - self.cfg.rule_speed_window_s
        )
        vel, _ = _fit_velocity(ht, hg, valid.astype(np.float64))
        has = ~np.isnan(vel[:, 0])
        tr["vel"][rows[has]] = vel[has]
        tr["speed"][rows[has]] = np.hypot(vel[has, 0], vel[has, 1]) * 3.6
        code = sc.regions(anchor)
        lane = (code & 31).astype(np.int32) - 1
        tr["lane"][rows] = lane
        tr["pos"][rows] = sc.lane_position(lane, ground)
        confirmed = tr["id"][rows] >= 0
        if len(sc.lines):
            self._crossings(rows, ground, ts, confirmed, out)
        self._rules(rows, code, ground, ts, confirmed, out)

    def _crossings(
        self, rows: np.ndarray, ground: np.ndarray, ts: int, confirmed: np.ndarray, out: Output
    ) -> None:
        tr, sc, cfg = self.tracker, self.scene, self.cfg
        rel = ground[:, None, :] - sc.line_a[None]  # (M, L, 2)
        along = (rel * sc.line_dir[None]).sum(axis=2)
        s = sc.line_orient[None] * (
            sc.line_dir[None, :, 0] * rel[..., 1] - sc.line_dir[None, :, 1] * rel[..., 0]
        )
        prev_s = tr["prev_s"][rows]
        # Interpolated time of the latest sign change: the crossing time once hysteresis confirms it.
        flipped = ~np.isnan(prev_s) & (np.sign(prev_s) != np.sign(s)) & (s != 0)
        if flipped.any():
            frac = np.where(flipped, prev_s / np.where(prev_s - s == 0, 1, prev_s - s), 0.0)
            # Time of the previous sample (the current one is already in the history).
            t0 = tr["hist_t"][rows, (tr["hist_n"][rows] - 2) % HIST] * 1000 + self.epoch_ms
            zero = np.rint(t0[:, None] + frac * (ts - t0[:, None])).astype(np.int64)
            tr["zero_ts"][rows] = np.where(flipped, zero, tr["zero_ts"][rows])
        tr["prev_s"][rows] = s
        band = cfg.crossing_band_m
        side = tr["side"][rows]
        new_side = np.where(s > band, 1, np.where(s < -band, -1, side)).astype(np.int8)
        within = (along >= -cfg.line_margin_m) & (along <= sc.line_len[None] + cfg.line_margin_m)
        crossed = (side != 0) & (new_side != side) & within & confirmed[:, None]
        # Outside the segment's extent a side change is not a crossing, but the side is still tracked.
        tr["side"][rows] = new_side
        if not crossed.any():
            return
        for i, li in zip(*np.nonzero(crossed), strict=True):
            row = rows[i]
            d = 0 if new_side[i, li] > 0 else 1  # 0: in, 1: out
            if tr["counted"][row, li, d]:
                continue  # jitter beyond the band: one count per track, line and direction
            tr["counted"][row, li, d] = True
            self._on_crossing(int(row), int(li), d, int(tr["zero_ts"][row, li]), out)

    def _on_crossing(self, row: int, li: int, d: int, t_c: int, out: Output) -> None:
        tr, line = self.tracker, self.scene.lines[li]
        cls = int(tr.cls[row])
        tid = int(tr["id"][row])
        lane_idx = int(tr["lane"][row])
        lane_id = line.lane_id or (self.scene.lanes[lane_idx].lane_id if lane_idx >= 0 else None)
        ev_box = tr["last_box"][row].tolist()
        evidence = self._evidence(row, ev_box)
        if line.is_stop_line:
            if line.signal_id is None:
                forward = line.forward == 0 or d == (0 if line.forward > 0 else 1)
                if forward and self.scene.rules[ET.STOP_SIGN].enabled:
                    for zi in np.nonzero(tr["zone_in"][row] == 1)[0]:
                        tr["zone_in"][row, zi] = 2
                        self._stop_sign(row, int(zi), out)
                return
            self._red_light(row, line, d, t_c, lane_id, evidence, out)
            return
        first = not bool(tr["counted_any"][row])
        tr["counted_any"][row] = True
        self.pending.append(
            {
                "track": tid,
                "line": li,
                "dir": d,
                "ts": t_c,
                "cls": cls,
                "lane": lane_id,
                "first": first,
                "score": float(tr["score_sum"][row] / max(tr["hits"][row], 1)),
                "evidence": st.evidence_state(evidence),
                "fallback": float(tr["speed"][row]) if not np.isnan(tr["speed"][row]) else None,
            }
        )

    def _red_light(self, row: int, line, d: int, t_c: int, lane_id, evidence, out: Output) -> None:
        tr = self.tracker
        spec = self.scene.rules[ET.RED_LIGHT]
        cls = int(tr.cls[row])
        if not spec.enabled or not _VEH[cls] or line.signal_id is None or not spec.applies_to(lane_id):
            return
        forward_dir = 0 if line.forward >= 0 else 1  # index of "in"/"out" that is travel into the junction
        if line.forward != 0 and d != forward_dir:
            return
        phase, since = self.phase_at(line.signal_id, t_c)
        if phase != r.Phase.RED.value or since is None:
            return
        red_s = (t_c - since) / 1000.0
        speed = float(tr["speed"][row]) if not np.isnan(tr["speed"][row]) else 0.0
        if red_s < spec["grace_s"] or speed < spec["min_speed_kmh"]:
            return
        self._event(
            out,
            ET.RED_LIGHT,
            spec.severity,
            row,
            t_c,
            lane_id=lane_id,
            line_id=line.line_id,
            measurements={"speed_kmh": round(speed, 1), "red_elapsed_s": round(red_s, 2)},
            signal_phase=phase,
            evidence=evidence,
        )

    def _due_crossings(self, ts: int, out: Output, force: bool = False) -> None:
        """Emit crossings whose centred speed window is complete (or whose track ended)."""
        if not self.pending:
            return
        half = self.cfg.speed_window_s / 2 * 1000
        tr = self.tracker
        ids = tr["id"]
        still = []
        for p in self.pending:
            rows = np.nonzero(ids == p["track"])[0]
            row = int(rows[0]) if len(rows) else None
            if not force and row is not None and int(tr["last_ts"][row]) < p["ts"] + half:
                still.append(p)
                continue
            speed = self._centred_speed(row, p["ts"]) if row is not None else None
            if speed is None:
                speed = p["fallback"]
            self._emit_crossing(p, speed, out)
        self.pending = still

    def _centred_speed(self, row: int, t_c: int) -> float | None:
        tr = self.tracker
        tc = (t_c - self.epoch_ms) / 1000.0
        ht = tr["hist_t"][row : row + 1]
        valid = (np.arange(HIST)[None, :] < tr["hist_n"][row]) & (
            np.abs(ht - tc) <= self.cfg.speed_window_s / 2
        )
        vel, _ = _fit_velocity(ht, tr["hist_g"][row : row + 1], valid.astype(np.float64))
        if np.isnan(vel[0, 0]):
            return None
        return float(np.hypot(vel[0, 0], vel[0, 1]) * 3.6)

    def _emit_crossing(self, p: dict, speed: float | None, out: Output) -> None:
        line = self.scene.lines[p["line"]]
        direction = line.in_name if p["dir"] == 0 else line.out_name
        m = {"speed_kmh": round(speed, 2)} if speed is not None else {}
        ev = r.Event(
            event_id=f"{self.camera_id}:LINE_CROSSING:{p['track']}:{line.line_id}:{direction}:{p['ts']}",
            camera_id=self.camera_id,
            event_type=ET.LINE_CROSSING,
            severity=r.Severity.INFO,
            ts_ms=p["ts"],
            track_id=p["track"],
            class_id=p["cls"],
            lane_id=p["lane"],
            line_id=line.line_id,
            direction=direction,
            confidence=round(p["score"], 3),
            measurements=m,
            evidence=st.evidence_load(p["evidence"]),
        )
        out.events.append(ev)
        if _VEH[p["cls"]]:
            self.windows.add_crossing(p["ts"], p["lane"], p["cls"], speed, p["first"])

    # --- rules -------------------------------------------------------------------------------------------

    def _rules(
        self,
        rows: np.ndarray,
        code: np.ndarray,
        ground: np.ndarray,
        ts: int,
        confirmed: np.ndarray,
        out: Output,
    ) -> None:
        tr, sc = self.tracker, self.scene
        rules = sc.rules
        cls = tr.cls[rows]
        veh = _VEH[cls] & confirmed
        speed = tr["speed"][rows]
        speed = np.where(np.isnan(speed), 0.0, speed)
        lane = tr["lane"][rows]

        # Speeding: over limit + tolerance continuously for min_duration_s.
        spec = rules[ET.SPEEDING]
        if spec.enabled:
            limit = np.where(
                lane >= 0, sc.lane_limit[lane] if len(sc.lane_limit) else 0.0, spec["default_limit_kmh"]
            )
            over = veh & (limit > 0) & (speed > limit + spec["tolerance_kmh"])
            since = tr["over_since"][rows]
            since = np.where(over, np.where(since < 0, ts, since), -1)
            tr["over_since"][rows] = since
            tr["over_max"][rows] = np.where(over, np.maximum(tr["over_max"][rows], speed), 0.0)
            fire = over & ~tr["speeding_done"][rows] & (ts - since >= spec["min_duration_s"] * 1000)
            for i in np.nonzero(fire)[0]:
                row = rows[i]
                lane_id = sc.lanes[lane[i]].lane_id if lane[i] >= 0 else None
                if not spec.applies_to(lane_id):
                    continue
                tr["speeding_done"][row] = True
                self._event(
                    out,
                    ET.SPEEDING,
                    spec.severity,
                    row,
                    int(since[i]),
                    lane_id=lane_id,
                    measurements={
                        "speed_kmh": round(float(tr["over_max"][row]), 1),
                        "limit_kmh": float(limit[i]),
                        "duration_s": round((ts - since[i]) / 1000, 2),
                    },
                )

        # Wrong way: moving against the lane's direction, for min_distance_m of travel.
        spec = rules[ET.WRONG_WAY]
        if spec.enabled and sc.lanes:
            inlane = veh & (lane >= 0) & (speed >= spec["min_speed_kmh"])
            vel = tr["vel"][rows]
            d = sc.lane_direction(np.where(inlane, lane, -1), ground)
            cosv = (d * vel).sum(axis=1) / np.maximum(np.hypot(vel[:, 0], vel[:, 1]), 1e-6)
            against = inlane & (cosv < spec["max_cos"])
            if against.any():
                # The box bottom is the vehicle's nearest point to the camera, not its footprint centre: a
                # vehicle in the next lane over can put it inside the opposite lane. Wrong-way needs the
                # point a quarter of the box higher (towards the footprint centre) in the same lane too.
                k = np.nonzero(against)[0]
                x = tr["x"][rows[k]]
                raised = np.stack([x[:, 0], x[:, 1] + x[:, 3] / 4], axis=1)
                against[k] &= (sc.regions(raised) & 31).astype(np.int32) - 1 == lane[k]
            since = tr["ww_since"][rows]
            dist = tr["ww_dist"][rows]
            # Distance travelled against the flow: the last step's displacement along the lane, counted
            # only across a short gap (after a long one the step may join two different vehicles).
            n = tr["hist_n"][rows]
            prev = (n - 2) % HIST
            gap = ts - (tr["hist_t"][rows, prev] * 1000 + self.epoch_ms)
            disp = ground - tr["hist_g"][rows, prev]
            back = np.maximum(-(disp * d).sum(axis=1), 0.0)
            # A step faster than 180 km/h is a tracking jump (two objects joined), not driving.
            step = np.where((n > 1) & (gap <= 500) & (back <= 50.0 * gap / 1000), back, 0.0)
            dist = np.where(against, dist + step, 0.0)
            since = np.where(against, np.where(since < 0, ts, since), -1)
            tr["ww_since"][rows], tr["ww_dist"][rows] = since, dist
            fire = (
                against
                & ~tr["ww_done"][rows]
                & (dist >= spec["min_distance_m"])
                & (ts - since >= spec["min_duration_s"] * 1000)
            )
            for i in np.nonzero(fire)[0]:
                row = rows[i]
                lane_id = sc.lanes[lane[i]].lane_id
                if not spec.applies_to(lane_id):
                    continue
                tr["ww_done"][row] = True
                self._event(
                    out,
                    ET.WRONG_WAY,
                    spec.severity,
                    row,
                    int(since[i]),
                    lane_id=lane_id,
                    measurements={
                        "speed_kmh": round(float(speed[i]), 1),
                        "distance_m": round(float(dist[i]), 1),
                    },
                )

        # Pedestrian in the roadway (a lane or ROADWAY zone) and not on a crosswalk, for min_duration_s.
        spec = rules[ET.PEDESTRIAN_IN_ROADWAY]
        ped = confirmed & (cls == 0)
        if spec.enabled and ped.any() and (sc.lanes or sc.roadway):
            on_road = ped & ((lane >= 0) | (code & BIT_ROADWAY > 0)) & (code & BIT_CROSSWALK == 0)
            since = tr["ped_since"][rows]
            since = np.where(on_road, np.where(since < 0, ts, since), -1)
            tr["ped_since"][rows] = since
            fire = on_road & ~tr["ped_done"][rows] & (ts - since >= spec["min_duration_s"] * 1000)
            for i in np.nonzero(fire)[0]:
                row = rows[i]
                lane_id = sc.lanes[lane[i]].lane_id if lane[i] >= 0 else None
                tr["ped_done"][row] = True
                self._event(
                    out,
                    ET.PEDESTRIAN_IN_ROADWAY,
                    spec.severity,
                    row,
                    int(since[i]),
                    lane_id=lane_id,
                    measurements={"duration_s": round((ts - since[i]) / 1000, 2)},
                )

        # Stopped time (dwell) and lane blockage.
        spec = rules[ET.LANE_BLOCKAGE]
        # Hysteresis: a stop starts below max_speed_kmh and only ends above twice that once the vehicle
        # has also moved STOP_MOVE_M from where it stopped (tracker-filtered ground position). Far from
        # the camera a pixel is half a metre: one jittered box in a short fit window (after a dropout)
        # reads as 8 km/h for a parked car, and a 60 s blockage clock must not restart on that.
        since = tr["stopped_since"][rows]
        slow = veh & (tr["hist_n"][rows] >= 3)
        here = np.where(tr["gok"][rows][:, None], tr["g"][rows], ground)
        moved = np.hypot(*(here - tr["stop_g"][rows]).T) > STOP_MOVE_M
        stopped = slow & np.where(
            since >= 0, (speed <= 2 * spec["max_speed_kmh"]) | ~moved, speed <= spec["max_speed_kmh"]
        )
        start = stopped & (since < 0)
        tr["stop_g"][rows[start]] = here[start]
        since = np.where(stopped, np.where(since < 0, ts, since), -1)
        tr["stopped_since"][rows] = since
        if spec.enabled:
            cand = (
                stopped
                & (lane >= 0)
                & ~tr["block_done"][rows]
                & (ts - since >= spec["min_duration_s"] * 1000)
            )
            for i in np.nonzero(cand)[0]:
                row = rows[i]
                lane_id = sc.lanes[lane[i]].lane_id
                if not spec.applies_to(lane_id) or self._queued(row, int(lane[i]), ground[i], ts, spec):
                    continue
                tr["block_done"][row] = True
                self._event(
                    out,
                    ET.LANE_BLOCKAGE,
                    spec.severity,
                    row,
                    int(since[i]),
                    lane_id=lane_id,
                    measurements={"stopped_s": round((ts - since[i]) / 1000, 1)},
                )

        # Stop sign: inside a STOP_ZONE the vehicle must get below max_stop_speed_kmh at least once. The
        # visit is judged when the vehicle crosses the zone's unsignalled stop line forwards (see
        # _on_crossing); without such a line, once it has been out of the zone for a second. A track that
        # ends inside the zone is not judged: it never drove through.
        if sc.stop_zones:
            spec = rules[ET.STOP_SIGN]
            for zi in range(len(sc.stop_zones)):
                inside = veh & (code & (1 << (BIT_STOP0 + zi)) > 0)
                state = tr["zone_in"][rows, zi]
                entered = inside & (state == 0)
                tr["zone_entry"][rows[entered], zi] = ts
                tr["zone_in"][rows[inside & (state == 0)], zi] = 1
                tr["zone_last"][rows[inside], zi] = ts
                tr["zone_min"][rows[inside], zi] = np.minimum(tr["zone_min"][rows[inside], zi], speed[inside])
                if not self._unsignalled_stop_lines:
                    left = ~inside & (state == 1) & veh & (ts - tr["zone_last"][rows, zi] >= 1000)
                    for i in np.nonzero(left)[0]:
                        tr["zone_in"][rows[i], zi] = 2
                        if spec.enabled:
                            self._stop_sign(int(rows[i]), zi, out)

    def _stop_sign(self, row: int, zi: int, out: Output) -> None:
        tr = self.tracker
        spec = self.scene.rules[ET.STOP_SIGN]
        vmin = float(tr["zone_min"][row, zi])
        if vmin <= spec["max_stop_speed_kmh"] or not np.isfinite(vmin):
            return
        lane_idx = int(tr["lane"][row])
        lane_id = self.scene.lanes[lane_idx].lane_id if lane_idx >= 0 else None
        if not spec.applies_to(lane_id):
            return
        self._event(
            out,
            ET.STOP_SIGN,
            spec.severity,
            row,
            int(tr["zone_entry"][row, zi]),
            lane_id=lane_id,
            measurements={"min_speed_kmh": round(vmin, 1), "stop_speed_kmh": spec["max_stop_speed_kmh"]},
            attributes={"zone_id": self.scene.stop_zones[zi].zone_id},
        )

    def _stop_line_positions(self) -> dict[int, list[tuple[float, str | None]]]:
        """Per lane index: (arc length of each stop line on its centreline, its signal id)."""
        out: dict[int, list[tuple[float, str | None]]] = {}
        for li, lane in enumerate(self.scene.lanes):
            for line in self.scene.lines:
                if line.is_stop_line and lane.lane_id in line.lane_ids:
                    mid = ((line.a + line.b) / 2)[None]
                    pos = float(self.scene.lane_position(np.array([li]), mid)[0])
                    out.setdefault(li, []).append((pos, line.signal_id))
        return out

    def _queued(self, row: int, lane_idx: int, ground: np.ndarray, ts: int, spec) -> bool:
        """Is a stopped vehicle waiting in a queue (at a stop line, or behind another stopped vehicle)?"""
        tr = self.tracker
        pos = float(tr["pos"][row])
        for stop_pos, signal_id in self._box_lane_stop.get(lane_idx, []):
            ahead = stop_pos - pos
            if -2.0 <= ahead <= spec["stop_line_m"]:
                phase = self.phase_at(signal_id, ts)[0] if signal_id else "RED"
                if phase != r.Phase.GREEN.value:
                    return True
        others = (tr["lane"] == lane_idx) & (tr["stopped_since"] >= 0) & (tr["last_ts"] >= ts - 1000)
        others[row] = False
        ahead = tr["pos"][others] - pos
        return bool(np.any((ahead > 0) & (ahead <= spec["queue_gap_m"])))

    # --- windows ---------------------------------------------------------------------------------------

    def _frame_windows(self, ts: int) -> None:
        """Per-lane presence, occupancy and queue of this frame, vectorised over tracks with bincount."""
        tr, sc = self.tracker, self.scene
        n_lanes = len(sc.lanes)
        lanes = tr["lane"]
        veh = (tr["id"] >= 0) & (tr["last_ts"] >= ts - 500) & _VEH[tr.cls]  # confirmed, seen within 0.5 s
        per_lane: dict[str, tuple[int, float, int, float]] = {}
        if n_lanes and veh.any():
            inl = veh & (lanes >= 0)
            li = lanes[inl]
            length = _LEN[tr.cls[inl]]
            n = np.bincount(li, minlength=n_lanes)
            occ = np.bincount(li, weights=length, minlength=n_lanes)
            speed = tr["speed"][inl]
            q = ~np.isnan(speed) & (speed <= 5.0)
            qn = np.bincount(li[q], minlength=n_lanes)
            qm = np.zeros(n_lanes)
            if q.any():
                pos = tr["pos"][inl][q]
                hi = np.full(n_lanes, -np.inf)
                lo = np.full(n_lanes, np.inf)
                vl = np.zeros(n_lanes)
                np.maximum.at(hi, li[q], pos)
                np.minimum.at(lo, li[q], pos)
                np.maximum.at(vl, li[q], length[q])
                qm = np.where(qn > 0, hi - lo + vl, 0.0)
            for k in np.nonzero(n)[0]:
                lane = sc.lanes[k]
                per_lane[lane.lane_id] = (
                    int(n[k]),
                    min(float(occ[k]) / lane.length_m, 1.0),
                    int(qn[k]),
                    float(qm[k]),
                )
        self.windows.add_frame(ts, per_lane, int(veh.sum()))

    def _emit_time(self, ts: int, out: Output) -> None:
        stats = self.windows.advance(self.max_ts)
        self._close_windows(stats, out)
        for a in self.alerts.on_time(ts):
            out.alerts.append(a)

    def _close_windows(self, stats: list[r.TrafficStats], out: Output) -> None:
        out.stats.extend(stats)
        spec = self.scene.rules[ET.CONGESTION]
        for s in stats:
            # Congestion is judged per lane where the camera has lanes (the whole-camera window would
            # report the same jam again), on the whole camera otherwise.
            per_lane = bool(self.scene.lanes)
            if (
                s.window_s != 60
                or not spec.enabled
                or (s.lane_id is None) == per_lane
                or (s.lane_id is not None and not spec.applies_to(s.lane_id))
            ):
                continue
            key = s.lane_id or ""
            state = self.congestion.setdefault(key, [None, False])
            if LOS_RANK[s.level_of_service] >= spec["min_los"]:
                if state[0] is None:
                    state[0] = s.window_start_ms
                if not state[1] and s.window_end_ms - state[0] >= spec["min_duration_s"] * 1000:
                    state[1] = True
                    ev = r.Event(
                        event_id=f"{self.camera_id}:CONGESTION:{key or '*'}:{state[0]}",
                        camera_id=self.camera_id,
                        event_type=ET.CONGESTION,
                        severity=spec.severity,
                        ts_ms=state[0],
                        end_ts_ms=s.window_end_ms,
                        lane_id=s.lane_id,
                        confidence=1.0,
                        measurements={
                            "duration_s": (s.window_end_ms - state[0]) / 1000,
                            "density_veh_per_km": s.density_veh_per_km or 0.0,
                            "queue_length_m": s.queue_length_m or 0.0,
                            **({"mean_speed_kmh": s.mean_speed_kmh} if s.mean_speed_kmh is not None else {}),
                        },
                        attributes={"level_of_service": s.level_of_service.value},
                    )
                    out.events.append(ev)
                    out.alerts.extend(self.alerts.on_event(ev))
            else:
                state[0], state[1] = None, False

    # --- events ----------------------------------------------------------------------------------------

    def _evidence(self, row: int, box: list[float]) -> r.Evidence:
        return r.Evidence(
            frame_seq=int(self.tracker["last_seq"][row]),
            capture_ts_ms=int(self.tracker["last_ts"][row]),
            frame_ref=self.frame_ref,
            box=[round(float(v), 1) for v in box],
        )

    def _event(
        self,
        out: Output,
        et: r.EventType,
        severity: r.Severity,
        row: int,
        start_ts: int,
        *,
        lane_id=None,
        line_id=None,
        measurements=None,
        signal_phase=None,
        evidence=None,
        attributes=None,
    ) -> None:
        tr = self.tracker
        tid = int(tr["id"][row])
        ev = r.Event(
            event_id=f"{self.camera_id}:{et.value}:{tid}:{start_ts}",
            camera_id=self.camera_id,
            event_type=et,
            severity=severity,
            ts_ms=start_ts,
            end_ts_ms=int(tr["last_ts"][row]),
            track_id=tid,
            class_id=int(tr.cls[row]),
            lane_id=lane_id,
            line_id=line_id,
            confidence=round(float(tr["score_sum"][row] / max(tr["hits"][row], 1)), 3),
            measurements=measurements or {},
            signal_phase=signal_phase,
            evidence=evidence or self._evidence(row, tr["last_box"][row].tolist()),
            attributes=attributes or {},
        )
        out.events.append(ev)
        out.alerts.extend(self.alerts.on_event(ev))

    def _finalise(self, rows: np.ndarray, out: Output) -> None:
        """Tracks that are about to be dropped: flush their pending crossings and open stop-zone visits."""
        tr, sc = self.tracker, self.scene
        if len(sc.lines):
            # A track that ends (leaves the view, the run ends) just past a line, inside the hysteresis
            # band, has crossed it: the band only guards against jitter of tracks that stay.
            for row in rows[tr["id"][rows] >= 0]:
                prev = tr["prev_s"][row]
                side = tr["side"][row]
                last = tr["hist_g"][row, (tr["hist_n"][row] - 1) % HIST]
                along = ((last - sc.line_a) * sc.line_dir).sum(axis=1)
                within = (along >= -self.cfg.line_margin_m) & (along <= sc.line_len + self.cfg.line_margin_m)
                for li in np.nonzero((side != 0) & (prev * side < 0) & within)[0]:
                    d = 0 if prev[li] > 0 else 1
                    if not tr["counted"][row, li, d]:
                        tr["counted"][row, li, d] = True
                        tr["side"][row, li] = -side[li]
                        self._on_crossing(int(row), int(li), d, int(tr["zero_ts"][row, li]), out)
        ids = set(int(i) for i in tr["id"][rows] if i >= 0)
        if ids and self.pending:
            ready = [p for p in self.pending if p["track"] in ids]
            self.pending = [p for p in self.pending if p["track"] not in ids]
            for p in ready:
                row = int(np.nonzero(tr["id"] == p["track"])[0][0])
                speed = self._centred_speed(row, p["ts"])
                self._emit_crossing(p, speed if speed is not None else p["fallback"], out)

    def flush(self) -> Output:
        """End of a finite input: finalise every track, close every window."""
        out = Output()
        tr = self.tracker
        if len(tr):
            self._finalise(np.arange(len(tr)), out)
        self._due_crossings(self.last_ts or 0, out, force=True)
        self._close_windows(self.windows.flush(), out)
        return out

    # --- snapshot ----------------------------------------------------------------------------------------

    def to_state(self) -> bytes:
        meta = {
            "camera_id": self.camera_id,
            "next_id": self.tracker.next_id,
            "epoch_ms": self.epoch_ms,
            "last_ts": self.last_ts,
            "max_ts": self.max_ts,
            "last_seq": self.last_seq,
            "late_records": self.late_records,
            "signals": self.signals,
            "pending": self.pending,
            "congestion": self.congestion,
            "windows": self.windows.to_state(),
            "alerts": self.alerts.to_state(),
            "frame_ref": None
            if self.frame_ref is None
            else [self.frame_ref.topic, self.frame_ref.partition, self.frame_ref.offset],
        }
        return st.encode(meta, self.tracker.cols)

    def load_state(self, blob: bytes) -> None:
        meta, cols = st.decode(blob)
        if meta["camera_id"] != self.camera_id:
            raise ValueError(f"snapshot of camera {meta['camera_id']!r} offered to {self.camera_id!r}")
        tr = self.tracker
        if set(cols) != set(tr.cols) or any(cols[k].shape[1:] != tr.cols[k].shape[1:] for k in cols):
            # The scene changed shape (lines, zones) since the snapshot: keep ids, start tracks afresh.
            log.warning("camera %s: snapshot does not fit the current scene; tracks restart", self.camera_id)
        else:
            tr.cols = cols
        tr.next_id = meta["next_id"]
        self.epoch_ms, self.last_ts, self.max_ts = meta["epoch_ms"], meta["last_ts"], meta["max_ts"]
        self.last_seq, self.late_records = meta["last_seq"], meta["late_records"]
        self.signals = {k: [tuple(x) for x in v] for k, v in meta["signals"].items()}
        self.pending = meta["pending"]
        self.congestion = meta["congestion"]
        self.windows.load_state(meta["windows"])
        self.alerts.load_state(meta["alerts"])
        fr = meta["frame_ref"]
        self.frame_ref = None if fr is None else r.FrameRef(fr[0], fr[1], fr[2])


class Engine:
    """All cameras of one processor instance (or of an evaluation run)."""

    def __init__(self, settings: AnalyticsSettings | None = None) -> None:
        self.cfg = settings or AnalyticsSettings()
        self.cameras: dict[str, CameraEngine] = {}
        self.registrations: dict[str, r.Camera] = {}
        self.early_signals: dict[str, list[r.SignalPhase]] = {}

    def on_camera(self, camera: r.Camera) -> None:
        """Register or update a camera (raises SceneError, leaving the old config in force)."""
        old = self.cameras.get(camera.camera_id)
        if old is not None and self.registrations.get(camera.camera_id) == camera:
            return
        eng = CameraEngine(camera, self.cfg, next_track_id=old.tracker.next_id if old else 1)
        if old is not None:
            eng.signals = old.signals
        for sig in self.early_signals.pop(camera.camera_id, []):
            eng.on_signal(sig)
        self.cameras[camera.camera_id] = eng
        self.registrations[camera.camera_id] = camera

    def on_signal(self, sig: r.SignalPhase) -> None:
        eng = self.cameras.get(sig.camera_id)
        if eng is None:
            self.early_signals.setdefault(sig.camera_id, []).append(sig)
            del self.early_signals[sig.camera_id][:-64]
        else:
            eng.on_signal(sig)

    def on_detections(self, det: r.Detections) -> Output:
        eng = self.cameras.get(det.camera_id)
        if eng is None:
            raise KeyError(f"detections for unregistered camera {det.camera_id!r}")
        return eng.on_detections(det)

    def flush(self) -> Output:
        out = Output()
        for cid in sorted(self.cameras):
            out.extend(self.cameras[cid].flush())
        return out
