"""Edge producer parts on plain data: redaction, backoff, sampling, blur, keyframes, sequence, spool,
queue drop policy, auto-mode decisions, camera files."""

from __future__ import annotations

import random
import threading

import cv2
import numpy as np
import pytest

from producers.modes import Measurements, decide, parse_mode
from producers.publisher import OutboundQueue, OutRecord
from producers.redact import redact_text, redact_url, url_secrets
from producers.registry import CameraFileError, camera_from_dict
from producers.sampling import KeyframeSelector, Sampler, analyse, encode_jpeg, resize_to_width
from producers.sequence import FrameSequence
from producers.sources import Backoff, FolderSource, SourceError, open_source
from producers.spool import DiskSpool, SpoolRecord
from schemas.records import ProcessingMode, ZoneKind
from tests.edge_helpers import ASSETS

pytestmark = pytest.mark.unit


# -- credentials ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:s3cr3t@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtsp://admin@cam.local/x", "rtsp://***@cam.local/x"),
        ("https://cdn.example/live.m3u8?token=abc123&q=1", "https://cdn.example/live.m3u8?token=***&q=1"),
        ("http://h/cgi?user=bob&password=pw&res=hd", "http://h/cgi?user=***&password=***&res=hd"),
        ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
        ("/data/clip.mp4", "/data/clip.mp4"),
        ("0", "0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    for secret in ("s3cr3t", "abc123", "pw"):
        assert secret not in redact_url(url) or secret not in url


def test_redact_text_masks_secrets_in_error_messages() -> None:
    url = "rtsp://admin:p@ss:w0rd@127.0.0.1:1/x?key=K3Y"
    msg = f"[rtsp @ 0x1] could not open {url}: Connection refused (p@ss:w0rd, K3Y)"
    out = redact_text(msg, url_secrets(url))
    assert "p@ss:w0rd" not in out and "K3Y" not in out and "Connection refused" in out


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    b = Backoff(0.5, 8.0, jitter=0.2, rng=random.Random(1))
    delays = [b.next() for _ in range(7)]
    for d, base in zip(delays, [0.5, 1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.8 <= d <= base * 1.2
    assert len({round(d, 6) for d in delays[4:]}) == 3, "jitter: equal bases give different delays"
    b.reset()
    assert b.next() <= 0.6


# -- sampling ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("src_fps", "want"), [(12.5, 0.8), (25.0, 0.4), (30.0, 1 / 3), (10.0, 1.0), (5.0, 1.0)]
)
def test_sampler_keeps_ten_fps_by_capture_time(src_fps: float, want: float) -> None:
    s = Sampler(10.0)
    n = 3000
    kept = [i for i in range(n) if s.accept(1_764_000_000_000 + i * 1000.0 / src_fps)]
    assert abs(len(kept) / n - want) < 0.01
    if src_fps > 10:  # never two samples closer than one source frame short of the period
        gaps = np.diff(kept) * 1000 / src_fps
        assert gaps.min() >= 100 - 1000 / src_fps


def test_sampler_restarts_after_a_gap_instead_of_bursting() -> None:
    s = Sampler(10.0)
    assert s.accept(0) and not s.accept(50) and s.accept(100)
    assert s.accept(10_000)  # a 10 s stall
    assert not s.accept(10_040) and s.accept(10_100)


def test_blur_score_separates_sharp_and_blurred_frames() -> None:
    image = cv2.imread(str(ASSETS / "images" / "bus.jpg"))
    sharp = analyse(image).blur_score
    blurred = analyse(cv2.GaussianBlur(image, (0, 0), 6)).blur_score
    flat = analyse(np.full((720, 1280, 3), 90, np.uint8)).blur_score
    assert sharp > 100 and blurred < sharp / 10 and flat < 1.0 < blurred


def test_keyframes_every_nth_and_on_scene_change() -> None:
    k = KeyframeSelector(every=5, scene_change=0.1)
    dark = np.zeros((18, 32), np.float32)
    bright = np.ones((18, 32), np.float32) * 0.8
    flags = [k.is_keyframe(dark) for _ in range(11)]
    assert [i for i, f in enumerate(flags) if f] == [0, 5, 10]
    assert k.is_keyframe(bright) and k.scene_changes == 1  # 11th: not periodic, but the scene changed
    assert not k.is_keyframe(bright)


def test_resize_and_jpeg() -> None:
    image = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), np.uint8)
    small = resize_to_width(image, 640)
    assert small.shape == (360, 640, 3) and resize_to_width(image, None) is image
    low, high = encode_jpeg(small, 30), encode_jpeg(small, 95)
    assert low[:2] == b"\xff\xd8" and len(low) < len(high)
    assert cv2.imdecode(np.frombuffer(high, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)


def test_frame_sequence_survives_restart_and_crash(tmp_path) -> None:
    seq = FrameSequence(tmp_path, "cam/1", block=10)
    assert [seq.next() for _ in range(3)] == [0, 1, 2]
    seq.close()
    again = FrameSequence(tmp_path, "cam/1", block=10)
    assert again.next() == 3  # clean stop: no gap
    crashed = FrameSequence(tmp_path, "cam/1", block=10)  # the previous one never closed: a crash
    assert crashed.next() == 13, "a crash skips the leased block, never repeats a number"


# -- sources -------------------------------------------------------------------------------------
def test_folder_source_counts_and_skips_a_corrupt_image(tmp_path) -> None:
    image = cv2.imread(str(ASSETS / "images" / "bus.jpg"))
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i:03d}.jpg"), image)
    (tmp_path / "002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    src = FolderSource(tmp_path, fps=10, realtime=False)
    got = list(src.frames(threading.Event()))
    assert [c.index for c in got] == [0, 1, 3] and src.stats.decode_errors == 1
    assert [c.ts_ms - got[0].ts_ms for c in got] == [0, 100, 300]


def test_missing_and_non_video_sources_fail_clearly(tmp_path) -> None:
    with pytest.raises(SourceError, match="source not found"):
        open_source(str(tmp_path / "nope.mp4"))
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video")
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(bogus))
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path))  # a folder without images


