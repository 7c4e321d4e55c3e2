"""The per-camera world: vehicles on lanes (IDM car-following), signals, stop signs, pedestrians, plants.

Vehicles are a struct of numpy arrays; one step updates all of them at once (leaders found by a
lexsort on (lane, position), accelerations by the Intelligent Driver Model). Stopping for a red
signal, a stop sign, a pedestrian or a planned breakdown is a virtual stationary leader. Planted
behaviours (red-light runner, speeder, wrong-way driver, ...) are spawned when the conditions
that make them happen hold (lane clear, the right signal phase), so the violation really happens
in the trajectories; the truth is then *measured* from the trajectories, never just declared.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from producers.simulator.geometry import PinholeCamera, points_in_polygon
from producers.simulator.scene import SIDEWALK, Scene
from producers.simulator.signals import SignalPlan
from schemas.records import Phase, ZoneKind

# class -> (COCO id, length, width, height, max accel) in metres, m/s^2
CLASSES: dict[str, tuple[int, float, float, float, float]] = {
    "car": (2, 4.5, 1.8, 1.5, 1.6),
    "truck": (7, 10.0, 2.5, 3.5, 0.9),
    "bus": (5, 12.0, 2.55, 3.2, 1.0),
    "motorcycle": (3, 2.1, 0.8, 1.4, 2.2),
    "bicycle": (1, 1.8, 0.6, 1.7, 1.0),
    "person": (0, 0.5, 0.5, 1.7, 0.0),
}
CLASS_NAMES = {v[0]: k for k, v in CLASSES.items()}

S0 = 2.0  # IDM jam distance (m)
HEADWAY = 1.2  # IDM time headway (s)
B_COMF = 2.0  # comfortable deceleration (m/s^2)
B_COMMIT = 4.0  # a vehicle that cannot stop at this deceleration on amber goes on
B_MAX = 9.0  # physical braking limit
STOP_WAIT_S = 1.0  # dwell at a stop sign after stopping
_PHASE_CODE = {Phase.GREEN: 0, Phase.AMBER: 1, Phase.RED: 2}


@dataclass(slots=True)
class Plant:
    """One planted behaviour from the scenario (what to attempt; the truth records what happened)."""

    kind: str
    at_s: float
    params: dict[str, Any]
    lane: int | None = None
    track_id: int | None = None
    spawned_t: float | None = None
    done: bool = False


@dataclass(slots=True)
class Sample:
    """Per tick records of every live object (concatenated at the end)."""

    frame: list[np.ndarray] = field(default_factory=list)
    tid: list[np.ndarray] = field(default_factory=list)
    xy: list[np.ndarray] = field(default_factory=list)
    heading: list[np.ndarray] = field(default_factory=list)
    speed: list[np.ndarray] = field(default_factory=list)
    s: list[np.ndarray] = field(default_factory=list)


@dataclass(slots=True)
class TrackMeta:
    track_id: int
    kind: str  # vehicle | pedestrian
    class_name: str
    lane: int | None
    behaviour: str  # normal | planted kind
    dims: tuple[float, float, float]  # length, width, height
    plant: int | None = None


_VEH_FIELDS = {
    "tid": np.int64,
    "lane": np.int64,
    "s": np.float64,
    "v": np.float64,
    "v0": np.float64,
    "L": np.float64,
    "W": np.float64,
    "H": np.float64,
    "amax": np.float64,
    "committed": bool,
    "stop_ok": bool,
    "wait": np.float64,
    "ignore_signal": bool,
    "roll": np.float64,
    "hold_s": np.float64,
    "hold_until": np.float64,
    "hold_dur": np.float64,
}


class Fleet:
    """Struct of arrays for the vehicles alive in one world."""

    def __init__(self) -> None:
        self.a: dict[str, np.ndarray] = {k: np.zeros(0, dtype=t) for k, t in _VEH_FIELDS.items()}

    def __len__(self) -> int:
        return len(self.a["tid"])

    def add(self, **values: Any) -> None:
        defaults = {"roll": 0.0, "hold_s": math.nan, "hold_until": math.nan, "hold_dur": 0.0, "wait": 0.0}
        for k, t in _VEH_FIELDS.items():
            val = values.get(k, defaults.get(k, False if t is bool else 0))
            self.a[k] = np.append(self.a[k], np.asarray([val], dtype=t))

    def keep(self, mask: np.ndarray) -> None:
        for k in self.a:
            self.a[k] = self.a[k][mask]


class World:
    """One camera's world, stepped at the frame rate."""

    def __init__(
        self,
        scene: Scene,
        template: dict[str, Any],
        plan: SignalPlan | None,
        rng: np.random.Generator,
        *,
        duration_s: float,
        fps: float,
    ) -> None:
        self.scene = scene
        self.plan = plan
        self.rng = rng
        self.fps = fps
        self.duration_s = duration_s
        self.n_frames = math.floor(duration_s * fps + 1e-9)
        self.frame_dt = 1.0 / fps
        self.substeps = max(1, math.ceil(self.frame_dt / 0.1 - 1e-9))
        self.fleet = Fleet()
        self._lane_cache: dict[str, np.ndarray] | None = None
        self.meta: dict[int, TrackMeta] = {}
        self.next_tid = 1
        self.samples = Sample()
        self.plants: list[Plant] = []
        self.caps: list[tuple[int, float, float, float, float]] = []  # lane, s0, s1, cap m/s, from t
        self.suppress: list[tuple[int, float, float, int]] = []  # lane, from t, until t, owner plant
        self.peds: dict[str, np.ndarray] = {
            "tid": np.zeros(0, np.int64),
            "xy": np.zeros((0, 2)),
            "dir": np.zeros((0, 2)),
            "speed": np.zeros(0),
            "left": np.zeros(0),
        }
        self._ped_schedule: list[tuple[float, np.ndarray, np.ndarray, float, str, int | None]] = []
        limit_default = float(template.get("speed_limit_kmh", 50.0))
        self.class_mix = template.get("class_mix") or {
            "car": 0.82,
            "truck": 0.08,
            "bus": 0.03,
            "motorcycle": 0.07,
        }
        self.speed_frac = tuple(template.get("speed_fraction", (0.85, 1.04)))
        self.limit_kmh = limit_default
        self._build_demand(template)
        self._build_plants(template.get("planted") or [])
        self._build_pedestrians(template.get("pedestrians") or {})

    # --- set-up ----------------------------------------------------------------------------------

    def _draw_vehicle(self, rng: np.random.Generator, lane: int) -> tuple[str, float]:
        names = list(self.class_mix)
        p = np.array([self.class_mix[n] for n in names], dtype=np.float64)
        cls = names[int(rng.choice(len(names), p=p / p.sum()))]
        limit = self.scene.lanes[lane].limit_ms
        frac = rng.uniform(*self.speed_frac)
        if cls in ("truck", "bus"):
            frac = min(frac, 0.95)
        v0 = limit * frac
        if cls == "bicycle":
            v0 = rng.uniform(15.0, 20.0) / 3.6
        return cls, float(v0)

    def _build_demand(self, template: dict[str, Any]) -> None:
        """Poisson arrivals per lane, drawn up front so background traffic depends only on the seed."""
        demand = dict(template.get("demand_veh_h") or {})
        changes: list[tuple[str, float, float]] = []
        for p in template.get("planted") or []:
            if p.get("type") == "CONGESTION" and "demand_veh_h" in p:
                for lid in p.get("lanes", []):
                    changes.append((lid, float(p.get("at_s", 0.0)), float(p["demand_veh_h"])))
        self.arrivals: dict[int, deque[tuple[float, str, float]]] = {}
        for i, lane in enumerate(self.scene.lanes):
            if lane.reverse_of is not None:
                continue
            base = float(demand.get(lane.lane_id, demand.get("default", 0.0)))
            steps = sorted([(0.0, base)] + [(t, q) for lid, t, q in changes if lid == lane.lane_id])
            qmax = max(q for _, q in steps)
            out: deque[tuple[float, str, float]] = deque()
            t = 0.0
            while qmax > 0:
                t += self.rng.exponential(3600.0 / qmax)
                if t >= self.duration_s:
                    break
                q = [q for ts, q in steps if ts <= t][-1]
                if self.rng.random() < q / qmax:
                    cls, v0 = self._draw_vehicle(self.rng, i)
                    out.append((t, cls, v0))
            self.arrivals[i] = out

    def _build_plants(self, planted: list[dict[str, Any]]) -> None:
        for spec in planted:
            kind = str(spec["type"]).upper()
            plant = Plant(kind, float(spec.get("at_s", 0.0)), dict(spec))
            if "lane" in spec:
                plant.lane = self.scene.lane_index(str(spec["lane"]))
            if kind == "CONGESTION":
                for lid in spec.get("lanes", []):
                    lane = self.scene.lane_index(lid)
                    if "cap_kmh" in spec:
                        z0, z1 = spec.get("zone_m", (self.scene.lanes[lane].line.length - 50, 1e9))
                        self.caps.append(
                            (lane, float(z0), float(z1), float(spec["cap_kmh"]) / 3.6, plant.at_s)
                        )
                plant.done = True
            elif kind in ("RED_LIGHT", "SPEEDING", "WRONG_WAY", "AMBER_STOP", "NEAR_SPEED", "STOP_SIGN"):
                # Drain the lane beforehand so the planted vehicle meets no queue.
                assert plant.lane is not None, f"{kind} needs a lane"
                # Signalised lanes drain only on green: start a cycle early there.
                signalised = self.scene.lanes[plant.lane].signal_id is not None
                lead = float(spec.get("clear_before_s", 70.0 if signalised else 25.0))
                self.suppress.append((plant.lane, plant.at_s - lead, math.inf, len(self.plants)))
            self.plants.append(plant)

    def _build_pedestrians(self, spec: dict[str, Any]) -> None:
        """Crosswalk users during their walk phase, sidewalk walkers; jaywalkers come from plants."""
        rng = self.rng
        per_cycle = float(spec.get("crosswalk_per_cycle", 0.0))
        if self.plan is not None and per_cycle > 0:
            for cw in self.scene.crosswalks:
                for t0, sig, ph in self.plan.changes(self.duration_s):
                    if sig != cw.walk_signal or ph != Phase.GREEN:
                        continue
                    for _ in range(int(rng.poisson(per_cycle))):
                        start = t0 + rng.uniform(0.5, 8.0)
                        a, b = np.array(cw.a, float), np.array(cw.b, float)
                        if rng.random() < 0.5:
                            a, b = b, a
                        # Stay in the crosswalk's middle so box jitter does not push them out of it.
                        off = rng.uniform(-0.6, 0.6)
                        d = (b - a) / np.linalg.norm(b - a)
                        n = np.array([-d[1], d[0]]) * off
                        self._ped_schedule.append(
                            (start, a + n, b + n, rng.uniform(1.2, 1.6), "crosswalk", None)
                        )
        per_min = float(spec.get("sidewalk_per_min", 0.0))
        if per_min > 0 and self.scene.sidewalks:
            t = 0.0
            while True:
                t += rng.exponential(60.0 / per_min)
                if t >= self.duration_s:
                    break
                a, b = self.scene.sidewalks[int(rng.integers(len(self.scene.sidewalks)))]
                a, b = np.array(a, float), np.array(b, float)
                if rng.random() < 0.5:
                    a, b = b, a
                self._ped_schedule.append((t, a, b, rng.uniform(1.0, 1.5), "sidewalk", None))
        self._ped_schedule.sort(key=lambda e: e[0])
        self._ped_queue = deque(self._ped_schedule)

    # --- helpers ---------------------------------------------------------------------------------

    def _new_tid(self) -> int:
        tid = self.next_tid
        self.next_tid += 1
        return tid

    def _suppressed(self, lane: int, t: float) -> bool:
        return any(ln == lane and t0 <= t < t1 for ln, t0, t1, _ in self.suppress)

    def _lane_vehicles(self, lane: int) -> np.ndarray:
        return np.flatnonzero(self.fleet.a["lane"] == lane)

    def _phase(self, lane: int, t: float) -> Phase:
        sig = self.scene.lanes[lane].signal_id
        if sig is None or self.plan is None:
            return Phase.GREEN
        return self.plan.phase(sig, t)

    def _spawn(
        self,
        lane: int,
        cls: str,
        v0: float,
        v: float,
        t: float,
        behaviour: str = "normal",
        plant: int | None = None,
        **extra: Any,
    ) -> int:
        _coco, length, width, height, amax = CLASSES[cls]
        tid = self._new_tid()
        self.fleet.add(tid=tid, lane=lane, s=0.0, v=v, v0=v0, L=length, W=width, H=height, amax=amax, **extra)
        self.meta[tid] = TrackMeta(tid, "vehicle", cls, lane, behaviour, (length, width, height), plant)
        return tid

    def _rear_gap(self, lane: int, length: float) -> tuple[float, float]:
        """Free space behind the last vehicle of ``lane`` at the lane start, and that vehicle's speed."""
        idx = self._lane_vehicles(lane)
        if len(idx) == 0:
            return math.inf, math.inf
        f = self.fleet.a
        k = idx[np.argmin(f["s"][idx])]
        return float(f["s"][k] - f["L"][k] / 2 - length / 2), float(f["v"][k])

    # --- spawning --------------------------------------------------------------------------------

    def _spawn_background(self, t: float) -> None:
        for lane, queue in self.arrivals.items():
            while queue and queue[0][0] <= t and self._suppressed(lane, queue[0][0]):
                queue.popleft()  # the lane is closed upstream: that vehicle went elsewhere
            if not queue or queue[0][0] > t:
                continue
            _, cls, v0 = queue[0]
            gap, v_last = self._rear_gap(lane, CLASSES[cls][1])
            v = min(v0, v_last)
            if gap >= S0 + v * HEADWAY * 0.8 and gap > S0 + 0.5:
                queue.popleft()
                self._spawn(lane, cls, v0, v, t)

    def _lane_clear(self, lane: int, upto: float | None = None) -> bool:
        idx = self._lane_vehicles(lane)
        if upto is None:
            return len(idx) == 0
        return not bool(np.any(self.fleet.a["s"][idx] < upto))

    def _spawn_plants(self, t: float) -> None:
        for k, p in enumerate(self.plants):
            if p.done or t < p.at_s:
                continue
            if t > p.at_s + float(p.params.get("give_up_s", 150.0)):
                p.done = True  # never got its conditions: the truth will simply not have it
                self._end_suppression(p, t)
                continue
            handler = getattr(self, f"_plant_{p.kind.lower()}", None)
            if handler is None:
                raise ValueError(f"unknown planted behaviour {p.kind!r}")
            if handler(k, p, t):
                p.spawned_t = t
                p.done = True

    def _end_suppression(self, p: Plant, t: float, extra: float = 0.0) -> None:
        """Close the lane closure a plant opened (it stays closed ``extra`` seconds more)."""
        k = self.plants.index(p)
        self.suppress = [
            (ln, t0, (t + extra if (owner == k and t1 == math.inf) else t1), owner)
            for ln, t0, t1, owner in self.suppress
        ]

    def _plant_cls(self, p: Plant) -> str:
        return str(p.params.get("class", "car"))

    def _plant_red_light(self, k: int, p: Plant, t: float) -> bool:
        lane = self.scene.lanes[p.lane]  # type: ignore[index]
        if lane.signal_id is None or self.plan is None or not self._lane_clear(p.lane):
            return False
        v = float(p.params.get("speed_kmh", lane.speed_limit_kmh * 0.9)) / 3.6
        arrive = t + (lane.stop_s or 0.0) / v
        # Arrive well inside the red: beyond any grace period, before the next green.
        if (
            self.plan.red_elapsed(lane.signal_id, arrive) < 3.0
            or self.plan.phase(lane.signal_id, arrive + 3.0) != Phase.RED
        ):
            return False
        p.track_id = self._spawn(p.lane, self._plant_cls(p), v, v, t, "RED_LIGHT", k, ignore_signal=True)  # type: ignore[arg-type]
        self._end_suppression(p, t, 3.0)
        return True

    def _plant_speeding(self, k: int, p: Plant, t: float) -> bool:
        lane = self.scene.lanes[p.lane]  # type: ignore[index]
        if not self._lane_clear(p.lane):
            return False
        v = float(p.params.get("speed_kmh", lane.speed_limit_kmh + 25.0)) / 3.6
        if (
            lane.signal_id is not None
            and self.plan is not None
            and self.plan.green_left(lane.signal_id, t) < lane.line.length / v + 1.0
        ):
            return False
        behaviour = "SPEEDING" if p.kind == "SPEEDING" else p.kind
        p.track_id = self._spawn(p.lane, self._plant_cls(p), v, v, t, behaviour, k)  # type: ignore[arg-type]
        self._end_suppression(p, t, 2.0)
        return True

    _plant_near_speed = _plant_speeding

    def _plant_amber_stop(self, k: int, p: Plant, t: float) -> bool:
        """A vehicle that reaches the hard-stopping distance just as amber starts: stops legally."""
        lane = self.scene.lanes[p.lane]  # type: ignore[index]
        if lane.signal_id is None or self.plan is None or not self._lane_clear(p.lane):
            return False
        v = lane.limit_ms * 0.95
        d_front = v * v / (2 * B_COMMIT) + float(p.params.get("margin_m", 2.0))
        travel = (lane.stop_s - d_front - CLASSES["car"][1] / 2) / v  # type: ignore[operator]
        left = self.plan.green_left(lane.signal_id, t)
        if not (0 < left - travel <= self.frame_dt / self.substeps + 1e-9):
            return False
        p.track_id = self._spawn(p.lane, "car", v, v, t, "AMBER_STOP", k)  # type: ignore[arg-type]
        self._end_suppression(p, t, 3.0)
        return True

    def _plant_wrong_way(self, k: int, p: Plant, t: float) -> bool:
        if not self._lane_clear(p.lane):
            return False
        rev = self.scene.reverse_lane(self.scene.lanes[p.lane].lane_id)  # type: ignore[index]
        v = float(p.params.get("speed_kmh", 40.0)) / 3.6
        p.track_id = self._spawn(rev, self._plant_cls(p), v, v, t, "WRONG_WAY", k, ignore_signal=True)
        # Keep the lane closed until the wrong-way driver has left the view.
        self._end_suppression(p, t, self.scene.lanes[rev].line.length / v + 2.0)
        return True

    def _plant_stop_sign(self, k: int, p: Plant, t: float) -> bool:
        lane = self.scene.lanes[p.lane]  # type: ignore[index]
        if not self._lane_clear(p.lane, (lane.stop_s or 0.0) + 2.0):
            return False
        v = lane.limit_ms * 0.9
        roll = float(p.params.get("roll_kmh", 15.0)) / 3.6
        p.track_id = self._spawn(p.lane, self._plant_cls(p), v, v, t, "STOP_SIGN", k, roll=roll)  # type: ignore[arg-type]
        self._end_suppression(p, t, 2.0)
        return True

    def _plant_lane_blockage(self, k: int, p: Plant, t: float) -> bool:
        lane = self.scene.lanes[p.lane]  # type: ignore[index]
        gap, _ = self._rear_gap(p.lane, 4.5)  # type: ignore[arg-type]
        if gap < 40.0:
            return False
        v = lane.limit_ms * 0.9
        hold_s = float(p.params.get("stop_at_m", lane.line.length * 0.35))
        dur = float(p.params.get("duration_s", 90.0))
        p.track_id = self._spawn(
            p.lane,
            self._plant_cls(p),
            v,
            v,
            t,
            "LANE_BLOCKAGE",
            k,
            hold_s=hold_s,
            hold_dur=dur,  # type: ignore[arg-type]
        )
        # Traffic behind a broken-down vehicle changes lane out of view: close this lane meanwhile.
        self.suppress.append((p.lane, t, t + dur + hold_s / max(v, 1.0) + 8.0, k))  # type: ignore[arg-type]
        return True

    def _plant_pedestrian_in_roadway(self, k: int, p: Plant, t: float) -> bool:
        arm = str(p.params.get("arm", "n"))
        along, across, lane_ids = self.scene.jaywalk_arms[arm]
        off = float(p.params.get("offset_m", 30.0))
        centre = np.array(along) * off
        # Wait for a gap: no vehicle within 45 m upstream of where the pedestrian crosses.
        for lid in lane_ids:
            li = self.scene.lane_index(lid)
            s_cross = self.scene.lanes[li].line.project(centre)
            idx = self._lane_vehicles(li)
            s = self.fleet.a["s"][idx]
            if np.any((s > s_cross - 45.0) & (s < s_cross + 6.0)):
                return False
        a = centre - np.array(across) * SIDEWALK
        b = centre + np.array(across) * SIDEWALK
        if p.params.get("reverse", False):
            a, b = b, a
        p.track_id = self._add_ped(a, b, float(p.params.get("speed_ms", 1.3)), "PEDESTRIAN_IN_ROADWAY", k)
        return True

    # --- pedestrians -----------------------------------------------------------------------------

    def _add_ped(self, a: np.ndarray, b: np.ndarray, speed: float, behaviour: str, plant: int | None) -> int:
        tid = self._new_tid()
        d = b - a
        dist = float(np.linalg.norm(d))
        ped = self.peds
        ped["tid"] = np.append(ped["tid"], tid)
        ped["xy"] = np.vstack([ped["xy"], a[None]])
        ped["dir"] = np.vstack([ped["dir"], (d / dist)[None]])
        ped["speed"] = np.append(ped["speed"], speed)
        ped["left"] = np.append(ped["left"], dist)
        _, length, width, height, _ = CLASSES["person"]
        self.meta[tid] = TrackMeta(
            tid, "pedestrian", "person", None, behaviour, (length, width, height), plant
        )
        return tid

    def _step_peds(self, t: float, dt: float) -> None:
        while self._ped_queue and self._ped_queue[0][0] <= t:
            _, a, b, speed, behaviour, plant = self._ped_queue.popleft()
            self._add_ped(a, b, speed, behaviour, plant)
        ped = self.peds
        if len(ped["tid"]) == 0:
            return
        step = ped["speed"] * dt
        ped["xy"] = ped["xy"] + ped["dir"] * np.minimum(step, ped["left"])[:, None]
        ped["left"] = ped["left"] - step
        keep = ped["left"] > -1e-9
        for k in ped:
            ped[k] = ped[k][keep]

    def _ped_obstacles(self) -> dict[int, np.ndarray]:
        """Per lane: arc lengths where a pedestrian stands in it (vehicles stop before them)."""
        out: dict[int, np.ndarray] = {}
        if len(self.peds["tid"]) == 0:
            return out
        lanes = self.scene.lanes
        p0 = np.array([ln.line.points[0] for ln in lanes])  # (L, 2); straight lanes
        d = np.array([ln.line.dirs[0] for ln in lanes])
        half = np.array([ln.width / 2 + 1.2 for ln in lanes])
        length = np.array([ln.line.length for ln in lanes])
        rel = self.peds["xy"][None, :, :] - p0[:, None, :]  # (L, P, 2)
        lat = np.abs(rel[..., 0] * d[:, None, 1] - rel[..., 1] * d[:, None, 0])
        along = rel[..., 0] * d[:, None, 0] + rel[..., 1] * d[:, None, 1]
        near = (lat < half[:, None]) & (along > 0) & (along < length[:, None])
        for i in np.flatnonzero(near.any(axis=1)).tolist():
            out[i] = along[i][near[i]]
        return out

    # --- vehicles --------------------------------------------------------------------------------

    def _lane_arrays(self) -> dict[str, np.ndarray]:
        """Per-lane control data as arrays (rebuilt when a wrong-way lane is added)."""
        lanes = self.scene.lanes
        if self._lane_cache is not None and len(self._lane_cache["stop_s"]) == len(lanes):
            return self._lane_cache
        sig_ids = list(self.plan.signal_ids) if self.plan is not None else []
        fwd = [ln.reverse_of is None for ln in lanes]
        stop_s = np.array(
            [
                ln.stop_s if (ln.stop_s is not None and ok) else np.nan
                for ln, ok in zip(lanes, fwd, strict=True)
            ]
        )
        signal = np.array(
            [
                sig_ids.index(ln.signal_id) if (ln.signal_id in sig_ids and ok) else len(sig_ids)
                for ln, ok in zip(lanes, fwd, strict=True)
            ]
        )
        zones = [ln.stop_zone or ((ln.stop_s or 0.0) - 12.0, ln.stop_s or 0.0) for ln in lanes]
        self._lane_cache = {
            "stop_s": stop_s,
            "signal": signal,
            "signalised": signal < len(sig_ids),
            "stop_sign": np.array([ln.stop_sign and ok for ln, ok in zip(lanes, fwd, strict=True)]),
            "z0": np.array([z[0] for z in zones]),
            "z1": np.array([z[1] for z in zones]),
        }
        return self._lane_cache

    def _step_vehicles(self, t: float, dt: float) -> None:
        f = self.fleet.a
        n = len(self.fleet)
        if n == 0:
            return
        lanes = self.scene.lanes
        lane_len = np.array([ln.line.length for ln in lanes])
        s, v, length = f["s"], f["v"], f["L"]
        # Leaders: next vehicle ahead in the same lane.
        order = np.lexsort((s, f["lane"]))
        gap = np.full(n, np.inf)
        v_lead = np.zeros(n)
        same = f["lane"][order[1:]] == f["lane"][order[:-1]]
        back, front = order[:-1][same], order[1:][same]
        gap[back] = s[front] - s[back] - (length[front] + length[back]) / 2
        v_lead[back] = v[front]
        # Obstacles: red signals, stop signs, planned stops, pedestrians (stationary virtual leaders).
        obs = np.full(n, np.inf)
        front_pos = s + length / 2
        la = self._lane_arrays()
        lane_of = f["lane"]
        stop_s = la["stop_s"][lane_of]
        before = s < stop_s  # False where the lane has no stop line (NaN)
        d_front = stop_s - front_pos
        if self.plan is not None and la["signalised"].any():
            # Phase per signal once per tick, then per vehicle through its lane.
            codes = np.array([_PHASE_CODE[self.plan.phase(sig, t)] for sig in self.plan.signal_ids] + [0])
            amber_left = np.array([self.plan.amber_left(sig, t) for sig in self.plan.signal_ids] + [0.0])
            sig = la["signal"][lane_of]
            ph = codes[sig]
            # Go on at amber only if it cannot stop comfortably AND clears the line before red;
            # otherwise brake (hard if need be): unplanted vehicles never cross on red.
            cannot_stop = d_front < v * v / (2 * B_COMMIT)
            in_time = (stop_s - s) / np.maximum(v, 0.1) < amber_left[sig] - 0.3
            f["committed"] |= before & (ph == 1) & cannot_stop & in_time
            f["committed"] &= ~(before & (ph == 0))  # decisions are made afresh at each amber
            m = before & (ph >= 1) & ~f["committed"] & ~f["ignore_signal"]
            obs[m] = np.minimum(obs[m], stop_s[m])
        if la["stop_sign"].any():
            ss = before & la["stop_sign"][lane_of]
            stopped = ss & (v < 0.3) & (s >= la["z0"][lane_of]) & (s <= la["z1"][lane_of])
            f["wait"][stopped] += dt
            f["stop_ok"] |= stopped & (f["wait"] >= STOP_WAIT_S)
            f["stop_ok"] |= ss & (d_front < -0.5)  # already over: never reverse
            m = ss & ~f["stop_ok"] & (f["roll"] <= 0)
            obs[m] = np.minimum(obs[m], stop_s[m])
        # Planned stops (breakdown): hold at hold_s until hold_until.
        hold = ~np.isnan(f["hold_s"])
        if hold.any():
            arrived = hold & np.isnan(f["hold_until"]) & (v < 0.1) & (np.abs(s - f["hold_s"]) < 4.0)
            f["hold_until"][arrived] = t + f["hold_dur"][arrived]
            release = hold & (f["hold_until"] <= t)
            f["hold_s"][release] = np.nan
            hold = ~np.isnan(f["hold_s"])
            obs[hold] = np.minimum(obs[hold], f["hold_s"][hold] + length[hold] / 2 + S0)
        for i, positions in self._ped_obstacles().items():
            for ps in positions:
                m = (f["lane"] == i) & (front_pos < ps - 0.5)
                obs[m] = np.minimum(obs[m], ps - 1.0)
        # Desired speed, capped in slow zones (bottlenecks, rolling through a stop sign).
        v0 = f["v0"].copy()
        for lane_i, z0, z1, cap, t0 in self.caps:
            if t < t0:
                continue
            m = (f["lane"] == lane_i) & (s < z1)
            dist = np.maximum(z0 - front_pos[m], 0.0)
            v0[m] = np.minimum(v0[m], np.sqrt(cap * cap + 2 * 1.2 * dist))
        roll = f["roll"] > 0
        if roll.any():
            m = roll & la["stop_sign"][lane_of] & (s < stop_s + 2.0)
            dist = np.maximum((stop_s[m] - 6.0) - front_pos[m], 0.0)
            v0[m] = np.minimum(v0[m], np.sqrt(f["roll"][m] ** 2 + 2 * 1.5 * dist))
        # IDM accelerations against the leader and against the obstacle; the stricter wins.
        amax = f["amax"]
        sqrt_ab = 2 * np.sqrt(amax * B_COMF)
        free = 1.0 - (v / np.maximum(v0, 0.1)) ** 4
        with np.errstate(divide="ignore", invalid="ignore"):
            s_star = S0 + np.maximum(0.0, v * HEADWAY + v * (v - v_lead) / sqrt_ab)
            acc_lead = amax * (free - (s_star / np.maximum(gap, 0.05)) ** 2)
            gap_obs = obs - front_pos
            s_star_o = S0 + np.maximum(0.0, v * HEADWAY + v * v / sqrt_ab)
            acc_obs = amax * (free - (s_star_o / np.maximum(gap_obs, 0.05)) ** 2)
        acc = np.where(np.isinf(gap), amax * free, acc_lead)
        acc = np.where(np.isinf(obs), acc, np.minimum(acc, acc_obs))
        acc = np.clip(acc, -B_MAX, amax)
        v_new = np.maximum(v + acc * dt, 0.0)
        s_new = s + (v + v_new) / 2 * dt
        # Never closer than 0.5 m bumper to bumper, never through a stationary obstacle.
        s_new = np.where(np.isinf(obs), s_new, np.minimum(s_new, np.maximum(s, obs - length / 2 - 0.3)))
        for _ in range(n):
            lim = np.full(n, np.inf)
            lim[back] = s_new[front] - (length[front] + length[back]) / 2 - 0.5
            bad = s_new > lim
            if not bad.any():
                break
            v_front = np.full(n, np.inf)
            v_front[back] = v_new[front]
            s_new = np.where(bad, lim, s_new)
            v_new = np.where(bad, np.minimum(v_new, v_front), v_new)
        f["s"], f["v"] = s_new, v_new
        gone = f["s"] - length / 2 > lane_len[f["lane"]]
        if gone.any():
            self.fleet.keep(~gone)

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        dt = self.frame_dt / self.substeps
        for frame in range(self.n_frames):
            t_frame = frame * self.frame_dt
            self._record(frame)
            for sub in range(self.substeps):
                t = t_frame + sub * dt
                self._spawn_plants(t)
                self._spawn_background(t)
                self._step_vehicles(t, dt)
                self._step_peds(t, dt)

    def _record(self, frame: int) -> None:
        f = self.fleet.a
        lanes = self.scene.lanes
        if len(self.fleet):
            if all(len(ln.line.seg_len) == 1 for ln in lanes):
                # Straight lanes (every built-in layout): one gather for all vehicles.
                p0 = np.array([ln.line.points[0] for ln in lanes])
                d = np.array([ln.line.dirs[0] for ln in lanes])
                hd = d[f["lane"]]
                xy = p0[f["lane"]] + hd * f["s"][:, None]
            else:
                xy = np.zeros((len(self.fleet), 2))
                hd = np.zeros((len(self.fleet), 2))
                for i in np.unique(f["lane"]):
                    m = f["lane"] == i
                    xy[m], hd[m] = lanes[int(i)].line.at(f["s"][m])
            self._append(frame, f["tid"], xy, hd, f["v"], f["s"])
        ped = self.peds
        if len(ped["tid"]):
            self._append(
                frame, ped["tid"], ped["xy"], ped["dir"], ped["speed"], np.full(len(ped["tid"]), np.nan)
            )

    def _append(
        self, frame: int, tid: np.ndarray, xy: np.ndarray, hd: np.ndarray, speed: np.ndarray, s: np.ndarray
    ) -> None:
        smp = self.samples
        smp.frame.append(np.full(len(tid), frame, np.int64))
        smp.tid.append(tid.copy())
        smp.xy.append(xy.copy())
        smp.heading.append(hd.copy())
        smp.speed.append(speed.copy())
        smp.s.append(s.copy())

    # --- results ---------------------------------------------------------------------------------

    def columns(self) -> dict[str, np.ndarray]:
        """All samples as columns sorted by (frame, track id), with boxes and visibility."""
        smp = self.samples
        if not smp.tid:
            z = np.zeros(0)
            return {
                "frame": z.astype(np.int64),
                "tid": z.astype(np.int64),
                "xy": np.zeros((0, 2)),
                "heading": np.zeros((0, 2)),
                "speed": z,
                "s": z,
                "box": np.zeros((0, 4)),
                "visible": z.astype(bool),
            }
        cols = {
            "frame": np.concatenate(smp.frame),
            "tid": np.concatenate(smp.tid),
            "xy": np.concatenate(smp.xy),
            "heading": np.concatenate(smp.heading),
            "speed": np.concatenate(smp.speed),
            "s": np.concatenate(smp.s),
        }
        order = np.lexsort((cols["tid"], cols["frame"]))
        cols = {k: v[order] for k, v in cols.items()}
        dims = (
            np.array([self.meta[int(t)].dims for t in cols["tid"]]) if len(cols["tid"]) else np.zeros((0, 3))
        )
        cols["box"], cols["visible"] = project_boxes(self.scene.camera, cols["xy"], cols["heading"], dims)
        return cols


