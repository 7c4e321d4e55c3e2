"""Each hostile-input case of ``schemas.validate``: refused with its reason; good records pass."""

from __future__ import annotations

import dataclasses
import struct

import cv2
import numpy as np
import pytest

from schemas import records as r
from schemas.validate import (
    InputLimits,
    jpeg_size,
    validate_detections,
    validate_frame,
    validate_signal,
)

pytestmark = [pytest.mark.unit, pytest.mark.security]

NOW = 1_795_000_000_000  # 2026-11-18: the tests pass the clock, so they do not age


def _dets(**changes: object) -> r.Detections:
    good = r.Detections(
        camera_id="cam-1",
        frame_seq=7,
        capture_ts_ms=NOW - 1000,
        width=1280,
        height=720,
        model_name="m",
        model_version="1",
        boxes=[10.0, 20.0, 110.0, 220.0, 1200.0, 600.0, 1280.0, 720.0],
        class_ids=[2, 0],
        scores=[0.9, 0.5],
        track_ids=None,
    )
    return dataclasses.replace(good, **changes)


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 127, np.uint8))
    assert ok
    return buf.tobytes()


def _frame(**changes: object) -> r.Frame:
    good = r.Frame("cam-1", 3, NOW - 50, 64, 48, True, _jpeg(), 0.0, "edge-1")
    return dataclasses.replace(good, **changes)


def test_good_records_pass() -> None:
    assert validate_detections(_dets(), NOW) is None
    assert validate_detections(_dets(boxes=[], class_ids=[], scores=[]), NOW) is None
    assert validate_frame(_frame(), NOW) is None
    assert validate_signal(r.SignalPhase("cam-1", "s1", r.Phase.RED, NOW), NOW) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"boxes": [float("nan"), 20.0, 110.0, 220.0, 1200.0, 600.0, 1280.0, 720.0]},
            "non-finite coordinate",
        ),
        ({"boxes": [10.0, 20.0, float("inf"), 220.0, 1200.0, 600.0, 1280.0, 720.0]}, "non-finite coordinate"),
        ({"boxes": [-80.0, -50.0, 110.0, 220.0, 1200.0, 600.0, 1280.0, 720.0]}, "negative coordinates"),
        ({"boxes": [110.0, 20.0, 10.0, 220.0, 1200.0, 600.0, 1280.0, 720.0]}, "box 0 is inverted"),
        ({"boxes": [10.0, 220.0, 110.0, 20.0, 1200.0, 600.0, 1280.0, 720.0]}, "box 0 is inverted"),
        ({"boxes": [10.0, 20.0, 110.0, 220.0, 1200.0, 600.0, 1900.0, 720.0]}, "box 1 [1200.0, 600.0, 1900.0"),
        ({"boxes": [10.0, 20.0, 110.0, 220.0, 5000.0, 4000.0, 5100.0, 4100.0]}, "outside the frame"),
        ({"scores": [0.9, float("nan")]}, "score 1 is nan"),
        ({"scores": [1.5, 0.5]}, "not in [0, 1]"),
        ({"class_ids": [2, -1]}, "negative class id"),
        ({"scores": [0.9]}, "column lengths disagree"),
        ({"boxes": [10.0, 20.0, 110.0]}, "column lengths disagree"),
        ({"track_ids": [1]}, "column lengths disagree"),
        ({"capture_ts_ms": NOW + 3_600_000}, "3600 s in the future"),
        ({"capture_ts_ms": 1_000}, "too far in the past"),
        ({"capture_ts_ms": NOW // 1000}, "too far in the past"),  # seconds sent as milliseconds
        ({"capture_ts_ms": NOW - 6 * 365 * 86_400_000}, "too far in the past"),
        ({"width": 0}, "frame size 0x720 is not positive"),
        ({"width": 100_000, "height": 100_000}, "oversized"),
        ({"camera_id": ""}, "empty camera_id"),
        ({"frame_seq": -1}, "negative frame_seq"),
    ],
)
def test_hostile_detections_are_refused_with_reason(changes: dict[str, object], reason: str) -> None:
    got = validate_detections(_dets(**changes), NOW)
    assert got is not None and reason in got, got


def test_too_many_boxes_is_oversized() -> None:
    n = 2001
    rec = _dets(boxes=[1.0, 1.0, 2.0, 2.0] * n, class_ids=[2] * n, scores=[0.5] * n)
    assert "2001 boxes is oversized (limit 2000)" in (validate_detections(rec, NOW) or "")
    assert validate_detections(rec, NOW, InputLimits(max_boxes=5000)) is None


def test_boxes_slightly_past_the_edge_are_tolerated() -> None:
    # Edge boxes are rounded after scaling: 2 % of the side + 2 px of slack.
    assert (
        validate_detections(_dets(boxes=[-3.0, -3.0, 50.0, 50.0, 1200.0, 600.0, 1290.0, 725.0]), NOW) is None
    )


def test_clock_skew_within_the_limit_is_accepted() -> None:
    assert validate_detections(_dets(capture_ts_ms=NOW + 599_000), NOW) is None
    assert validate_detections(_dets(capture_ts_ms=NOW + 601_000), NOW) is not None
    assert validate_detections(_dets(capture_ts_ms=NOW + 601_000), NOW, InputLimits(max_future_s=900)) is None


def test_signal_timestamps_are_checked() -> None:
    future = r.SignalPhase("cam-1", "s1", r.Phase.RED, NOW + 86_400_000)
    assert "signal timestamp" in (validate_signal(future, NOW) or "")


def _bomb(width: int, height: int) -> bytes:
    """A JPEG whose frame header claims ``width`` x ``height`` (the pixels never follow)."""
    real = _jpeg()
    i = real.index(b"\xff\xc0")
    return real[: i + 5] + struct.pack(">HH", height, width) + real[i + 9 :]


def test_jpeg_size_reads_the_header_only() -> None:
    assert jpeg_size(_jpeg(64, 48)) == (64, 48)
    assert jpeg_size(_bomb(60000, 60000)) == (60000, 60000)
    for junk in (
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff\xe0 not a jpeg",
        b"\x89PNG\r\n",
        b"\xff\xd8\xff\xda\x00\x02",
    ):
        assert jpeg_size(junk) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"jpeg": _bomb(60000, 60000)}, "JPEG header's image size 60000x60000 is oversized"),
        ({"jpeg": _bomb(7000, 7000)}, "oversized"),  # sides fit, the pixel count does not
        ({"jpeg": b"\xff\xd8" + b"\x00" * (8 * 1024 * 1024)}, "is oversized (limit 8388608)"),
        ({"width": -1}, "declared frame size -1x48 is not positive"),
        ({"capture_ts_ms": NOW + 7_200_000}, "in the future"),
        ({"capture_ts_ms": 0}, "too far in the past"),
        ({"camera_id": ""}, "empty camera_id"),
        ({"frame_seq": -5}, "negative frame_seq"),
    ],
)
def test_hostile_frames_are_refused_with_reason(changes: dict[str, object], reason: str) -> None:
    got = validate_frame(_frame(**changes), NOW)
    assert got is not None and reason in got, got


def test_undecodable_payload_is_left_to_the_decoder() -> None:
    # No readable header: the inference decoder's own error ("undecodable JPEG") names it.
    assert validate_frame(_frame(jpeg=b"\xff\xd8\xff\xe0 not a jpeg"), NOW) is None
