"""`its edge run --mode cloud` on the real clip: every sampled frame lands on its.frames.v1."""

from __future__ import annotations

import time
import uuid

import cv2
import numpy as np
import pytest

from infra.topics import ensure_topics
from schemas.topics import FRAMES, HEALTH
from tests.edge_helpers import CLIP, edge_env, read_camera, run_edge

pytestmark = pytest.mark.integration

CLIP_FRAMES = 377  # h264 768x432, 12.5 fps (80 ms per frame), 30.16 s
FRAME_MS = 80


@pytest.fixture(scope="module")
def bootstrap(kafka_broker) -> str:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    return kafka_broker.bootstrap


def test_clip_lands_every_sampled_frame(bootstrap, schema_registry, tmp_path) -> None:
    cam = f"cam-clip-{uuid.uuid4().hex[:8]}"
    env = edge_env(bootstrap, schema_registry, tmp_path, ITS_EDGE__HEALTH_INTERVAL_S="1")
    before = int(time.time() * 1000)
    code, summary, err = run_edge(
        ["--camera-id", cam, "--source", str(CLIP), "--mode", "cloud", "--fast"], env
    )
    after = int(time.time() * 1000)
    assert code == 0, err[-3000:]
    s = summary["cameras"][0]
    assert s["status"] == "finished" and s["frames_in"] == CLIP_FRAMES
    # 12.5 fps sampled at 10 fps by capture time keeps 4 frames of 5.
    assert 0.79 * CLIP_FRAMES <= s["sampled"] <= 0.81 * CLIP_FRAMES
    assert s["skipped_blur"] == 0 and s["dropped"] == 0
    assert summary["publisher"]["delivered"] >= s["published"] and summary["publisher"]["spooled"] == 0

    frames = read_camera(bootstrap, schema_registry, FRAMES, cam)
    assert len(frames) == s["sampled"] == s["published"]
    seqs = [f.frame_seq for f in frames]
    assert seqs == list(range(len(frames))), "strictly increasing, gap-free frame sequence"
    ts = np.array([f.capture_ts_ms for f in frames])
    assert before <= ts[0] <= after
    # Capture time = start + presentation time: every frame sits on the clip's 80 ms grid, and
    # 10 fps from 12.5 fps means gaps of one or two source frames, 100 ms on average.
    offsets = ts - ts[0]
    assert np.all(np.abs(offsets - np.round(offsets / FRAME_MS) * FRAME_MS) <= 1)
    assert set(np.diff(offsets).tolist()) <= {80, 160}
    assert abs(np.diff(offsets).mean() - 100) < 2
    assert offsets[-1] >= (CLIP_FRAMES - 2) * FRAME_MS - 160
    assert sum(f.is_keyframe for f in frames) >= len(frames) // 10
    assert frames[0].is_keyframe
    for f in frames[:: max(1, len(frames) // 12)]:
        image = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (432, 768, 3) == (f.height, f.width, 3)
        assert f.blur_score > 5.0 and f.producer_id

    beats = read_camera(bootstrap, schema_registry, HEALTH, cam)
    assert beats and beats[-1].frames_skipped_blur == 0 and beats[-1].mode.value == "CLOUD"


def test_realtime_pacing_sequence_resumes_and_redacts(bootstrap, schema_registry, tmp_path) -> None:
    """A paced file behaves like a camera: capture times follow the wall clock; a second run continues
    the frame sequence where the first stopped (persisted under the data dir)."""
    cam = f"cam-rt-{uuid.uuid4().hex[:8]}"
    env = edge_env(bootstrap, schema_registry, tmp_path)
    args = ["--camera-id", cam, "--source", str(CLIP), "--mode", "cloud", "--max-frames", "15"]
    t0 = time.time() * 1000
    code, first, err = run_edge(args, env)
    assert code == 0, err[-3000:]
    code, second, err = run_edge(args, env)
    assert code == 0, err[-3000:]
    frames = read_camera(bootstrap, schema_registry, FRAMES, cam)
    assert [f.frame_seq for f in frames] == list(range(30))
    assert first["cameras"][0]["last_seq"] == 14 and second["cameras"][0]["first_seq"] == 15
    ts = [f.capture_ts_ms for f in frames[:15]]
    # Paced: 15 samples at 10 fps span ~1.4-1.5 s of wall clock, not the few ms of a fast read.
    assert 1300 <= ts[-1] - ts[0] <= 1700 and ts[0] >= t0 - 10
    assert frames[15].capture_ts_ms > frames[14].capture_ts_ms