# -- spool ---------------------------------------------------------------------------------------
def _recs(n: int, start: int = 0) -> list[SpoolRecord]:
    return [SpoolRecord("t", f"k{i % 3}".encode(), f"v{i}".encode() * 50) for i in range(start, start + n)]


def test_spool_orders_commits_and_reopens(tmp_path) -> None:
    sp = DiskSpool(tmp_path, max_bytes=10**7, segment_bytes=2000)
    for rec in _recs(40):
        assert sp.append(rec)
    assert sp.bytes > 2000 and len(list(tmp_path.glob("*.spool"))) > 1
    read = [sp.read_next() for _ in range(15)]
    assert [r[0] for r in read] == _recs(15)
    sp.commit(read[9][1])  # first 10 acknowledged; 5 read but not
    sp.close()
    sp = DiskSpool(tmp_path, max_bytes=10**7, segment_bytes=2000)
    rest = []
    while (got := sp.read_next()) is not None:
        rest.append(got)
    assert [r[0] for r in rest] == _recs(30, 10), "unacknowledged records come back, acknowledged do not"
    sp.commit(rest[-1][1])
    assert sp.is_empty() and sp.bytes == 0


def test_spool_is_bounded_and_cuts_a_torn_tail(tmp_path) -> None:
    sp = DiskSpool(tmp_path, max_bytes=1500)
    accepted = sum(sp.append(r) for r in _recs(20))
    assert 0 < accepted < 20 and sp.bytes <= 1500
    sp.close()
    seg = sorted(tmp_path.glob("*.spool"))[-1]
    seg.write_bytes(seg.read_bytes()[:-7])  # a crash in the middle of the last write
    sp = DiskSpool(tmp_path, max_bytes=1500)
    got = []
    while (x := sp.read_next()) is not None:
        got.append(x[0])
    assert got == _recs(accepted - 1)