def project_boxes(
    cam: PinholeCamera, xy: np.ndarray, heading: np.ndarray, dims: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Image boxes of oriented 3D boxes standing on the ground (vectorised over N objects).

    Width and top come from the 8 projected corners; the bottom-centre is exactly the image of the
    footprint centre, so a homography applied to box bottom-centres returns the true ground position.
    """
    n = len(xy)
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, bool)
    length, width, height = dims[:, 0], dims[:, 1], dims[:, 2]
    normal = np.stack([-heading[:, 1], heading[:, 0]], axis=1)
    sl = np.array([1, 1, -1, -1, 1, 1, -1, -1], float)
    sw = np.array([1, -1, 1, -1, 1, -1, 1, -1], float)
    sz = np.array([0, 0, 0, 0, 1, 1, 1, 1], float)
    corners = (
        xy[:, None, :]
        + heading[:, None, :] * (sl[None, :, None] * length[:, None, None] / 2)
        + normal[:, None, :] * (sw[None, :, None] * width[:, None, None] / 2)
    )
    corners3 = np.concatenate([corners, (sz[None, :] * height[:, None])[..., None]], axis=2)
    uv = cam.project(corners3)
    centre = cam.project(np.concatenate([xy, np.zeros((n, 1))], axis=1))
    w = uv[..., 0].max(axis=1) - uv[..., 0].min(axis=1)
    top = uv[..., 1].min(axis=1)
    box = np.stack([centre[:, 0] - w / 2, top, centre[:, 0] + w / 2, centre[:, 1]], axis=1)
    visible = (
        (centre[:, 0] >= 0) & (centre[:, 0] < cam.width) & (centre[:, 1] >= 0) & (centre[:, 1] < cam.height)
    )
    box[:, 0] = np.clip(box[:, 0], 0, cam.width)
    box[:, 2] = np.clip(box[:, 2], 0, cam.width)
    box[:, 1] = np.clip(box[:, 1], 0, cam.height)
    return box.astype(np.float32), visible


def in_any(points: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(len(points), bool)
    for poly in polygons:
        out |= points_in_polygon(points, poly)
    return out


def roadway_polygons(scene: Scene) -> list[np.ndarray]:
    return scene.polygons(ZoneKind.ROADWAY)
