"""A ByteTrack-class multi-object tracker, vectorised over all tracks of a camera, driven by time.

What it keeps of ByteTrack (Zhang et al. 2022): two-stage association (high-score boxes first, then
low-score boxes against the tracks left over, which keeps occluded objects alive), a constant-velocity
Kalman filter on the box centre and size, tentative tracks confirmed after ``min_hits`` matches.

What differs, and why:
- Time, not frames: every prediction uses the gap between capture timestamps, so 10 fps input and
  frames the edge sampler skipped look the same to it; tracks expire after ``max_lost_s`` seconds.
- The filter is the continuous white-noise-acceleration model per axis. With diagonal noise the
  8-state filter separates into four independent 2-state filters (position, velocity per axis), so the
  whole table is updated with a handful of elementwise numpy operations instead of per-track 8x8
  matrix products (the per-object Python of ``trackers``' ByteTrack is its cost).
- A third association stage matches what is left by centre distance: tentative tracks, whose velocity
  is still unknown (at 10 fps a fast car's first two boxes may barely overlap), and lost tracks whose
  image-space prediction overshot (perspective makes a receding car decelerate in pixels).
- Persons never match vehicles; a track's class is the score-weighted vote of its detections.
- With a calibration (``GroundMap``), a second filter runs on the ground plane: the box's bottom centre
  mapped to metres, constant velocity with white-noise acceleration in m/s^2. Predictions for
  association come from it (the predicted ground point projected back, the box scaled by the change
  of depth), because image-space motion is not constant: a car approaching the camera accelerates in
  pixels, and the box-size velocity of a small, jittering box extrapolated over a 2 s dropout shrinks
  a parked car to nothing. Every stage is gated by the Mahalanobis distance on the ground, whose
  covariance grows with the time a track has been lost (~a t^3 term), so a track missed for 2 s is
  found again where it can physically be, and a passing car cannot take a recently seen stationary
  track's place merely because their boxes overlap in the image.

Per-track columns live in one dict of arrays so that other parts of the engine can attach their own
per-track state (line sides, rule timers) and have it compacted with the tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.analytics.geometry import iou_matrix

N_CLASSES = 80  # COCO


@dataclass(slots=True)
class TrackerParams:
    high_score: float = 0.5  # ByteTrack's first-stage threshold
    low_score: float = 0.1  # boxes below are ignored entirely
    new_track_score: float = 0.6  # a box must be this confident to start a track
    match_iou: float = 0.2  # stage 1 (high boxes)
    low_match_iou: float = 0.4  # stage 2 (low boxes: stricter, they are more often false positives)
    tentative_max_dist: float = 0.5  # stage 3: distance to the predicted path / box diagonal
    stage3_max_lost_s: float = 0.8  # stage 3 considers tracks lost at most this long
    min_hits: int = 2
    max_lost_s: float = 2.0  # confirmed tracks survive this long unmatched (occlusion, misses)
    tentative_lost_s: float = 0.35  # tentative tracks die faster: most are false positives
    # Noise as fractions of the box height (ByteTrack's 1/20 position, scaled here per second).
    meas_std: float = 0.05
    accel_std: float = 2.0  # box heights per s^2 on the centre
    size_accel_std: float = 0.5
    init_vel_std: float = 2.0  # box heights per second
    # Ground-plane model (used when the tracker has a GroundMap).
    ground_accel_std: float = 2.0  # m/s^2 per axis: braking, pulling away, turning
    ground_init_vel_std: float = 15.0  # m/s: a new track's velocity is unknown (~110 km/h at 2 sigma)
    ground_meas_px: float = 1.0  # floor of the anchor's pixel noise (sigma) before mapping to metres
    # The box's bottom centre is not a fixed point of the object (pose, partial occlusion, a turning
    # vehicle's corner): a floor of model error in metres, so near the camera, where a pixel is a few
    # centimetres, the gate does not reject an ordinary jittered box.
    ground_model_std: float = 0.5
    ground_gate: float = 16.0  # squared Mahalanobis distance on the ground (2 dof; p = 3e-4 beyond)


def _greedy(sim: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching on a similarity matrix: best pair first, above ``threshold``.

    Measured against the optimal assignment on the tracking-quality bench, greedy loses nothing on
    these sparse matrices (almost every row has one overlapping column) and needs no SciPy.
    """
    rows, cols = np.nonzero(sim >= threshold)
    if len(rows) == 0:
        return rows, cols
    order = np.argsort(-sim[rows, cols], kind="stable")
    rows, cols = rows[order], cols[order]
    if len(np.unique(rows)) == len(rows) and len(np.unique(cols)) == len(cols):
        return rows, cols  # already one-to-one: the common case
    used_r: set[int] = set()
    used_c: set[int] = set()
    keep = []
    for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
        if i in used_r or j in used_c:
            continue
        used_r.add(i)
        used_c.add(j)
        keep.append(k)
    return rows[keep], cols[keep]