def test_spool_prepend_puts_records_before_unacknowledged_ones(tmp_path) -> None:
    sp = DiskSpool(tmp_path, max_bytes=10**7)
    for rec in _recs(6, 10):
        sp.append(rec)
    first = sp.read_next()
    sp.commit(first[1])  # record 10 acknowledged
    sp.prepend(_recs(3))
    sp.close()
    sp = DiskSpool(tmp_path, max_bytes=10**7)
    got = []
    while (x := sp.read_next()) is not None:
        got.append(x[0])
    assert got == _recs(3) + _recs(5, 11)


def test_tombstones_survive_the_spool(tmp_path) -> None:
    sp = DiskSpool(tmp_path, max_bytes=10**6)
    sp.append(SpoolRecord("its.cameras.v1", b"cam-1", None))
    assert sp.read_next()[0] == SpoolRecord("its.cameras.v1", b"cam-1", None)


# -- queue -------------------------------------------------------------------------------------
def test_queue_drops_oldest_non_keyframes_first_and_never_blocks() -> None:
    dropped: list[tuple[int, str]] = []
    q = OutboundQueue(4, 10**9, lambda r, why: dropped.append((r.seq, why)))
    for seq in range(8):
        q.put(OutRecord("f", b"k", b"x", "cam", droppable=seq % 3 != 0, seq=seq))  # 0, 3, 6 keyframes
    left = [q.get(0).seq for _ in range(len(q))]
    assert left == [0, 3, 6, 7] and [s for s, _ in dropped] == [1, 2, 4, 5]
    assert {why for _, why in dropped} == {"queue_full_nonkey"}
    for seq in range(6):  # nothing droppable: the oldest goes
        q.put(OutRecord("d", b"k", b"x", "cam", droppable=False, seq=100 + seq))
    assert dropped[-1] == (101, "queue_full") and len(q) == 4


# -- modes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("m", "mode", "why"),
    [
        (Measurements(80, 100, 0.1), ProcessingMode.EDGE, "round trip 80.0 ms > 50 ms"),
        (Measurements(10, 1.5, 0.95), ProcessingMode.EDGE, "uplink 1.50 Mbps < 2 Mbps"),
        (Measurements(10, 50, 0.9), ProcessingMode.CLOUD, "local utilisation 0.90 > 0.8"),
        (Measurements(10, None, 0.2), ProcessingMode.HYBRID, "within limits"),
        (Measurements(50, 2, 0.8), ProcessingMode.HYBRID, "within limits"),  # thresholds are strict
        (Measurements(None, None, None), ProcessingMode.HYBRID, "not measured"),
    ],
)
def test_auto_mode_follows_the_seed_matrix(m: Measurements, mode: ProcessingMode, why: str) -> None:
    got, reason = decide(m)
    assert got == mode and why in reason


def test_parse_mode() -> None:
    assert parse_mode("edge") == ProcessingMode.EDGE and parse_mode("AUTO") == ProcessingMode.AUTO
    with pytest.raises(ValueError, match="choose one of cloud, edge, hybrid, auto"):
        parse_mode("fog")


# -- camera files ------------------------------------------------------------------------------
def test_camera_from_yaml_dict_normalises_points_enums_and_redacts() -> None:
    cam = camera_from_dict(
        {
            "camera_id": "cam-7",
            "name": "Main & 5th",
            "location": {"latitude": 40.7, "longitude": -73.9},
            "mode": "edge",
            "source": "rtsp://u:pw@10.1.1.1/s",
            "scene": {
                "lines": [{"line_id": "l1", "points": [[0, 400], [1280, 400]]}],
                "zones": [{"zone_id": "z", "kind": "crosswalk", "polygon": [[0, 0], [1, 0], [1, 1]]}],
            },
        },
        now_ms=5,
    )
    assert cam.mode == ProcessingMode.EDGE and cam.source == "rtsp://***@10.1.1.1/s"
    assert cam.scene.lines[0].points[1].x == 1280 and cam.scene.zones[0].kind == ZoneKind.CROSSWALK
    assert cam.registered_ts_ms == 5
    with pytest.raises(CameraFileError, match="location"):
        camera_from_dict({"camera_id": "x", "name": "y"})
