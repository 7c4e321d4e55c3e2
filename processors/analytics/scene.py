"""The scene model of one camera, built from its registration (``records.Camera``) and validated.

Image coordinates are pixels; ground coordinates are metres on the road plane, from the camera's
calibration: a homography fitted to >= 4 image/ground point pairs, or (flagged ``approximate``) a
metres-per-pixel scale. Lines are kept in ground coordinates (a straight image line stays straight
under a homography) so that hysteresis bands and speeds are in metres; zones and lanes are tested in
image coordinates, where the boxes are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.analytics import geometry as g
from processors.analytics import rules as rl
from schemas import records as r

RASTER_STEP = 2.0  # px per raster cell of the lane/zone label image
MAX_LANES = 31
MAX_STOP_ZONES = 9
# Bounds on a registration's numbers (found by tests/fuzz/fuzz_scene.py): a NaN or a 1e12 px corner
# must be a SceneError (a dead letter), not a ValueError or a terabyte raster that stops the processor.
MAX_IMAGE_COORD = 8192.0  # px, the largest frame side processors accept (InputLimits.max_side_px)
MAX_GROUND_COORD = 1e6  # m
BIT_ROADWAY = np.uint16(1 << 5)
BIT_CROSSWALK = np.uint16(1 << 6)
BIT_STOP0 = 7


class SceneError(ValueError):
    """A camera registration the analytics cannot run with; the message names the camera and part."""


@dataclass(slots=True)
class LineSpec:
    """A directed line segment in ground coordinates.

    ``in`` is crossing onto the side where, in image pixels, cross(p1 - p0, p - p0) > 0 (with image y
    growing downwards that is the right-hand side of p0 -> p1 as seen on screen). ``orient`` carries that
    side into the ground frame, whose handedness the calibration may flip.
    """

    line_id: str
    a: np.ndarray  # (2,) ground metres
    b: np.ndarray
    in_name: str
    out_name: str
    lane_id: str | None
    is_stop_line: bool = False
    signal_id: str | None = None
    lane_ids: tuple[str, ...] = ()
    orient: float = 1.0
    forward: int = 0  # stop lines: +1 if "in" is the travel direction, -1 if "out", 0 unknown (both)


@dataclass(slots=True)
class LaneSpec:
    lane_id: str
    polygon: g.Polygon  # image pixels
    centerline: np.ndarray  # (K, 2) ground metres, in the travel direction
    speed_limit_kmh: float
    length_m: float
    approach: str | None


@dataclass(slots=True)
class ZoneSpec:
    zone_id: str
    kind: r.ZoneKind
    polygon: g.Polygon  # image pixels


def _pts(points: list[r.Point]) -> np.ndarray:
    return np.asarray([[p.x, p.y] for p in points], dtype=np.float64).reshape(-1, 2)


def _check_numbers(camera: r.Camera, where: str) -> None:
    """Every coordinate and parameter finite and in range (raises SceneError naming the part)."""
    scene = camera.scene
    parts: list[tuple[str, list[r.Point], float]] = []
    parts += [(f"counting line {x.line_id!r}", x.points, MAX_IMAGE_COORD) for x in scene.lines]
    parts += [(f"zone {x.zone_id!r}", x.polygon, MAX_IMAGE_COORD) for x in scene.zones]
    parts += [(f"lane {x.lane_id!r}", x.polygon + x.centerline, MAX_IMAGE_COORD) for x in scene.lanes]
    parts += [(f"stop line {x.stop_line_id!r}", x.points, MAX_IMAGE_COORD) for x in scene.stop_lines]
    cal = scene.calibration
    if cal is not None:
        parts += [("calibration image points", cal.image_points, MAX_IMAGE_COORD)]
        parts += [("calibration ground points", cal.ground_points, MAX_GROUND_COORD)]
    for name, points, limit in parts:
        xy = np.asarray([[p.x, p.y] for p in points], dtype=np.float64)
        if not np.all(np.isfinite(xy)) or np.any(np.abs(xy) > limit):
            raise SceneError(f"{where} {name}: coordinates must be finite and within +-{limit:g}")
    numbers = [("fps", camera.fps)]
    numbers += [(f"lane {x.lane_id!r} speed limit", x.speed_limit_kmh) for x in scene.lanes]
    numbers += [(f"rule {x.rule!r} parameter {k!r}", v) for x in scene.rules for k, v in x.params.items()]
    if cal is not None and cal.metres_per_pixel is not None:
        numbers.append(("metres_per_pixel", cal.metres_per_pixel))
    for name, value in numbers:
        if not np.isfinite(value):
            raise SceneError(f"{where}: {name} must be a finite number, got {value}")
    if not 0 < camera.fps <= 1000:
        raise SceneError(f"{where}: fps must be in (0, 1000], got {camera.fps}")


class SceneModel:
    """Everything the engine needs to know about one camera's view, checked once on registration."""

    def __init__(self, camera: r.Camera) -> None:
        self.camera_id = camera.camera_id
        self.fps = camera.fps
        scene = camera.scene
        where = f"camera {camera.camera_id!r}"
        _check_numbers(camera, where)
        self.approximate, self.homography = self._calibrate(scene.calibration, where)

        self.zones: list[ZoneSpec] = []
        for z in scene.zones:
            self.zones.append(
                ZoneSpec(z.zone_id, z.kind, self._polygon(z.polygon, f"{where} zone {z.zone_id!r}"))
            )
        self.lanes: list[LaneSpec] = []
        for lane in scene.lanes:
            lw = f"{where} lane {lane.lane_id!r}"
            poly = self._polygon(lane.polygon, lw)
            cl = _pts(lane.centerline)
            if len(cl) < 2:
                raise SceneError(f"{lw}: centerline needs >= 2 points (it gives the travel direction)")
            ground_cl = self.to_ground(cl)
            length = g.polyline_length(ground_cl)
            if length <= 0:
                raise SceneError(f"{lw}: centerline has zero length")
            if lane.speed_limit_kmh <= 0:
                raise SceneError(f"{lw}: speed limit must be positive, got {lane.speed_limit_kmh}")
            self.lanes.append(
                LaneSpec(lane.lane_id, poly, ground_cl, lane.speed_limit_kmh, length, lane.approach)
            )
        lane_ids = [ln.lane_id for ln in self.lanes]
        if len(set(lane_ids)) != len(lane_ids):
            raise SceneError(f"{where}: duplicate lane ids {lane_ids}")
        known = set(lane_ids)

        self.lines: list[LineSpec] = []
        for line in scene.lines:
            lw = f"{where} counting line {line.line_id!r}"
            a, b, orient = self._segment(line.points, lw)
            if line.lane_id is not None and line.lane_id not in known:
                raise SceneError(f"{lw}: unknown lane {line.lane_id!r}; lanes: {sorted(known)}")
            self.lines.append(
                LineSpec(
                    line.line_id, a, b, line.in_direction, line.out_direction, line.lane_id, orient=orient
                )
            )
        for sl in scene.stop_lines:
            lw = f"{where} stop line {sl.stop_line_id!r}"
            a, b, orient = self._segment(sl.points, lw)
            unknown = sorted(set(sl.lane_ids) - known)
            if unknown:
                raise SceneError(f"{lw}: unknown lane(s) {unknown}; lanes: {sorted(known)}")
            spec = LineSpec(
                sl.stop_line_id,
                a,
                b,
                "in",
                "out",
                sl.lane_ids[0] if len(sl.lane_ids) == 1 else None,
                is_stop_line=True,
                signal_id=sl.signal_id,
                lane_ids=tuple(sl.lane_ids),
                orient=orient,
            )
            spec.forward = self._forward(spec)
            self.lines.append(spec)
        ids = [ln.line_id for ln in self.lines]
        if len(set(ids)) != len(ids):
            raise SceneError(f"{where}: duplicate line ids {ids}")

        try:
            self.rules = rl.resolve(scene.rules, known)
        except rl.RuleError as exc:
            raise SceneError(f"{where}: {exc}") from None

        # Arrays the engine's vectorised hot path uses.
        self.line_a = np.asarray([ln.a for ln in self.lines]).reshape(-1, 2)
        self.line_b = np.asarray([ln.b for ln in self.lines]).reshape(-1, 2)
        d = self.line_b - self.line_a
        self.line_len = np.linalg.norm(d, axis=1)
        self.line_dir = d / np.maximum(self.line_len[:, None], 1e-12)
        self.line_orient = np.asarray([ln.orient for ln in self.lines], dtype=np.float64)
        self.lane_limit = np.asarray([ln.speed_limit_kmh for ln in self.lanes], dtype=np.float64)
        self.roadway = [z for z in self.zones if z.kind == r.ZoneKind.ROADWAY]
        self.crosswalks = [z for z in self.zones if z.kind == r.ZoneKind.CROSSWALK]
        self.stop_zones = [z for z in self.zones if z.kind == r.ZoneKind.STOP_ZONE]
        if len(self.lanes) > MAX_LANES or len(self.stop_zones) > MAX_STOP_ZONES:
            raise SceneError(f"{where}: at most {MAX_LANES} lanes and {MAX_STOP_ZONES} stop zones per camera")
        # Straight lanes (every simulated and most real ones): a single direction and an origin make the
        # direction and the position along the lane one vectorised product, not a nearest-segment search.
        self.lane_start = np.asarray([ln.centerline[0] for ln in self.lanes]).reshape(-1, 2)
        dirs = []
        self.lanes_straight = True
        for ln in self.lanes:
            seg = np.diff(ln.centerline, axis=0)
            seg = seg / np.maximum(np.linalg.norm(seg, axis=1, keepdims=True), 1e-12)
            if np.any(seg @ seg[0] < np.cos(np.radians(2.0))):
                self.lanes_straight = False
            dirs.append(seg[0])
        self.lane_dir = np.asarray(dirs).reshape(-1, 2)
        self._rasterise()

    def _rasterise(self) -> None:
        """Label image of lanes and zones at RASTER_STEP px: membership of N points is one lookup.

        Bits: 0-4 lane index + 1 (the first lane listed wins where lanes overlap), 5 roadway, 6
        crosswalk, 7.. stop zones. Tested per box per frame, this replaces a ray-casting test per polygon.
        """
        polys = [ln.polygon for ln in self.lanes] + [z.polygon for z in self.zones]
        if not polys:
            self.raster = np.zeros((1, 1), dtype=np.uint16)
            return
        hi = np.max([p.hi for p in polys], axis=0)
        w = int(max(hi[0], 0) // RASTER_STEP) + 2
        h = int(max(hi[1], 0) // RASTER_STEP) + 2
        ys, xs = np.mgrid[0:h, 0:w]
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1) * RASTER_STEP + RASTER_STEP / 2
        raster = np.zeros(h * w, dtype=np.uint16)
        lane_idx = np.zeros(h * w, dtype=np.uint16)
        for i in range(len(self.lanes) - 1, -1, -1):
            lane_idx[self._inside(self.lanes[i].polygon, centres)] = i + 1
        raster |= lane_idx
        for z in self.roadway:
            raster[self._inside(z.polygon, centres)] |= BIT_ROADWAY
        for z in self.crosswalks:
            raster[self._inside(z.polygon, centres)] |= BIT_CROSSWALK
        for k, z in enumerate(self.stop_zones):
            raster[self._inside(z.polygon, centres)] |= np.uint16(1 << (BIT_STOP0 + k))
        self.raster = raster.reshape(h, w)

    @staticmethod
    def _inside(poly: g.Polygon, centres: np.ndarray) -> np.ndarray:
        out = np.zeros(len(centres), dtype=bool)
        box = np.all((centres >= poly.lo) & (centres <= poly.hi), axis=1)
        out[box] = poly.contains(centres[box])
        return out

    def regions(self, pts: np.ndarray) -> np.ndarray:
        """(N,) uint16 region codes of image points (0 outside every lane and zone)."""
        h, w = self.raster.shape
        ix = (pts[:, 0] // RASTER_STEP).astype(np.int64)
        iy = (pts[:, 1] // RASTER_STEP).astype(np.int64)
        ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        out = np.zeros(len(pts), dtype=np.uint16)
        out[ok] = self.raster[iy[ok], ix[ok]]
        return out

    def lane_position(self, lane: np.ndarray, ground: np.ndarray) -> np.ndarray:
        """(N,) metres along each point's lane centreline (NaN outside lanes)."""
        out = np.full(len(lane), np.nan)
        inl = lane >= 0
        if not inl.any():
            return out
        if self.lanes_straight:
            li = lane[inl]
            out[inl] = ((ground[inl] - self.lane_start[li]) * self.lane_dir[li]).sum(axis=1)
            return out
        for li in np.unique(lane[inl]):
            sel = lane == li
            out[sel] = g.project_on_polyline(ground[sel], self.lanes[li].centerline)
        return out

    def lane_direction(self, lane: np.ndarray, ground: np.ndarray) -> np.ndarray:
        """(N, 2) unit travel direction of each point's lane at that point (zeros outside lanes)."""
        out = np.zeros((len(lane), 2))
        inl = lane >= 0
        if self.lanes_straight:
            out[inl] = self.lane_dir[lane[inl]]
            return out
        for li in np.unique(lane[inl]):
            sel = lane == li
            out[sel] = g.nearest_segment_direction(ground[sel], self.lanes[li].centerline)
        return out

    # --- construction helpers --------------------------------------------------------------------

    def _calibrate(self, cal: r.Calibration | None, where: str) -> tuple[bool, np.ndarray]:
        if cal is not None and (cal.image_points or cal.ground_points):
            if len(cal.image_points) != len(cal.ground_points):
                raise SceneError(
                    f"{where}: calibration has {len(cal.image_points)} image points but "
                    f"{len(cal.ground_points)} ground points"
                )
            if len(cal.image_points) < 4:
                raise SceneError(
                    f"{where}: calibration needs >= 4 image/ground point pairs, got {len(cal.image_points)}"
                )
            try:
                h = g.fit_homography(_pts(cal.image_points), _pts(cal.ground_points))
            except ValueError as exc:
                raise SceneError(f"{where}: degenerate homography: {exc}") from None
            # Every calibration point must lie on the same side of the horizon (w of one sign);
            # a homography that flips a point through infinity is a mis-clicked calibration.
            img = _pts(cal.image_points)
            w = img @ h[2, :2] + h[2, 2]
            if not (np.all(w > 0) or np.all(w < 0)):
                raise SceneError(f"{where}: degenerate homography: calibration points straddle the horizon")
            back = g.apply_homography(h, img)
            err = float(np.max(np.linalg.norm(back - _pts(cal.ground_points), axis=1)))
            if err > 2.0:
                raise SceneError(f"{where}: calibration points are inconsistent (residual {err:.1f} m)")
            return False, h
        if cal is not None and cal.metres_per_pixel:
            if cal.metres_per_pixel <= 0:
                raise SceneError(f"{where}: metres_per_pixel must be positive")
            # Approximate: a single scale is only right for a camera looking straight down.
            m = cal.metres_per_pixel
            return True, np.array([[m, 0, 0], [0, m, 0], [0, 0, 1.0]])
        raise SceneError(f"{where}: no calibration (>= 4 point pairs or metres_per_pixel); speeds need one")

    @staticmethod
    def _polygon(points: list[r.Point], where: str) -> g.Polygon:
        poly = _pts(points)
        if len(poly) < 3:
            raise SceneError(f"{where}: polygon needs >= 3 points, got {len(poly)}")
        crossing = g.self_intersection(poly)
        if crossing is not None:
            i, j = crossing
            raise SceneError(f"{where}: polygon is self-intersecting (edges {i} and {j} cross)")
        if abs(g.polygon_area(poly)) < 1e-6:
            raise SceneError(f"{where}: polygon has zero area")
        return g.Polygon(poly)

    def _segment(self, points: list[r.Point], where: str) -> tuple[np.ndarray, np.ndarray, float]:
        pts = _pts(points)
        if len(pts) != 2:
            raise SceneError(f"{where}: a line is 2 points, got {len(pts)}")
        ga, gb = self.to_ground(pts)
        if np.linalg.norm(gb - ga) < 1e-3:
            raise SceneError(f"{where}: zero-length line")
        # Which ground side is the image's "in" side: map a point just off the line's middle.
        d = pts[1] - pts[0]
        probe = self.to_ground(((pts[0] + pts[1]) / 2 + 0.01 * np.array([-d[1], d[0]]))[None])[0]
        gd = gb - ga
        orient = 1.0 if gd[0] * (probe[1] - ga[1]) - gd[1] * (probe[0] - ga[0]) > 0 else -1.0
        return ga, gb, orient

    def _forward(self, line: LineSpec) -> int:
        """Which crossing direction of a stop line is travel into the junction (from its lanes)."""
        if not line.lane_ids:
            return 0
        lanes = [ln for ln in self.lanes if ln.lane_id in line.lane_ids]
        mid = ((line.a + line.b) / 2)[None]
        signs = []
        for lane in lanes:
            direction = g.nearest_segment_direction(mid, lane.centerline)[0]
            d = line.b - line.a
            in_normal = line.orient * np.array([-d[1], d[0]])
            signs.append(1 if float(np.dot(direction, in_normal)) > 0 else -1)
        return signs[0] if len(set(signs)) == 1 else 0

    # --- mapping -----------------------------------------------------------------------------------

    def to_ground(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) image pixels -> ground metres."""
        return g.apply_homography(self.homography, pts)

    def lane_of(self, pts: np.ndarray) -> np.ndarray:
        """(N,) index into ``lanes`` of the first lane containing each image point, -1 for none."""
        out = np.full(len(pts), -1, dtype=np.int32)
        for i in range(len(self.lanes) - 1, -1, -1):
            out[self.lanes[i].polygon.contains(pts)] = i
        return out

    def in_any(self, pts: np.ndarray, zones: list[ZoneSpec]) -> np.ndarray:
        inside = np.zeros(len(pts), dtype=bool)
        for z in zones:
            inside |= z.polygon.contains(pts)
        return inside
