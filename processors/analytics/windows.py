"""Windowed traffic statistics per camera and lane: tumbling 1-minute and hopping 5-minute windows.

Event time is the capture timestamp. Contributions land in 1-minute panes; a 5-minute window is the
merge of five consecutive panes, so both window kinds come from one set of accumulators.

Lateness policy: the watermark of a camera is (largest capture time seen) - ``allowed_lateness_ms``.
A pane is closed, and its windows emitted exactly once, when the watermark passes its end. A
contribution for a pane that is already closed is not added to it; it is counted in the
``late_records`` of the next window emitted for that camera, so nothing disappears unrecorded. The
allowed lateness covers the delay of line crossings, whose speed is measured on a window centred on
the crossing and is therefore known only a moment after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas.boxes import COCO_NAMES
from schemas.records import LevelOfService, TrafficStats

PANE_MS = 60_000
HOP_PANES = 5  # the hopping window is 5 panes long, advancing one pane at a time

# HCM basic freeway segment density thresholds, converted from pc/mi/ln to veh/km/ln: A <= 7, B <= 11,
# C <= 16, D <= 22, E <= 28, F beyond.
LOS_DENSITY = (
    (7.0, LevelOfService.A),
    (11.0, LevelOfService.B),
    (16.0, LevelOfService.C),
    (22.0, LevelOfService.D),
    (28.0, LevelOfService.E),
)
LOS_RANK = {los: i + 1 for i, los in enumerate(LevelOfService)}  # A=1 .. F=6


def level_of_service(density: float | None) -> LevelOfService:
    if density is None:
        return LevelOfService.A
    for limit, los in LOS_DENSITY:
        if density <= limit:
            return los
    return LevelOfService.F


@dataclass(slots=True)
class Acc:
    """Sums of one lane (or the whole camera) over one pane."""

    frames: int = 0
    vehicles: float = 0.0  # sum over frames of vehicles present
    occupancy: float = 0.0  # sum over frames of occupied fraction of lane length
    queue_veh: int = 0  # max over frames
    queue_m: float = 0.0  # max over frames
    volume: dict[str, int] = field(default_factory=dict)
    speeds: list[float] = field(default_factory=list)
    late: int = 0

    def merge(self, o: Acc) -> None:
        self.frames += o.frames
        self.vehicles += o.vehicles
        self.occupancy += o.occupancy
        self.queue_veh = max(self.queue_veh, o.queue_veh)
        self.queue_m = max(self.queue_m, o.queue_m)
        for k, v in o.volume.items():
            self.volume[k] = self.volume.get(k, 0) + v
        self.speeds.extend(o.speeds)
        self.late += o.late

    def to_state(self) -> list:
        return [
            self.frames,
            self.vehicles,
            self.occupancy,
            self.queue_veh,
            self.queue_m,
            self.volume,
            self.speeds,
            self.late,
        ]

    @classmethod
    def from_state(cls, s: list) -> Acc:
        return cls(s[0], s[1], s[2], s[3], s[4], dict(s[5]), list(s[6]), s[7])


CAMERA = ""  # key of the whole-camera accumulator (lane_id None in the record)


class Windows:
    """Pane accumulators and window emission of one camera."""

    def __init__(self, camera_id: str, lane_lengths: dict[str, float], allowed_lateness_ms: int) -> None:
        self.camera_id = camera_id
        self.lane_lengths = lane_lengths  # lane_id -> metres
        self.allowed_lateness_ms = allowed_lateness_ms
        self.panes: dict[int, dict[str, Acc]] = {}
        self.closed: list[tuple[int, dict[str, Acc]]] = []  # last HOP_PANES-1 closed panes
        self.closed_upto: int | None = None  # end of the last closed pane
        self.first_pane: int | None = None
        self.pending_late = 0

    def _pane(self, ts_ms: int) -> dict[str, Acc] | None:
        start = ts_ms - ts_ms % PANE_MS
        if self.closed_upto is not None and start < self.closed_upto:
            self.pending_late += 1
            return None
        if self.first_pane is None:
            self.first_pane = start
        return self.panes.setdefault(start, {})

    def add_frame(
        self, ts_ms: int, per_lane: dict[str, tuple[int, float, int, float]], scene_vehicles: int
    ) -> None:
        """One frame: per lane (vehicles, occupied fraction, queued vehicles, queue metres)."""
        pane = self._pane(ts_ms)
        if pane is None:
            return
        cam = pane.setdefault(CAMERA, Acc())
        cam.frames += 1
        cam.vehicles += scene_vehicles
        for lane_id in self.lane_lengths:
            acc = pane.setdefault(lane_id, Acc())
            n, occ, qn, qm = per_lane.get(lane_id, (0, 0.0, 0, 0.0))
            acc.frames += 1
            acc.vehicles += n
            acc.occupancy += occ
            acc.queue_veh = max(acc.queue_veh, qn)
            acc.queue_m = max(acc.queue_m, qm)
            cam.occupancy += occ / len(self.lane_lengths)
        cam.queue_veh = max(cam.queue_veh, sum(v[2] for v in per_lane.values()))
        cam.queue_m = max(cam.queue_m, max((v[3] for v in per_lane.values()), default=0.0))

    def add_crossing(
        self, ts_ms: int, lane_id: str | None, class_id: int, speed_kmh: float | None, camera_total: bool
    ) -> None:
        """A counted vehicle: in its lane's volume, and in the camera's if it is its first counted line."""
        pane = self._pane(ts_ms)
        if pane is None:
            return
        name = COCO_NAMES.get(class_id, str(class_id))
        keys = ([lane_id] if lane_id in self.lane_lengths else []) + ([CAMERA] if camera_total else [])
        for key in keys:
            acc = pane.setdefault(key, Acc())
            acc.volume[name] = acc.volume.get(name, 0) + 1
            if speed_kmh is not None:
                acc.speeds.append(round(float(speed_kmh), 2))

    def advance(self, max_ts_ms: int) -> list[TrafficStats]:
        """Close every pane the watermark has passed; returns the windows to emit, oldest first."""
        watermark = max_ts_ms - self.allowed_lateness_ms
        out: list[TrafficStats] = []
        if self.first_pane is None:
            return out
        start = self.closed_upto if self.closed_upto is not None else self.first_pane
        while start + PANE_MS <= watermark:
            out.extend(self._close(start))
            start += PANE_MS
        return out

    def flush(self) -> list[TrafficStats]:
        """Close every open pane (end of a finite run, e.g. an evaluation)."""
        out: list[TrafficStats] = []
        if self.first_pane is None:
            return out
        start = self.closed_upto if self.closed_upto is not None else self.first_pane
        last = max(self.panes) if self.panes else start - PANE_MS
        while start <= last:
            out.extend(self._close(start))
            start += PANE_MS
        return out

    def _close(self, start: int) -> list[TrafficStats]:
        pane = self.panes.pop(start, {})
        self.closed_upto = start + PANE_MS
        late, self.pending_late = self.pending_late, 0
        out: list[TrafficStats] = []
        if pane:
            for key, acc in sorted(pane.items()):
                acc.late += late if key == CAMERA else 0
                out.append(self._stats(key, start, PANE_MS, acc))
        self.closed.append((start, pane))
        self.closed = self.closed[-HOP_PANES:]
        hop_start = start + PANE_MS - HOP_PANES * PANE_MS
        if self.first_pane is not None and hop_start >= self.first_pane:
            merged: dict[str, Acc] = {}
            for _, p in self.closed:
                for key, acc in p.items():
                    merged.setdefault(key, Acc()).merge(acc)
            for key, acc in sorted(merged.items()):
                out.append(self._stats(key, hop_start, HOP_PANES * PANE_MS, acc))
        return out

    def _stats(self, key: str, start: int, length_ms: int, acc: Acc) -> TrafficStats:
        lane_id = key or None
        frames = max(acc.frames, 1)
        if lane_id is not None:
            km = self.lane_lengths[lane_id] / 1000
            density = acc.vehicles / frames / km if km > 0 else None
            occupancy = acc.occupancy / frames
        else:
            total_km = sum(self.lane_lengths.values()) / 1000
            density = acc.vehicles / frames / total_km if total_km > 0 else None
            occupancy = acc.occupancy / frames if self.lane_lengths else 0.0
        speeds = np.asarray(acc.speeds)
        return TrafficStats(
            stats_id=f"{self.camera_id}:{key or '*'}:{length_ms // 1000}:{start}",
            camera_id=self.camera_id,
            window_start_ms=start,
            window_end_ms=start + length_ms,
            window_s=length_ms // 1000,
            volume=sum(acc.volume.values()),
            lane_id=lane_id,
            volume_by_class=dict(sorted(acc.volume.items())),
            mean_speed_kmh=round(float(speeds.mean()), 2) if len(speeds) else None,
            p85_speed_kmh=round(float(np.percentile(speeds, 85)), 2) if len(speeds) else None,
            occupancy=round(min(occupancy, 1.0), 4),
            density_veh_per_km=round(density, 2) if density is not None else None,
            queue_length_m=round(acc.queue_m, 1),
            queue_vehicles=acc.queue_veh,
            level_of_service=level_of_service(density),
            late_records=acc.late,
        )

    # --- snapshot -----------------------------------------------------------------------------------

    def to_state(self) -> dict:
        return {
            "panes": [[s, {k: a.to_state() for k, a in p.items()}] for s, p in sorted(self.panes.items())],
            "closed": [[s, {k: a.to_state() for k, a in p.items()}] for s, p in self.closed],
            "closed_upto": self.closed_upto,
            "first_pane": self.first_pane,
            "pending_late": self.pending_late,
        }

    def load_state(self, s: dict) -> None:
        self.panes = {int(st): {k: Acc.from_state(a) for k, a in p.items()} for st, p in s["panes"]}
        self.closed = [(int(st), {k: Acc.from_state(a) for k, a in p.items()}) for st, p in s["closed"]]
        self.closed_upto = s["closed_upto"]
        self.first_pane = s["first_pane"]
        self.pending_late = s["pending_late"]
