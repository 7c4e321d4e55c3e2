"""Scene layouts in ground metres: lanes, stop lines, zones, counting lines, pedestrian paths, camera.

A layout is built from a scenario's camera template; ``to_camera_record`` projects it into the
image with the layout's pinhole camera, so the registered ``records.Camera`` (pixels) and the
simulated world (metres) describe the same scene exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from producers.simulator.geometry import PinholeCamera, Polyline, apply_homography, side_of_line_image
from schemas import records as r

LANE_W = 3.5


@dataclass(slots=True)
class LaneSpec:
    """One lane of travel: centreline in travel order, limit, and its control at the junction."""

    lane_id: str
    line: Polyline
    speed_limit_kmh: float
    approach: str | None = None
    signal_id: str | None = None
    stop_s: float | None = None  # arc length of the stop line (signal or stop sign)
    stop_sign: bool = False
    stop_zone: tuple[float, float] | None = None  # arc-length range of the STOP_ZONE (stop signs)
    width: float = LANE_W
    reverse_of: int | None = None  # index of the lane a wrong-way driver drives against

    @property
    def limit_ms(self) -> float:
        return self.speed_limit_kmh / 3.6


@dataclass(slots=True)
class LineSpec:
    """A counting line across a road; ``inner`` is a ground point on the side ``in_direction`` enters."""

    line_id: str
    a: tuple[float, float]
    b: tuple[float, float]
    in_direction: str
    out_direction: str
    inner: tuple[float, float]
    lane_id: str | None = None


@dataclass(slots=True)
class ZoneSpec:
    zone_id: str
    kind: r.ZoneKind
    polygon: np.ndarray  # (M, 2) ground metres


@dataclass(slots=True)
class CrosswalkSpec:
    """A marked crossing: walked from ``a`` to ``b`` (or back) while ``walk_signal`` is GREEN."""

    zone_id: str
    a: tuple[float, float]
    b: tuple[float, float]
    walk_signal: str | None
    crosses_lanes: list[str]


@dataclass(slots=True)
class Scene:
    """Everything a camera sees, in ground metres."""

    layout: str
    camera: PinholeCamera
    lanes: list[LaneSpec]
    lines: list[LineSpec] = field(default_factory=list)
    zones: list[ZoneSpec] = field(default_factory=list)
    crosswalks: list[CrosswalkSpec] = field(default_factory=list)
    sidewalks: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    jaywalk_arms: dict[str, tuple[tuple[float, float], tuple[float, float], list[str]]] = field(
        default_factory=dict
    )  # arm -> (unit vector along the arm from the centre, unit across, lane ids it crosses)
    signal_ids: list[str] = field(default_factory=list)

    def lane_index(self, lane_id: str) -> int:
        for i, lane in enumerate(self.lanes):
            if lane.lane_id == lane_id and lane.reverse_of is None:
                return i
        raise KeyError(f"unknown lane {lane_id!r} in layout {self.layout}")

    def reverse_lane(self, lane_id: str) -> int:
        """Index of a lane running against ``lane_id`` (created on first use; for wrong-way drivers)."""
        fwd = self.lane_index(lane_id)
        for i, lane in enumerate(self.lanes):
            if lane.reverse_of == fwd:
                return i
        src = self.lanes[fwd]
        self.lanes.append(
            LaneSpec(
                src.lane_id,
                Polyline(src.line.points[::-1]),
                src.speed_limit_kmh,
                approach=src.approach,
                reverse_of=fwd,
            )
        )
        return len(self.lanes) - 1

    def polygons(self, kind: r.ZoneKind) -> list[np.ndarray]:
        return [z.polygon for z in self.zones if z.kind == kind]


def _rect(cx: float, cy: float, hx: float, hy: float) -> np.ndarray:
    return np.array([[cx - hx, cy - hy], [cx + hx, cy - hy], [cx + hx, cy + hy], [cx - hx, cy + hy]])


def _lane_polygon(lane: LaneSpec) -> np.ndarray:
    """Rectangle(s) around a straight centreline: left edge forward, right edge back."""
    pts = lane.line.points
    d = lane.line.dirs[0]
    n = np.array([-d[1], d[0]]) * lane.width / 2
    return np.array([pts[0] + n, pts[-1] + n, pts[-1] - n, pts[0] - n])


# --- layouts -------------------------------------------------------------------------------------

ARM = 52.0  # metres from the junction centre to where a junction arm leaves the view
BOX = 7.0  # half size of the intersection box
CW = (7.5, 11.0)  # crosswalk band, distance from the centre
STOP_R = 12.0  # stop line distance from the centre
LINE_R = 22.0  # counting line distance from the centre
SIDEWALK = 5.5  # sidewalk centre distance from the road axis


def junction(
    layout: str, speed_limit_kmh: float, *, signalised: bool, camera: dict[str, float] | None = None
) -> Scene:
    """A 4-way junction of two 2-lane roads (one lane each way, no turns), signals or all-way stop."""
    cam = camera or {}
    pin = PinholeCamera(
        position=(cam.get("x", -50.0), cam.get("y", -65.0), cam.get("height", 40.0)),
        target=(cam.get("target_x", 5.0), cam.get("target_y", 5.0)),
        focal_px=cam.get("focal_px", 800.0),
        width=int(cam.get("width", 1280)),
        height=int(cam.get("height_px", 720)),
    )
    h = LANE_W / 2
    # (lane id, approach, start, end, signal): right-hand traffic
    defs = [
        ("nb", "south", (h, -ARM), (h, ARM), "sig-ns"),
        ("sb", "north", (-h, ARM), (-h, -ARM), "sig-ns"),
        ("eb", "west", (-ARM, -h), (ARM, -h), "sig-ew"),
        ("wb", "east", (ARM, h), (-ARM, h), "sig-ew"),
    ]
    lanes = []
    for lane_id, approach, a, b, sig in defs:
        line = Polyline(np.array([a, b]))
        stop_s = ARM - STOP_R
        lanes.append(
            LaneSpec(
                lane_id,
                line,
                speed_limit_kmh,
                approach=approach,
                signal_id=sig if signalised else None,
                stop_s=stop_s,
                stop_sign=not signalised,
                stop_zone=None if signalised else (stop_s - 12.0, stop_s),
            )
        )
    zones = [
        ZoneSpec("road-ns", r.ZoneKind.ROADWAY, _rect(0, 0, LANE_W, ARM)),
        ZoneSpec("road-ew", r.ZoneKind.ROADWAY, _rect(0, 0, ARM, LANE_W)),
        ZoneSpec("box", r.ZoneKind.INTERSECTION_BOX, _rect(0, 0, BOX, BOX)),
    ]
    mid, half = (CW[0] + CW[1]) / 2, (CW[1] - CW[0]) / 2
    # Crosswalks reach 1.5 m onto each sidewalk so a pedestrian steps from sidewalk straight into them.
    reach = LANE_W + 1.5
    crosswalks = []
    for arm, (cx, cy, hx, hy), lanes_x, (a, b) in (
        ("n", (0, mid, reach, half), ["nb", "sb"], ((-SIDEWALK, mid), (SIDEWALK, mid))),
        ("s", (0, -mid, reach, half), ["nb", "sb"], ((-SIDEWALK, -mid), (SIDEWALK, -mid))),
        ("e", (mid, 0, half, reach), ["eb", "wb"], ((mid, -SIDEWALK), (mid, SIDEWALK))),
        ("w", (-mid, 0, half, reach), ["eb", "wb"], ((-mid, -SIDEWALK), (-mid, SIDEWALK))),
    ):
        zone_id = f"crosswalk-{arm}"
        zones.append(ZoneSpec(zone_id, r.ZoneKind.CROSSWALK, _rect(cx, cy, hx, hy)))
        # Crossing the N-S road is safe while E-W traffic has green (no turns), and vice versa.
        walk = ("sig-ew" if arm in "ns" else "sig-ns") if signalised else None
        crosswalks.append(CrosswalkSpec(zone_id, a, b, walk, lanes_x))
    if not signalised:
        for lane in lanes:
            s0, s1 = lane.stop_zone  # type: ignore[misc]
            p0, _ = lane.line.at(np.array([s0]))
            p1, _ = lane.line.at(np.array([s1]))
            cx, cy = (p0[0] + p1[0]) / 2
            along_x = abs(p1[0, 0] - p0[0, 0]) > 1
            hx, hy = ((s1 - s0) / 2, h) if along_x else (h, (s1 - s0) / 2)
            zones.append(ZoneSpec(f"stop-zone-{lane.lane_id}", r.ZoneKind.STOP_ZONE, _rect(cx, cy, hx, hy)))
    lines = [
        LineSpec("line-n", (-LANE_W, LINE_R), (LANE_W, LINE_R), "inbound", "outbound", (0, 0)),
        LineSpec("line-s", (-LANE_W, -LINE_R), (LANE_W, -LINE_R), "inbound", "outbound", (0, 0)),
        LineSpec("line-e", (LINE_R, -LANE_W), (LINE_R, LANE_W), "inbound", "outbound", (0, 0)),
        LineSpec("line-w", (-LINE_R, -LANE_W), (-LINE_R, LANE_W), "inbound", "outbound", (0, 0)),
    ]
    s = SIDEWALK
    sidewalks = [
        ((-s, -ARM + 8), (-s, -BOX - 6)),
        ((s, BOX + 6), (s, ARM - 8)),
        ((-ARM + 8, s), (-BOX - 6, s)),
        ((BOX + 6, -s), (ARM - 8, -s)),
    ]
    jay = {
        "n": ((0.0, 1.0), (1.0, 0.0), ["nb", "sb"]),
        "s": ((0.0, -1.0), (1.0, 0.0), ["nb", "sb"]),
        "e": ((1.0, 0.0), (0.0, 1.0), ["eb", "wb"]),
        "w": ((-1.0, 0.0), (0.0, 1.0), ["eb", "wb"]),
    }
    return Scene(
        layout,
        pin,
        lanes,
        lines,
        zones,
        crosswalks if signalised else [],
        sidewalks,
        jay,
        ["sig-ns", "sig-ew"] if signalised else [],
    )


HW_LEN = 170.0  # visible highway length


def highway(layout: str, speed_limit_kmh: float, *, camera: dict[str, float] | None = None) -> Scene:
    """A straight dual carriageway, two lanes each way, seen from a pole beside the road."""
    cam = camera or {}
    pin = PinholeCamera(
        position=(cam.get("x", 15.0), cam.get("y", -55.0), cam.get("height", 40.0)),
        target=(cam.get("target_x", 0.0), cam.get("target_y", 75.0)),
        focal_px=cam.get("focal_px", 900.0),
        width=int(cam.get("width", 1280)),
        height=int(cam.get("height_px", 720)),
    )
    y0, y1 = 0.0, HW_LEN
    # lane 1 = nearside (slow), lane 2 = offside (fast, next to the median at x = 0)
    defs = [
        ("nb1", "north", (7.5, y0), (7.5, y1)),
        ("nb2", "north", (4.0, y0), (4.0, y1)),
        ("sb1", "south", (-7.5, y1), (-7.5, y0)),
        ("sb2", "south", (-4.0, y1), (-4.0, y0)),
    ]
    lanes = [
        LaneSpec(lid, Polyline(np.array([a, b])), speed_limit_kmh, approach=appr) for lid, appr, a, b in defs
    ]
    ym = (y0 + y1) / 2
    zones = [
        ZoneSpec("carriageway-nb", r.ZoneKind.ROADWAY, _rect(5.75, ym, 3.5, (y1 - y0) / 2)),
        ZoneSpec("carriageway-sb", r.ZoneKind.ROADWAY, _rect(-5.75, ym, 3.5, (y1 - y0) / 2)),
        ZoneSpec("no-stopping-nb", r.ZoneKind.NO_STOPPING, _rect(5.75, ym, 3.5, (y1 - y0) / 2)),
        ZoneSpec("no-stopping-sb", r.ZoneKind.NO_STOPPING, _rect(-5.75, ym, 3.5, (y1 - y0) / 2)),
    ]
    lines = [
        LineSpec("line-nb", (2.0, 60.0), (9.5, 60.0), "northbound", "southbound", (5.75, 100.0)),
        LineSpec("line-sb", (-9.5, 60.0), (-2.0, 60.0), "southbound", "northbound", (-5.75, 20.0)),
    ]
    return Scene(layout, pin, lanes, lines, zones)


def build(layout: str, speed_limit_kmh: float, camera: dict[str, float] | None = None) -> Scene:
    if layout == "signalised_junction":
        return junction(layout, speed_limit_kmh, signalised=True, camera=camera)
    if layout == "stop_junction":
        return junction(layout, speed_limit_kmh, signalised=False, camera=camera)
    if layout == "highway":
        return highway(layout, speed_limit_kmh, camera=camera)
    raise ValueError(f"unknown layout {layout!r} (signalised_junction, stop_junction, highway)")


# --- the registered camera -----------------------------------------------------------------------


def _pts(h: np.ndarray, ground: np.ndarray) -> list[r.Point]:
    img = apply_homography(h, np.asarray(ground, dtype=np.float64))
    return [r.Point(float(x), float(y)) for x, y in img]


def oriented_line(scene: Scene, line: LineSpec) -> tuple[np.ndarray, np.ndarray]:
    """Line end points in the image ordered so that ``in_direction`` is a left-to-right crossing."""
    h = scene.camera.ground_to_image
    a, b, inner = apply_homography(h, np.array([line.a, line.b, line.inner]))
    if side_of_line_image(a, b, inner) < 0:  # the inner side must be the right side
        a, b = b, a
    return a, b


def default_rules(scene: Scene) -> list[r.RuleConfig]:
    """Rule configuration in the seed's severities (deployment plan 2.5); params name their unit."""
    rules = [
        r.RuleConfig("SPEEDING", severity="MEDIUM", params={"tolerance_kmh": 10.0, "min_duration_s": 2.0}),
        r.RuleConfig("WRONG_WAY", severity="HIGH", params={"min_distance_m": 10.0}),
        r.RuleConfig(
            "LANE_BLOCKAGE", severity="MEDIUM", params={"min_duration_s": 60.0, "max_speed_kmh": 3.0}
        ),
        r.RuleConfig("CONGESTION", severity="LOW", params={"min_duration_s": 300.0}),
    ]
    if any(lane.signal_id for lane in scene.lanes):
        rules.insert(0, r.RuleConfig("RED_LIGHT", severity="HIGH", params={"grace_s": 0.5}))
    if any(lane.stop_sign for lane in scene.lanes):
        rules.insert(0, r.RuleConfig("STOP_SIGN", severity="MEDIUM", params={"max_stop_speed_kmh": 5.0}))
    if scene.crosswalks or scene.jaywalk_arms:
        rules.append(
            r.RuleConfig("PEDESTRIAN_IN_ROADWAY", severity="CRITICAL", params={"min_duration_s": 1.0})
        )
    return rules


