"""Per-frame decisions on the edge: which frames to process (by capture time), which are usable
(variance of Laplacian), which are keyframes (every N-th sampled frame plus scene changes), and the
resize + JPEG encoding of those that are published."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_ANALYSIS_WIDTH = 640  # blur is measured at a fixed width so one threshold fits every resolution
_THUMB = (32, 18)  # scene-change thumbnail (w, h): coarse enough to ignore sensor noise


class Sampler:
    """Keeps frames at ``fps`` by capture time: a frame is taken once the next due time is reached.

    Sampling by capture time (not by frame count) gives the configured rate from any source rate,
    including variable-rate streams: 12.5 fps -> 10 fps keeps 4 of every 5 frames, 30 -> 10 one in 3.
    """

    def __init__(self, fps: float, slack_ms: float = 2.0) -> None:
        self.period_ms = 1000.0 / fps
        self.slack_ms = slack_ms  # rounding of container timestamps (79.99 ms) must not skip a frame
        self._due: float | None = None

    def accept(self, ts_ms: float) -> bool:
        if self._due is None:
            self._due = ts_ms + self.period_ms
            return True
        if ts_ms + self.slack_ms < self._due:
            return False
        self._due += self.period_ms
        if self._due <= ts_ms:  # a gap (reconnect, stall): restart the grid instead of bursting
            self._due = ts_ms + self.period_ms
        return True


@dataclass(slots=True)
class Analysis:
    """What one look at a frame yields: its sharpness and a thumbnail for scene-change tests."""

    blur_score: float
    thumb: np.ndarray  # float32 (18, 32) grey in 0..1


def analyse(image: np.ndarray) -> Analysis:
    """Variance of the Laplacian of the grey image at 640 px width, and a 32x18 grey thumbnail."""
    h, w = image.shape[:2]
    if w > _ANALYSIS_WIDTH:
        # Bilinear on the colour image first, then grey on the small one: 5x cheaper at 1080p than
        # grey + area averaging at full size, and the blur measure only needs a consistent scale.
        image = cv2.resize(image, (_ANALYSIS_WIDTH, max(1, round(h * _ANALYSIS_WIDTH / w))), cv2.INTER_LINEAR)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    score = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    thumb = cv2.resize(grey, _THUMB, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return Analysis(score, thumb)


class KeyframeSelector:
    """Every ``every``-th sampled frame, and any frame whose thumbnail differs from the last
    keyframe's by more than ``scene_change`` (mean absolute grey difference, 0..1; 0 disables)."""

    def __init__(self, every: int = 10, scene_change: float = 0.12) -> None:
        self.every = every
        self.scene_change = scene_change
        self._count = 0
        self._last: np.ndarray | None = None
        self.scene_changes = 0

    def is_keyframe(self, thumb: np.ndarray) -> bool:
        periodic = self._count % self.every == 0
        self._count += 1
        changed = False
        if not periodic and self.scene_change > 0 and self._last is not None:
            changed = float(np.abs(thumb - self._last).mean()) > self.scene_change
            self.scene_changes += changed
        if periodic or changed:
            self._last = thumb
            return True
        return False


def resize_to_width(image: np.ndarray, width: int | None) -> np.ndarray:
    """``image`` scaled to ``width`` pixels (aspect kept; area interpolation when shrinking)."""
    if not width or image.shape[1] == width:
        return image
    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """Baseline JPEG bytes of a BGR image."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()
