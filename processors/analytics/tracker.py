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
    }

    def __init__(self, params: TrackerParams | None = None) -> None:
        self.p = params or TrackerParams()
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
        keep_det = scores >= p.low_score
        det_idx = np.nonzero(keep_det)[0]
        boxes, sc, cl = xyxy[det_idx].astype(np.float64), scores[det_idx], classes[det_idx]
        n_tr = len(self)
        xp, p00, p01, p11 = self._predict(ts_ms)
        pred_boxes = self.boxes(xp)
        is_person_t = c["cls"] == 0
        is_person_d = cl == 0

        track_match = np.full(n_tr, -1, dtype=np.int64)
        det_match = np.full(len(boxes), -1, dtype=np.int64)
        high = sc >= p.high_score
        if n_tr and len(boxes):
            sim = iou_matrix(pred_boxes, boxes)
            sim[is_person_t[:, None] != is_person_d[None, :]] = 0.0  # persons never match vehicles
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
            # Stage 3: tracks still unmatched (tentative ones without a velocity yet, and lost ones whose
            # constant-velocity prediction overshot: perspective makes image motion decelerate) against the
            # high boxes left, by centre distance in units of the track's box diagonal.
            # After a long gap (a long run of misses), only away from the image border: there a long
            # extrapolation would land on whatever enters the view.
            left_t = track_match < 0
            long_lost = (ts_ms - c["last_ts"] > p.stage3_max_lost_s * 1000)[:, None]
            free_d = (det_match < 0) & high
            if left_t.any() and free_d.any():
                ctr_d = (boxes[:, :2] + boxes[:, 2:]) / 2
                diag = np.hypot(xp[:, 2], xp[:, 3])[:, None]
                # Distance to the path from the last seen centre to the predicted one: an overshoot
                # along the track's own motion is forgiven, a jump sideways or backwards is not.
                a = c["x"][:, None, :2]
                ab = xp[:, None, :2] - a
                u_raw = ((ctr_d[None] - a) * ab).sum(axis=2) / np.maximum((ab**2).sum(axis=2), 1e-9)
                u = np.clip(u_raw, 0, 1)
                dist = np.linalg.norm(a + u[..., None] * ab - ctr_d[None], axis=2) / np.maximum(diag, 1.0)
                # A track with a velocity must have moved on along it: a new object appearing where a lost
                # one was last seen (a car entering where another left the view) is not that track.
                moving = (c["hits"] >= 2)[:, None]
                dist = np.where(moving & (u_raw < 0.25), np.inf, dist)
                area_t = xp[:, 2] * xp[:, 3]
                area_d = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                ratio = area_d[None, :] / np.maximum(area_t[:, None], 1e-9)
                ok = left_t[:, None] & free_d[None, :] & (is_person_t[:, None] == is_person_d[None, :])
                ok &= (ratio > 0.5) & (ratio < 2.0)
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
                s3 = np.where(ok, 1.0 / (1.0 + dist), 0.0)
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
            ctr = xp[:, :2]
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
