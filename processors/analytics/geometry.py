"""Plane geometry on numpy arrays: homographies, polygons, segments.

Everything here works on whole arrays of points at once because it runs for every box of every
frame (a point-in-polygon test per box per zone would otherwise dominate the analytics CPU).
"""

from __future__ import annotations

import numpy as np


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 homography mapping ``src`` (N, 2) onto ``dst`` (N, 2), N >= 4, by normalised DLT.

    Raises ``ValueError`` when the points do not determine a homography (fewer than 4, or three of
    the four collinear), which is what a mis-clicked calibration looks like.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if len(src) < 4 or len(src) != len(dst):
        raise ValueError(f"a homography needs >= 4 point pairs, got {len(src)} image and {len(dst)} ground")

    def normaliser(p: np.ndarray) -> np.ndarray:
        # Hartley normalisation (centroid to the origin, mean distance sqrt(2)) keeps the SVD conditioned.
        c = p.mean(axis=0)
        d = np.sqrt(((p - c) ** 2).sum(axis=1)).mean()
        s = np.sqrt(2) / d if d > 0 else 1.0
        return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])

    ts, td = normaliser(src), normaliser(dst)
    sh = (np.c_[src, np.ones(len(src))] @ ts.T)[:, :2]
    dh = (np.c_[dst, np.ones(len(dst))] @ td.T)[:, :2]
    rows = []
    for (x, y), (u, v) in zip(sh, dh, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    a = np.asarray(rows)
    _, sv, vt = np.linalg.svd(a)
    # A rank below 8 means the pairs fit a family of homographies (collinear or repeated points).
    if sv[7] < 1e-9 * sv[0]:
        raise ValueError("calibration points are degenerate (collinear or repeated): no unique homography")
    h = np.linalg.inv(td) @ vt[-1].reshape(3, 3) @ ts
    if abs(h[2, 2]) < 1e-12:
        raise ValueError("calibration maps a point to infinity")
    h = h / h[2, 2]
    if not np.all(np.isfinite(h)) or abs(np.linalg.det(h)) < 1e-12:
        raise ValueError("calibration homography is singular")
    return h


def apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through ``h``."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    w = pts @ h[:2, :2].T + h[:2, 2]
    z = pts @ h[2, :2] + h[2, 2]
    return w / z[:, None]


def segments_intersect(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    """True when segments p1-p2 and q1-q2 properly cross (shared endpoints do not count)."""

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def self_intersection(poly: np.ndarray) -> tuple[int, int] | None:
    """Indices of two non-adjacent edges of closed polygon ``poly`` (N, 2) that cross, or None."""
    n = len(poly)
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            if segments_intersect(poly[i], poly[(i + 1) % n], poly[j], poly[(j + 1) % n]):
                return i, j
    return None


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


class Polygon:
    """A polygon with its edges precomputed for the vectorised even-odd test (run per box per frame)."""

    __slots__ = ("dxdy", "hi", "lo", "pts", "x1", "y1", "y2")

    def __init__(self, pts: np.ndarray) -> None:
        self.pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        self.x1, self.y1 = self.pts[:, 0].copy(), self.pts[:, 1].copy()
        x2, self.y2 = np.roll(self.x1, -1), np.roll(self.y1, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.dxdy = np.where(self.y2 != self.y1, (x2 - self.x1) / (self.y2 - self.y1), 0.0)
        self.lo, self.hi = self.pts.min(axis=0), self.pts.max(axis=0)

    def contains(self, pts: np.ndarray) -> np.ndarray:
        """(N,) bool: which of ``pts`` (N, 2) lie inside (even-odd ray casting)."""
        if len(pts) == 0:
            return np.zeros(0, dtype=bool)
        y = pts[:, 1:2]
        straddles = (self.y1 <= y) != (self.y2 <= y)  # (N, M)
        xcross = self.x1 + (y - self.y1) * self.dxdy
        return np.count_nonzero(straddles & (pts[:, 0:1] < xcross), axis=1) % 2 == 1


def points_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(N,) bool: which of ``pts`` (N, 2) lie inside ``poly`` (M, 2); even-odd ray casting, vectorised."""
    return Polygon(poly).contains(pts)


def polyline_length(pts: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum()) if len(pts) > 1 else 0.0


def nearest_segment_direction(pts: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(N, 2) unit direction of the segment of polyline ``line`` nearest to each point."""
    a = line[:-1]
    b = line[1:]
    ab = b - a
    seg_len2 = np.maximum((ab**2).sum(axis=1), 1e-12)
    t = np.clip(((pts[:, None, :] - a[None]) * ab[None]).sum(axis=2) / seg_len2, 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    d2 = ((pts[:, None, :] - closest) ** 2).sum(axis=2)
    k = np.argmin(d2, axis=1)
    d = ab[k]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def project_on_polyline(pts: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(N,) distance along polyline ``line`` of each point's nearest position (metres if ground)."""
    a = line[:-1]
    ab = line[1:] - a
    seg_len = np.linalg.norm(ab, axis=1)
    cum = np.r_[0.0, np.cumsum(seg_len)][:-1]
    t = np.clip(((pts[:, None, :] - a[None]) * ab[None]).sum(axis=2) / np.maximum(seg_len**2, 1e-12), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    d2 = ((pts[:, None, :] - closest) ** 2).sum(axis=2)
    k = np.argmin(d2, axis=1)
    return cum[k] + t[np.arange(len(pts)), k] * seg_len[k]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
