"""Detection noise: what a real detector does to perfect boxes.

``apply_noise`` is reusable on any per-frame ground truth with identities (the simulator's truth,
a MOT ``gt.txt``): box jitter scaled by size, missed detections with temporally correlated
dropouts (a two-state Markov chain per object), false positives, car<->truck confusions and a
realistic score distribution. Vectorised over the boxes of a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.boxes import Boxes


@dataclass(frozen=True, slots=True)
class NoiseProfile:
    """Parameters of the noise model; ``NoiseProfile.default()`` is what ``noise="default"`` means."""

    miss_rate: float = 0.10  # stationary fraction of missed true boxes
    mean_dropout_frames: float = 3.0  # mean length of a run of misses (temporal correlation)
    jitter_px: float = 0.5  # box-edge jitter sigma = jitter_px + jitter_frac * box size
    jitter_frac: float = 0.02
    false_positives_per_frame: float = 0.2  # Poisson mean; short-lived, low score
    confusions: dict[int, tuple[int, float]] = field(
        default_factory=lambda: {2: (7, 0.02), 7: (2, 0.05)}
    )  # class -> (confused with, per-frame probability)
    score_mean: float = 0.82
    score_sd: float = 0.07
    fp_score: tuple[float, float] = (0.25, 0.6)
    perfect_score: float = 0.9
    enabled: bool = True

    @classmethod
    def default(cls) -> NoiseProfile:
        return cls()

    @classmethod
    def none(cls) -> NoiseProfile:
        return cls(enabled=False)


def profile_named(profile: str | NoiseProfile) -> NoiseProfile:
    if isinstance(profile, NoiseProfile):
        return profile
    if profile == "none":
        return NoiseProfile.none()
    if profile == "default":
        return NoiseProfile.default()
    raise ValueError(f"unknown noise profile {profile!r} (none, default)")


def apply_noise(
    boxes_per_frame: list[Boxes],
    rng: np.random.Generator,
    profile: str | NoiseProfile = "default",
    *,
    image_size: tuple[int, int] | None = None,
) -> list[Boxes]:
    """Noisy detections from perfect per-frame boxes whose ``track_id`` holds the true identity.

    Returns one ``Boxes`` per input frame; its ``track_id`` is provenance (the true id, or -1 for a
    false positive) for scoring, not something a detector would output: drop it before tracking.
    With ``profile="none"`` every box is returned unchanged (score ``perfect_score``).
    """
    prof = profile_named(profile)
    if image_size is None:
        mx = [b.xyxy[:, 2:].max(axis=0) for b in boxes_per_frame if len(b)]
        w, h = (np.max(mx, axis=0) if mx else np.array([1280.0, 720.0])).tolist()
        image_size = (int(np.ceil(w)), int(np.ceil(h)))
    width, height = image_size
    out: list[Boxes] = []
    if not prof.enabled:
        for b in boxes_per_frame:
            ids = b.track_id if b.track_id is not None else np.arange(len(b))
            out.append(Boxes(b.xyxy.copy(), b.class_id.copy(), np.full(len(b), prof.perfect_score), ids))
        return out
    # Two-state chain per identity: P(miss -> seen) = 1 / mean run, P(seen -> miss) for the target rate.
    p_recover = 1.0 / max(prof.mean_dropout_frames, 1.0)
    p_drop = prof.miss_rate * p_recover / max(1.0 - prof.miss_rate, 1e-9)
    n_frames = len(boxes_per_frame)
    sizes = np.array([len(b) for b in boxes_per_frame], dtype=np.int64)
    if sizes.sum() == 0:
        ids_all = np.zeros(0, np.int64)
        xyxy_all = np.zeros((0, 4))
        cls_all = np.zeros(0, np.int32)
    else:
        ids_all = np.concatenate(
            [b.track_id if b.track_id is not None else np.arange(len(b)) for b in boxes_per_frame]
        ).astype(np.int64)
        xyxy_all = np.concatenate([b.xyxy for b in boxes_per_frame]).astype(np.float64)
        cls_all = np.concatenate([b.class_id for b in boxes_per_frame])
    cuts = np.concatenate([[0], np.cumsum(sizes)])
    # The chain is sequential in time: one small update per frame, everything else in one batch.
    all_ids, slot_all = np.unique(ids_all, return_inverse=True)
    u_all = rng.random(len(ids_all))
    state_all = np.empty(len(ids_all), bool)
    missing = np.full(len(all_ids), -1, np.int8)  # -1 unseen, 0 detected, 1 missed in the last frame
    for k in range(n_frames):
        a, b = cuts[k], cuts[k + 1]
        if a == b:
            continue
        slot = slot_all[a:b]
        u = u_all[a:b]
        prev = missing[slot]
        state = np.where(prev < 0, u < prof.miss_rate, np.where(prev == 1, u >= p_recover, u < p_drop))
        missing[slot] = state
        state_all[a:b] = state
    keep = ~state_all
    frame_of = np.repeat(np.arange(n_frames), sizes)[keep]
    xyxy = xyxy_all[keep]
    src_cls = cls_all[keep]
    kept_ids = ids_all[keep]
    m = len(xyxy)
    wh = np.maximum(xyxy[:, 2:] - xyxy[:, :2], 1.0)
    sigma = prof.jitter_px + prof.jitter_frac * np.concatenate([wh, wh], axis=1)
    xyxy = xyxy + rng.normal(0.0, 1.0, (m, 4)) * sigma
    xyxy[:, 0] = np.minimum(xyxy[:, 0], xyxy[:, 2] - 1.0)
    xyxy[:, 1] = np.minimum(xyxy[:, 1], xyxy[:, 3] - 1.0)
    flip = rng.random(m)
    cls = src_cls.copy()
    for src, (dst, p) in prof.confusions.items():
        cls = np.where((src_cls == src) & (flip < p), dst, cls)
    # Small boxes score lower, as they do with real detectors.
    area = wh[:, 0] * wh[:, 1]
    score = np.clip(rng.normal(prof.score_mean, prof.score_sd, m) - 0.08 * (area < 400), 0.3, 0.99)
    # False positives: Poisson per frame, short-lived (independent per frame), low score.
    n_fp = rng.poisson(prof.false_positives_per_frame, n_frames)
    k = int(n_fp.sum())
    fw = rng.uniform(15, 90, k)
    fh = fw * rng.uniform(0.6, 1.6, k)
    fx = rng.uniform(0, max(width - 90, 1), k)
    fy = rng.uniform(height * 0.3, max(height - 90, height * 0.3 + 1), k)
    xyxy = np.concatenate([xyxy, np.stack([fx, fy, fx + fw, fy + fh], axis=1)])
    cls = np.concatenate([cls, rng.choice(np.array([0, 2, 2, 7]), k)]).astype(np.int32)
    score = np.concatenate([score, rng.uniform(*prof.fp_score, k)])
    kept_ids = np.concatenate([kept_ids, np.full(k, -1, np.int64)])
    frame_of = np.concatenate([frame_of, np.repeat(np.arange(n_frames), n_fp)])
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, width)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, height)
    # Detector output order carries no identity: shuffle within each frame.
    order = np.lexsort((rng.random(len(frame_of)), frame_of))
    xyxy, cls, score = xyxy[order], cls[order], score[order]
    kept_ids, frame_of = kept_ids[order], frame_of[order]
    bounds = np.searchsorted(frame_of, np.arange(n_frames + 1))
    xyxy32 = xyxy.astype(np.float32)
    score32 = score.astype(np.float32)
    for f in range(n_frames):
        a, b = bounds[f], bounds[f + 1]
        out.append(Boxes(xyxy32[a:b], cls[a:b], score32[a:b], kept_ids[a:b]))
    return out


def read_mot_gt(path: str | Path) -> tuple[list[Boxes], tuple[int, int]]:
    """Per-frame person boxes (``track_id`` = MOT id) from a MOTChallenge ``gt.txt``, frames 1..N.

    Rows with a zero "consider" flag are skipped. Also returns an image size that holds every box.
    """
    rows = np.loadtxt(Path(path), delimiter=",", ndmin=2)
    rows = rows[rows[:, 6] != 0]
    frames = rows[:, 0].astype(np.int64)
    n = int(frames.max()) if len(rows) else 0
    out = []
    for f in range(1, n + 1):
        m = rows[frames == f]
        xyxy = np.stack([m[:, 2], m[:, 3], m[:, 2] + m[:, 4], m[:, 3] + m[:, 5]], axis=1)
        out.append(Boxes(xyxy, np.zeros(len(m), np.int32), np.ones(len(m)), m[:, 1].astype(np.int64)))
    size = (
        (int(np.ceil((rows[:, 2] + rows[:, 4]).max())), int(np.ceil((rows[:, 3] + rows[:, 5]).max())))
        if len(rows)
        else (1, 1)
    )
    return out, size
