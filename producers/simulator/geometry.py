"""Ground plane (metres, x east, y north, z up) and a pinhole camera looking at it.

The ground-to-image homography is exactly the pinhole projection restricted to z = 0, and the
camera's calibration point pairs are made with it, so an analytics implementation that fits a
homography to those pairs recovers the simulator's ground positions (and so the true speeds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class PinholeCamera:
    """A camera at ``position`` (metres, z = height) looking at ground point ``target``."""

    position: tuple[float, float, float]
    target: tuple[float, float]
    focal_px: float
    width: int
    height: int

    @property
    def rotation(self) -> np.ndarray:
        """World -> camera rotation; camera axes x right, y down, z forward."""
        c = np.asarray(self.position, dtype=np.float64)
        t = np.array([self.target[0], self.target[1], 0.0])
        forward = (t - c) / np.linalg.norm(t - c)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array(
            [[self.focal_px, 0.0, self.width / 2], [0.0, self.focal_px, self.height / 2], [0.0, 0.0, 1.0]]
        )

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 2) pixels (points must be in front of the camera)."""
        pts = np.asarray(points, dtype=np.float64)
        cam = (pts - np.asarray(self.position)) @ self.rotation.T
        uvw = cam @ self.intrinsics.T
        return uvw[..., :2] / uvw[..., 2:3]

    @property
    def ground_to_image(self) -> np.ndarray:
        """3x3 homography taking ground (x, y, 1) to image (u, v, 1), normalised so H[2, 2] = 1."""
        r = self.rotation
        t = -r @ np.asarray(self.position, dtype=np.float64)
        h = self.intrinsics @ np.column_stack([r[:, 0], r[:, 1], t])
        return h / h[2, 2]

    @property
    def image_to_ground(self) -> np.ndarray:
        h = np.linalg.inv(self.ground_to_image)
        return h / h[2, 2]


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 3x3 homography."""
    pts = np.asarray(points, dtype=np.float64)
    ones = np.ones((*pts.shape[:-1], 1))
    out = np.concatenate([pts, ones], axis=-1) @ h.T
    return out[..., :2] / out[..., 2:3]


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Direct linear transform from >= 4 point pairs (what a consumer of the calibration would do)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    rows = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    h = vt[-1].reshape(3, 3)
    return h / h[2, 2]


class Polyline:
    """A centreline in ground metres with arc-length parameterisation (vectorised lookups)."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        seg = np.diff(self.points, axis=0)
        self.seg_len = np.linalg.norm(seg, axis=1)
        self.cum = np.concatenate([[0.0], np.cumsum(self.seg_len)])
        self.dirs = seg / self.seg_len[:, None]
        self.length = float(self.cum[-1])

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (N, 2) and unit headings (N, 2) at arc lengths ``s`` (extrapolated at the ends)."""
        s = np.asarray(s, dtype=np.float64)
        idx = np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.seg_len) - 1)
        pos = self.points[idx] + self.dirs[idx] * (s - self.cum[idx])[..., None]
        return pos, self.dirs[idx]

    def project(self, p: np.ndarray) -> float:
        """Arc length of the point of the polyline nearest to ``p``."""
        p = np.asarray(p, dtype=np.float64)
        rel = p - self.points[:-1]
        t = np.clip(np.einsum("ij,ij->i", rel, self.dirs), 0, self.seg_len)
        nearest = self.points[:-1] + self.dirs * t[:, None]
        k = int(np.argmin(np.linalg.norm(nearest - p, axis=1)))
        return float(self.cum[k] + t[k])


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule for (N, 2) points against one polygon (M, 2); vectorised over points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64)
    x, y = pts[:, 0:1], pts[:, 1:2]
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    cond = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xin = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return (cond & (x < xin)).sum(axis=1) % 2 == 1


def side_of_line_image(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """+1 where image point(s) ``p`` lie right of line a->b as seen on screen (y down), -1 left.

    This is the convention of ``CountingLine.in_direction``: a crossing from left to right is
    ``in_direction``. On screen with y pointing down, "right of a->b" is a positive z cross product.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    d = b - a
    cross = d[0] * (p[..., 1] - a[1]) - d[1] * (p[..., 0] - a[0])
    return np.sign(cross)