class GroundMap:
    """Image <-> ground plane of a calibrated camera: what the tracker's ground model needs of it.

    ``h`` maps image pixels to ground metres; ``ref`` is an image point known to lie on the ground
    (a calibration point), which tells the ground side of the horizon (where ``w`` has its sign).
    """

    def __init__(self, h: np.ndarray, ref: tuple[float, float] = (0.0, 0.0)) -> None:
        self.h = np.asarray(h, dtype=np.float64)
        self.hi = np.linalg.inv(self.h)
        w_ref = self.h[2, 0] * ref[0] + self.h[2, 1] * ref[1] + self.h[2, 2]
        self.sign = 1.0 if w_ref >= 0 else -1.0

    def w(self, pts: np.ndarray) -> np.ndarray:
        """(N,) homogeneous scale of image points, signed so that the ground side is positive.

        It is proportional to 1 / depth, so an object's image size is proportional to it.
        """
        h = self.h
        return self.sign * (h[2, 0] * pts[:, 0] + h[2, 1] * pts[:, 1] + h[2, 2])

    def forward(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image points (N, 2) -> ground (N, 2), per-axis variance per pixel^2 of noise (N, 2), w (N,).

        The variance factor is the diagonal of J J^T, J the local Jacobian of the homography: isotropic
        pixel noise of sigma s becomes s^2 * factor on each ground axis (metres grow with distance).
        """
        h = self.h
        x, y = pts[:, 0], pts[:, 1]
        w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
        w = np.where(np.abs(w) < 1e-12, 1e-12, w)
        gx = (h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w
        gy = (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w
        jxx, jxy = (h[0, 0] - gx * h[2, 0]) / w, (h[0, 1] - gx * h[2, 1]) / w
        jyx, jyy = (h[1, 0] - gy * h[2, 0]) / w, (h[1, 1] - gy * h[2, 1]) / w
        jac = np.stack([jxx * jxx + jxy * jxy, jyx * jyx + jyy * jyy], axis=1)
        return np.stack([gx, gy], axis=1), jac, self.sign * w

    def inverse(self, g: np.ndarray) -> np.ndarray:
        """Ground points (N, 2) -> image pixels (N, 2)."""
        hi = self.hi
        x, y = g[:, 0], g[:, 1]
        w = hi[2, 0] * x + hi[2, 1] * y + hi[2, 2]
        w = np.where(np.abs(w) < 1e-12, 1e-12, w)
        return np.stack(
            [(hi[0, 0] * x + hi[0, 1] * y + hi[0, 2]) / w, (hi[1, 0] * x + hi[1, 1] * y + hi[1, 2]) / w],
            axis=1,
        )


class Tracker:
    """Tracks of one camera. ``update`` once per frame, in capture-time order."""

    # column name -> (trailing shape, dtype, fill)
    BASE_COLUMNS: dict[str, tuple[tuple[int, ...], type, float]] = {
        "id": ((), np.int64, -1),
        "x": ((4,), np.float64, 0.0),  # cx, cy, w, h at last_ts
        "v": ((4,), np.float64, 0.0),  # per second
        "p00": ((4,), np.float64, 0.0),
        "p01": ((4,), np.float64, 0.0),
        "p11": ((4,), np.float64, 0.0),
        "last_ts": ((), np.int64, 0),
        "first_ts": ((), np.int64, 0),
        "hits": ((), np.int32, 0),
        "score": ((), np.float64, 0.0),
        "score_sum": ((), np.float64, 0.0),
        "votes": ((N_CLASSES,), np.float32, 0.0),
        "cls": ((), np.int32, 0),  # argmax of votes, kept current
        "det": ((), np.int32, -1),  # index of this frame's matched detection, -1 none
        # Ground model of the box's bottom centre (metres, m/s), per-axis covariance; gok: has one.
        "g": ((2,), np.float64, 0.0),
        "gv": ((2,), np.float64, 0.0),
        "gp00": ((2,), np.float64, 0.0),
        "gp01": ((2,), np.float64, 0.0),
        "gp11": ((2,), np.float64, 0.0),
        "gok": ((), bool, False),
    }

    def __init__(self, params: TrackerParams | None = None, ground: GroundMap | None = None) -> None:
        self.p = params or TrackerParams()
        self.ground = ground
        self.next_id = 1
        self.columns: dict[str, tuple[tuple[int, ...], type, float]] = dict(self.BASE_COLUMNS)
        self.cols: dict[str, np.ndarray] = {
            k: np.full((0, *shape), fill, dtype=dt) for k, (shape, dt, fill) in self.columns.items()
        }

    # --- table management ------------------------------------------------------------------------

    def add_column(self, name: str, shape: tuple[int, ...], dtype: type, fill: float) -> None:
        """Attach a per-track column that is created, kept and dropped with the tracks."""
        self.columns[name] = (shape, dtype, fill)
        self.cols[name] = np.full((len(self), *shape), fill, dtype=dtype)

    def __len__(self) -> int:
        return len(self.cols["id"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def _append(self, n: int) -> None:
        for k, (shape, dt, fill) in self.columns.items():
            self.cols[k] = np.concatenate([self.cols[k], np.full((n, *shape), fill, dtype=dt)])

    def keep(self, mask: np.ndarray) -> None:
        """Drop the tracks where ``mask`` is False (after the engine has finalised them)."""
        if mask.all():
            return
        for k in self.cols:
            self.cols[k] = self.cols[k][mask]

    @property
    def confirmed(self) -> np.ndarray:
        return self.cols["id"] >= 0

    @property
    def cls(self) -> np.ndarray:
        return self.cols["cls"]

    def boxes(self, x: np.ndarray | None = None) -> np.ndarray:
        x = self.cols["x"] if x is None else x
        half = x[:, 2:] / 2
        return np.concatenate([x[:, :2] - half, x[:, :2] + half], axis=1)

    # --- the frame step ------------------------------------------------------------------------------

    def _predict(self, ts_ms: int) -> tuple[np.ndarray, ...]:
        c = self.cols
        dt = np.maximum((ts_ms - c["last_ts"]) / 1000.0, 0.0)[:, None]
        h = np.maximum(c["x"][:, 3:4], 1.0)
        qa = np.concatenate(
            [
                np.repeat((self.p.accel_std * h) ** 2, 2, axis=1),
                np.repeat((self.p.size_accel_std * h) ** 2, 2, axis=1),
            ],
            axis=1,
        )
        xp = c["x"] + c["v"] * dt
        p00 = c["p00"] + 2 * dt * c["p01"] + dt * dt * c["p11"] + qa * dt**3 / 3
        p01 = c["p01"] + dt * c["p11"] + qa * dt**2 / 2
        p11 = c["p11"] + qa * dt
        return xp, p00, p01, p11

    def _predict_ground(self, ts_ms: int, xp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground prediction at ``ts_ms``: position (N, 2), its per-axis variance (N, 2), and the image
        box it implies (N, 4): the predicted ground point projected back as the bottom centre, the last
        box size scaled by the change of depth. Tracks without a ground state keep ``xp``'s box."""
        c, gm = self.cols, self.ground
        dt = np.maximum((ts_ms - c["last_ts"]) / 1000.0, 0.0)[:, None]
        qa = self.p.ground_accel_std**2
        gp = c["g"] + c["gv"] * dt
        var = c["gp00"] + 2 * dt * c["gp01"] + dt * dt * c["gp11"] + qa * dt**3 / 3
        boxes = self.boxes(xp)
        ok = c["gok"]
        if ok.any():
            if ok.all():  # the usual case: no boolean gathers
                ok = slice(None)
            x = c["x"][ok]
            anchor = np.stack([x[:, 0], x[:, 1] + x[:, 3] / 2], axis=1)
            img = gm.inverse(gp[ok])
            scale = np.clip(gm.w(img) / np.maximum(gm.w(anchor), 1e-12), 0.5, 2.0)
            size = x[:, 2:] * scale[:, None]
            boxes[ok] = np.concatenate(
                [
                    img[:, :1] - size[:, :1] / 2,
                    img[:, 1:] - size[:, 1:],
                    img[:, :1] + size[:, :1] / 2,
                    img[:, 1:],
                ],
                axis=1,
            )
        return gp, var, boxes

    def update(
        self,
        ts_ms: int,
        xyxy: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        image_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Advance to ``ts_ms`` with this frame's boxes; returns the (N,) bool mask of tracks that died.

        After the call ``self["det"]`` holds each track's matched detection index (-1 none) and the
        state of matched tracks is at ``ts_ms``. The caller finalises the dead tracks and then calls
        ``keep(~dead)``. With ``image_size`` (width, height), an unmatched track whose predicted
        centre has left the image dies at once, so it cannot take over an object entering there.
        """
        p = self.p
        c = self.cols
        gm = self.ground
        keep_det = scores >= p.low_score
        det_idx = np.nonzero(keep_det)[0]
        boxes, sc, cl = xyxy[det_idx].astype(np.float64), scores[det_idx], classes[det_idx]
        n_tr = len(self)
        xp, p00, p01, p11 = self._predict(ts_ms)
        if gm is not None:
            # The detections' bottom centres on the ground, and their noise there (pixels -> metres).
            anchor_d = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)
            g_d, jac_d, w_d = gm.forward(anchor_d)
            ok_d = (w_d > 0) & np.isfinite(g_d).all(axis=1)
            # Edge jitter scales with the box: its larger side bounds the anchor's pixel noise.
            side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            px = np.maximum(p.meas_std * side, p.ground_meas_px)
            r_d = px[:, None] ** 2 * jac_d + p.ground_model_std**2
            g_pred, g_var, pred_boxes = self._predict_ground(ts_ms, xp)
        else:
            pred_boxes = self.boxes(xp)
        is_person_t = c["cls"] == 0
        is_person_d = cl == 0

        track_match = np.full(n_tr, -1, dtype=np.int64)
        det_match = np.full(len(boxes), -1, dtype=np.int64)
        high = sc >= p.high_score
        if n_tr and len(boxes):
            sim = iou_matrix(pred_boxes, boxes)
            sim[is_person_t[:, None] != is_person_d[None, :]] = 0.0  # persons never match vehicles
            if gm is not None:
                # Squared Mahalanobis distance on the ground, per axis (the filter is separable).
                both = c["gok"][:, None] & ok_d[None, :]
                diff = g_d[None] - g_pred[:, None]
                d2 = (diff * diff / (g_var[:, None] + r_d[None])).sum(axis=2)
                d2 = np.where(both, d2, 0.0)  # no ground state: the image alone decides
                sim[d2 > p.ground_gate] = 0.0
            # Stage 1: high-score boxes against every track.
            s1 = np.where(high[None, :], sim, 0.0)
            r1, c1 = _greedy(s1, p.match_iou)
            track_match[r1] = c1
            det_match[c1] = r1
            # Stage 2: low-score boxes against confirmed tracks still unmatched.
            free_t = (track_match < 0) & (c["id"] >= 0)
            s2 = np.where(free_t[:, None] & ~high[None, :], sim, 0.0)
            r2, c2 = _greedy(s2, p.low_match_iou)
            track_match[r2] = c2
            det_match[c2] = r2
            # Stage 3: tracks still unmatched (tentative ones without a velocity yet, lost ones whose
            # prediction no longer overlaps) against the high boxes left, by distance.
            left_t = track_match < 0
            free_d = (det_match < 0) & high
            if left_t.any() and free_d.any():
                long_lost = (ts_ms - c["last_ts"] > p.stage3_max_lost_s * 1000)[:, None]
                area_t = (pred_boxes[:, 2] - pred_boxes[:, 0]) * (pred_boxes[:, 3] - pred_boxes[:, 1])
                area_d = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                ratio = area_d[None, :] / np.maximum(area_t[:, None], 1e-9)
                ok = left_t[:, None] & free_d[None, :] & (is_person_t[:, None] == is_person_d[None, :])
                ok &= (ratio > 0.5) & (ratio < 2.0)
                # After a long gap, only away from the image border: there a long extrapolation would
                # land on whatever enters the view.
                if image_size is not None:
                    bw = boxes[:, 2] - boxes[:, 0]
                    bh = boxes[:, 3] - boxes[:, 1]
                    inner = (
                        (boxes[:, 0] > bw)
                        & (boxes[:, 1] > bh)
                        & (boxes[:, 2] < image_size[0] - bw)
                        & (boxes[:, 3] < image_size[1] - bh)
                    )
                    ok &= ~long_lost | inner[None, :]
                else:
                    ok &= ~long_lost
                if gm is not None:
                    # On the ground the gate already grows with the time lost (the a t^3 term), and a
                    # lost track's prediction has moved on along its velocity: nearest within it wins.
                    ok &= both & (d2 <= p.ground_gate)
                    s3 = np.where(ok, 1.0 / (1.0 + d2), 0.0)
                    r3, c3 = _greedy(s3, 1.0 / (1.0 + p.ground_gate))
                else:
                    s3 = np.where(ok, 1.0 / (1.0 + self._path_distance(xp, boxes)), 0.0)
                    r3, c3 = _greedy(s3, 1.0 / (1.0 + p.tentative_max_dist))
                track_match[r3] = c3
                det_match[c3] = r3

        # Kalman update of matched tracks (elementwise per axis).
        m = np.nonzero(track_match >= 0)[0]
        det_out = np.full(n_tr, -1, dtype=np.int32)
        if len(m):
            db = boxes[track_match[m]]
            z = np.concatenate([(db[:, :2] + db[:, 2:]) / 2, db[:, 2:] - db[:, :2]], axis=1)
            rr = (p.meas_std * np.maximum(z[:, 3:4], 1.0)) ** 2
            a00, a01, a11 = p00[m], p01[m], p11[m]
            s = a00 + rr
            k0, k1 = a00 / s, a01 / s
            innov = z - xp[m]
            c["x"][m] = xp[m] + k0 * innov
            c["v"][m] = c["v"][m] + k1 * innov
            c["p00"][m] = (1 - k0) * a00
            c["p01"][m] = (1 - k0) * a01
            c["p11"][m] = a11 - k1 * a01
            if gm is not None:
                self._update_ground(ts_ms, m, track_match[m], g_d, r_d, ok_d, g_pred, g_var)
            c["last_ts"][m] = ts_ms
            c["hits"][m] += 1
            msc = sc[track_match[m]]
            c["score"][m] = msc
            c["score_sum"][m] += msc
            c["votes"][m, cl[track_match[m]]] += msc.astype(np.float32)
            c["cls"][m] = np.argmax(c["votes"][m], axis=1)
            det_out[m] = det_idx[track_match[m]]
            newly = m[(c["hits"][m] >= p.min_hits) & (c["id"][m] < 0)]
            if len(newly):
                c["id"][newly] = np.arange(self.next_id, self.next_id + len(newly))
                self.next_id += len(newly)
        c["det"] = det_out

        # Deaths: tentative tracks missed for tentative_lost_s, confirmed ones for max_lost_s.
        age = (ts_ms - c["last_ts"]) / 1000.0
        limit = np.where(c["id"] >= 0, p.max_lost_s, p.tentative_lost_s)
        dead = age > limit
        if image_size is not None and n_tr:
            w, h = image_size
            ctr = (pred_boxes[:, :2] + pred_boxes[:, 2:]) / 2
            gone = (ctr[:, 0] < 0) | (ctr[:, 0] > w) | (ctr[:, 1] < 0) | (ctr[:, 1] > h)
            dead |= gone & (track_match < 0)

        # Births: unmatched confident boxes.
        born = np.nonzero((det_match < 0) & (sc >= p.new_track_score))[0]
        if len(born):
            n0 = len(self)
            self._append(len(born))
            b = boxes[born]
            sl = slice(n0, n0 + len(born))
            c = self.cols
            c["x"][sl] = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)
            h = np.maximum(c["x"][sl, 3:4], 1.0)
            c["p00"][sl] = (2 * p.meas_std * h) ** 2
            c["p11"][sl] = (p.init_vel_std * h) ** 2
            if gm is not None:
                c["g"][sl] = g_d[born]
                c["gp00"][sl] = r_d[born]
                c["gp11"][sl] = p.ground_init_vel_std**2
                c["gok"][sl] = ok_d[born]
            c["last_ts"][sl] = ts_ms
            c["first_ts"][sl] = ts_ms
            c["hits"][sl] = 1
            c["score"][sl] = sc[born]
            c["score_sum"][sl] = sc[born]
            c["votes"][np.arange(n0, n0 + len(born)), cl[born]] = sc[born].astype(np.float32)
            c["cls"][sl] = cl[born]
            c["det"][sl] = det_idx[born]
            if p.min_hits <= 1:
                c["id"][sl] = np.arange(self.next_id, self.next_id + len(born))
                self.next_id += len(born)
            dead = np.concatenate([dead, np.zeros(len(born), dtype=bool)])
        return dead

    def _update_ground(
        self,
        ts_ms: int,
        m: np.ndarray,
        d: np.ndarray,
        g_d: np.ndarray,
        r_d: np.ndarray,
        ok_d: np.ndarray,
        g_pred: np.ndarray,
        g_var: np.ndarray,
    ) -> None:
        """Kalman update of the ground model of tracks ``m`` with detections ``d`` (elementwise per axis)."""
        p, c = self.p, self.cols
        dt = np.maximum((ts_ms - c["last_ts"][m]) / 1000.0, 0.0)[:, None]
        qa = p.ground_accel_std**2
        a00 = g_var[m]
        a01 = c["gp01"][m] + dt * c["gp11"][m] + qa * dt**2 / 2
        a11 = c["gp11"][m] + qa * dt
        z, rr = g_d[d], r_d[d]
        s = a00 + rr
        k0, k1 = a00 / s, a01 / s
        innov = z - g_pred[m]
        had = c["gok"][m][:, None]
        okm = ok_d[d]
        if had.all() and okm.all():  # the usual case: skip the masking below
            c["g"][m] = g_pred[m] + k0 * innov
            c["gv"][m] = c["gv"][m] + k1 * innov
            c["gp00"][m] = (1 - k0) * a00
            c["gp01"][m] = (1 - k0) * a01
            c["gp11"][m] = a11 - k1 * a01
            return
        # A track without a ground state yet (its boxes were beyond the horizon) starts one here.
        g = np.where(had, g_pred[m] + k0 * innov, z)
        gv = np.where(had, c["gv"][m] + k1 * innov, 0.0)
        q00 = np.where(had, (1 - k0) * a00, rr)
        q01 = np.where(had, (1 - k0) * a01, 0.0)
        q11 = np.where(had, a11 - k1 * a01, p.ground_init_vel_std**2)
        keep = okm[:, None]
        c["g"][m] = np.where(keep, g, c["g"][m])
        c["gv"][m] = np.where(keep, gv, c["gv"][m])
        c["gp00"][m] = np.where(keep, q00, c["gp00"][m])
        c["gp01"][m] = np.where(keep, q01, c["gp01"][m])
        c["gp11"][m] = np.where(keep, q11, c["gp11"][m])
        c["gok"][m] = c["gok"][m] | okm

    def _path_distance(self, xp: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Image-only stage 3 distance (no calibration): from each detection's centre to the path from a
        track's last seen centre to its predicted one, in units of the track's box diagonal.

        An overshoot along the track's own motion is forgiven (perspective makes image motion
        decelerate), a jump sideways or backwards is not; a track with a velocity must have moved on
        along it, so a new object appearing where a lost one was last seen is not that track.
        """
        c = self.cols
        ctr_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        diag = np.hypot(xp[:, 2], xp[:, 3])[:, None]
        a = c["x"][:, None, :2]
        ab = xp[:, None, :2] - a
        u_raw = ((ctr_d[None] - a) * ab).sum(axis=2) / np.maximum((ab**2).sum(axis=2), 1e-9)
        u = np.clip(u_raw, 0, 1)
        dist = np.linalg.norm(a + u[..., None] * ab - ctr_d[None], axis=2) / np.maximum(diag, 1.0)
        moving = (c["hits"] >= 2)[:, None]
        return np.where(moving & (u_raw < 0.25), np.inf, dist)