RULE_PARAMS_DEFAULT = {
    "RED_LIGHT": {"grace_s": 0.5},
    "STOP_SIGN": {"max_stop_speed_kmh": 5.0},
    "SPEEDING": {"tolerance_kmh": 10.0, "min_duration_s": 2.0},
    "WRONG_WAY": {"min_distance_m": 10.0},
    "LANE_BLOCKAGE": {"min_duration_s": 60.0, "max_speed_kmh": 3.0},
    "CONGESTION": {"min_duration_s": 300.0},
    "PEDESTRIAN_IN_ROADWAY": {"min_duration_s": 1.0},
}


def to_camera_record(
    scene: Scene,
    camera_id: str,
    *,
    name: str,
    registered_ts_ms: int,
    fps: float,
    source: str,
    index: int = 0,
) -> r.Camera:
    """The ``records.Camera`` registration of a simulated scene (geometry in image pixels)."""
    h = scene.camera.ground_to_image
    lanes = [
        r.Lane(
            lane.lane_id,
            _pts(h, _lane_polygon(lane)),
            _pts(h, lane.line.at(np.linspace(0, lane.line.length, 5))[0]),
            float(lane.speed_limit_kmh),
            lane.approach,
        )
        for lane in scene.lanes
        if lane.reverse_of is None
    ]
    stop_lines = []
    for lane in scene.lanes:
        if lane.reverse_of is not None or lane.stop_s is None:
            continue
        p, d = lane.line.at(np.array([lane.stop_s]))
        n = np.array([-d[0, 1], d[0, 0]]) * lane.width / 2
        stop_lines.append(
            r.StopLine(
                f"stop-{lane.lane_id}",
                _pts(h, np.array([p[0] + n, p[0] - n])),
                signal_id=lane.signal_id,
                lane_ids=[lane.lane_id],
            )
        )
    lines = []
    for line in scene.lines:
        a, b = oriented_line(scene, line)
        lines.append(
            r.CountingLine(
                line.line_id,
                [r.Point(float(a[0]), float(a[1])), r.Point(float(b[0]), float(b[1]))],
                line.in_direction,
                line.out_direction,
                line.lane_id,
            )
        )
    zones = [r.Zone(z.zone_id, z.kind, _pts(h, z.polygon)) for z in scene.zones]
    # Calibration: a grid of ground points across the scene and their exact images.
    if scene.layout == "highway":
        ground = np.array([[x, y] for x in (-9.0, 0.0, 9.0) for y in (10.0, 60.0, 120.0)])
    else:
        ground = np.array([[x, y] for x in (-20.0, 0.0, 20.0) for y in (-20.0, 0.0, 20.0)])
    calibration = r.Calibration(
        image_points=_pts(h, ground), ground_points=[r.Point(float(x), float(y)) for x, y in ground]
    )
    return r.Camera(
        camera_id=camera_id,
        name=name,
        location=r.Location(
            52.52 + 0.001 * index, 13.40 + 0.001 * index, address=f"simulated {scene.layout}"
        ),
        scene=r.SceneConfig(lines, zones, lanes, stop_lines, calibration, default_rules(scene)),
        registered_ts_ms=registered_ts_ms,
        mode=r.ProcessingMode.EDGE,
        source=source,
        fps=float(fps),
        labels={"simulator": "1", "layout": scene.layout},
    )
