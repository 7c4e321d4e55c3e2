"""Pieces of the stream runtime that need no broker: offsets to commit, dead letters, JPEG decode errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from processors.inference.processor import FrameDecodeError, decode_jpeg
from processors.runtime import InputRecord, StreamProcessor, dead_letter
from processors.runtime.processor import DLQ_PAYLOAD_LIMIT
from schemas.topics import DLQ, FRAMES

pytestmark = pytest.mark.unit


class _Msg:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"cam-1"

    def value(self) -> bytes:
        return b"raw"


def test_offsets_to_commit_are_last_plus_one_per_partition() -> None:
    batch = [_Msg(FRAMES, 3, 10), _Msg(FRAMES, 1, 7), _Msg(FRAMES, 3, 12), _Msg(FRAMES, 3, 11)]
    got = [(tp.topic, tp.partition, tp.offset) for tp in StreamProcessor._next_offsets(batch)]
    assert got == [(FRAMES, 1, 8), (FRAMES, 3, 13)]


def test_dead_letter_names_the_source_and_caps_the_payload() -> None:
    out = dead_letter(_Msg(FRAMES, 2, 41), "bad", "RecordDecodeError", "inference")
    assert out.topic == DLQ and out.key == "cam-1"
    d = out.record
    assert (d.source_topic, d.source_partition, d.source_offset) == (FRAMES, 2, 41)
    assert (d.reason, d.error_type, d.component) == ("bad", "RecordDecodeError", "inference")
    assert (d.payload, d.key) == (b"raw", b"cam-1")
    inp = InputRecord(FRAMES, 0, 5, None, object(), 0)
    big = dead_letter(
        inp, "x" * 5000, "FrameDecodeError", "inference", payload=b"\0" * (DLQ_PAYLOAD_LIMIT + 1)
    )
    assert big.record.payload is None and len(big.record.reason) == 2000 and big.key == ""


def test_decode_jpeg_accepts_jpeg_and_rejects_garbage() -> None:
    img = np.zeros((24, 32, 3), np.uint8)
    img[:, :16] = (0, 0, 255)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok and decode_jpeg(buf.tobytes()).shape == (24, 32, 3)
    for bad in (b"", b"\xff\xd8\xff\xe0 not a jpeg", buf.tobytes()[:20]):
        with pytest.raises(FrameDecodeError):
            decode_jpeg(bad)
