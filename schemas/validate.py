"""Content checks on decoded records before a processor trusts them (hostile or broken input).

Decoding (``schemas.serde``) already refuses what is not a record: wrong magic byte, unknown schema id,
a body that does not parse. A record that decodes can still be poison: NaN or inverted boxes, boxes
far outside the frame, column lengths that disagree, a timestamp an hour in the future that would move
every window's watermark, a JPEG whose header claims a 60,000 x 60,000 image (a decompression bomb).
Each ``validate_*`` returns ``None`` for a good record or one line naming what is wrong; processors
send the record to the dead-letter topic with that line as the reason (README "Hostile input").
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from schemas import records as r

ERROR_TYPE = "InvalidRecord"  # DeadLetter.error_type of every rejection made here
_FLOOR_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: earlier capture times are reset clocks or unit bugs
_DAY_MS = 86_400_000


class InputLimits(BaseModel):
    """What a processor accepts from a camera or an edge box (section ``input_limits`` of the settings)."""

    max_future_s: float = Field(
        600.0, description="Capture times more than this ahead of the processor's clock are rejected"
    )
    # Five years: replays of retained topics and the simulator's fixed 2026-01-01 start stay in; a camera
    # clock reset to 1970 or 2000, or seconds sent as milliseconds, do not.
    max_age_days: float = Field(
        1826.0, description="Capture times older than this (and any before 2020-01-01) are rejected"
    )
    max_frame_bytes: int = Field(8 * 1024 * 1024, description="Largest JPEG accepted on its.frames.v1")
    max_side_px: int = Field(8192, description="Largest width or height, declared or in the JPEG header")
    max_pixels: int = Field(40_000_000, description="Largest width x height (decompression bombs)")
    max_boxes: int = Field(2000, description="Most boxes one Detections record may carry")
    box_margin: float = Field(
        0.02, description="How far (fraction of the frame side, plus 2 px) a box may reach past the frame"
    )


DEFAULT_LIMITS = InputLimits()


def check_timestamp(
    ts_ms: int, now_ms: int, limits: InputLimits = DEFAULT_LIMITS, what: str = "capture"
) -> str | None:
    """A reason if ``ts_ms`` is too far in the future or the past of ``now_ms``."""
    ahead = ts_ms - now_ms
    if ahead > limits.max_future_s * 1000:
        limit = limits.max_future_s
        return f"{what} timestamp {ts_ms} is {ahead / 1000:.0f} s in the future (limit {limit:.0f} s)"
    floor = max(_FLOOR_MS, now_ms - int(limits.max_age_days * _DAY_MS))
    if ts_ms < floor:
        return f"{what} timestamp {ts_ms} is too far in the past (earliest accepted {floor})"
    return None


def _check_size(width: int, height: int, limits: InputLimits, what: str) -> str | None:
    if width <= 0 or height <= 0:
        return f"{what} size {width}x{height} is not positive"
    if width > limits.max_side_px or height > limits.max_side_px or width * height > limits.max_pixels:
        return (
            f"{what} size {width}x{height} is oversized (limits {limits.max_side_px} px a side, "
            f"{limits.max_pixels} pixels)"
        )
    return None


# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): the markers that carry the image size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header without decoding it; None if there is none.

    Scans markers the way libjpeg does (bytes between segments are skipped up to the next 0xFF), so
    the header found here is the one the decoder would use; every step is bounds-checked, so any
    bytes are safe input.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i < n:
        i = data.find(b"\xff", i)
        if i < 0:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length: not a segment
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # second SOI, EOI, or scan data before any frame header
            return None
        if i + 2 > n:
            return None
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            return None
        if marker in _SOF:
            if i + 7 > n:
                return None
            height = (data[i + 3] << 8) | data[i + 4]
            width = (data[i + 5] << 8) | data[i + 6]
            return width, height
        i += length
    return None


def validate_frame(frame: r.Frame, now_ms: int, limits: InputLimits = DEFAULT_LIMITS) -> str | None:
    """None for a frame the inference processor may decode, else the reason it is rejected.

    A payload that is not recognisably a JPEG is left to the decoder (its own error names it); only a
    readable header that claims an oversized image is refused here, before any pixel is allocated.
    """
    if not frame.camera_id:
        return "empty camera_id"
    if len(frame.jpeg) > limits.max_frame_bytes:
        return f"JPEG of {len(frame.jpeg)} bytes is oversized (limit {limits.max_frame_bytes})"
    if frame.frame_seq < 0:
        return f"negative frame_seq {frame.frame_seq}"
    reason = _check_size(frame.width, frame.height, limits, "declared frame")
    if reason:
        return reason
    size = jpeg_size(frame.jpeg)
    if size is not None:
        reason = _check_size(size[0], size[1], limits, "JPEG header's image")
        if reason:
            return reason
    return check_timestamp(frame.capture_ts_ms, now_ms, limits)


def validate_detections(rec: r.Detections, now_ms: int, limits: InputLimits = DEFAULT_LIMITS) -> str | None:
    """None for detections the analytics may track, else the reason they are rejected."""
    if not rec.camera_id:
        return "empty camera_id"
    if rec.frame_seq < 0:
        return f"negative frame_seq {rec.frame_seq}"
    reason = _check_size(rec.width, rec.height, limits, "frame")
    if reason:
        return reason
    n = len(rec.class_ids)
    if n > limits.max_boxes:
        return f"{n} boxes is oversized (limit {limits.max_boxes})"
    if (
        len(rec.boxes) != 4 * n
        or len(rec.scores) != n
        or (rec.track_ids is not None and len(rec.track_ids) != n)
    ):
        return (
            f"column lengths disagree: {len(rec.boxes)} box coordinates, {n} class ids, {len(rec.scores)} "
            f"scores, {'no' if rec.track_ids is None else len(rec.track_ids)} track ids"
        )
    reason = check_timestamp(rec.capture_ts_ms, now_ms, limits)
    if reason or n == 0:
        return reason
    xyxy = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(rec.scores, dtype=np.float64)
    bad = ~np.isfinite(xyxy).all(axis=1)
    if bad.any():
        return f"box {int(np.argmax(bad))} has a non-finite coordinate (NaN or infinity)"
    bad = (xyxy[:, 2] < xyxy[:, 0]) | (xyxy[:, 3] < xyxy[:, 1])
    if bad.any():
        i = int(np.argmax(bad))
        return f"box {i} is inverted (x2 < x1 or y2 < y1): {xyxy[i].tolist()}"
    # Detectors clip to the frame; a little slack for edge devices that round after scaling.
    mx = limits.box_margin * rec.width + 2
    my = limits.box_margin * rec.height + 2
    bad = (
        (xyxy[:, 0] < -mx)
        | (xyxy[:, 1] < -my)
        | (xyxy[:, 2] > rec.width + mx)
        | (xyxy[:, 3] > rec.height + my)
    )
    if bad.any():
        i = int(np.argmax(bad))
        where = "has negative coordinates" if (xyxy[i, :2] < 0).any() else "lies outside the frame"
        return f"box {i} {xyxy[i].tolist()} {where} ({rec.width}x{rec.height} frame)"
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        i = int(np.argmax(bad))
        return f"score {i} is {float(scores[i])!r}, not in [0, 1]"
    if min(rec.class_ids) < 0:
        return f"negative class id {min(rec.class_ids)}"
    return None


def validate_signal(sig: r.SignalPhase, now_ms: int, limits: InputLimits = DEFAULT_LIMITS) -> str | None:
    """None for a plausible signal phase, else the reason (its timestamp moves the rules' clocks)."""
    if not sig.camera_id:
        return "empty camera_id"
    return check_timestamp(sig.ts_ms, now_ms, limits, "signal")
