"""`its edge run --mode edge|hybrid|auto` with the real detector (yolox_nano_coco_416.onnx)."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest

from infra.topics import ensure_topics
from schemas.records import DetectionSource
from schemas.topics import DETECTIONS, FRAMES
from tests.edge_helpers import CLIP, MODEL, edge_env, read_camera, run_edge

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bootstrap(kafka_broker) -> str:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    return kafka_broker.bootstrap


def _env(bootstrap: str, registry: str, tmp_path, **extra: str) -> dict[str, str]:
    return edge_env(bootstrap, registry, tmp_path, ITS_EDGE__MODEL=str(MODEL), **extra)


def test_edge_mode_detects_every_sampled_frame(bootstrap, schema_registry, tmp_path) -> None:
    cam = f"cam-edge-{uuid.uuid4().hex[:8]}"
    code, summary, err = run_edge(
        ["--camera-id", cam, "--source", str(CLIP), "--mode", "edge", "--fast"],
        _env(bootstrap, schema_registry, tmp_path),
    )
    assert code == 0, err[-3000:]
    s = summary["cameras"][0]
    assert s["modes_used"] == ["edge"] and s["dropped"] == 0
    dets = read_camera(bootstrap, schema_registry, DETECTIONS, cam)
    assert len(dets) == s["sampled"] == s["detections_sent"] > 290
    assert [d.frame_seq for d in dets] == list(range(len(dets)))
    assert all(d.source == DetectionSource.EDGE and d.model_name == "yolox_nano_coco_416" for d in dets)
    assert all((d.width, d.height) == (768, 432) and d.inference_ms > 0 for d in dets)
    ts = [d.capture_ts_ms for d in dets]
    assert all(b - a in (80, 160) for a, b in itertools.pairwise(ts))
    with_cars = [d for d in dets if 2 in d.class_ids]
    assert with_cars, "the clip's passing cars are detected"
    for d in with_cars:
        boxes = [d.boxes[i : i + 4] for i in range(0, len(d.boxes), 4)]
        assert all(0 <= x1 < x2 <= 768 and 0 <= y1 < y2 <= 432 for x1, y1, x2, y2 in boxes)
    # Edge mode sends only keyframes upstream: a tenth of the JPEGs, for evidence and re-inference.
    frames = read_camera(bootstrap, schema_registry, FRAMES, cam)
    assert len(frames) == s["keyframes"] == s["frames_sent"] and all(f.is_keyframe for f in frames)
    assert len(dets) // 10 <= len(frames) < len(dets) // 3
    by_seq = {d.frame_seq: d.capture_ts_ms for d in dets}
    assert all(by_seq[f.frame_seq] == f.capture_ts_ms for f in frames)


def test_hybrid_sends_frames_and_detections(bootstrap, schema_registry, tmp_path) -> None:
    cam = f"cam-hyb-{uuid.uuid4().hex[:8]}"
    code, _summary, err = run_edge(
        ["--camera-id", cam, "--source", str(CLIP), "--mode", "hybrid", "--fast", "--max-frames", "20"],
        _env(bootstrap, schema_registry, tmp_path),
    )
    assert code == 0, err[-3000:]
    frames = read_camera(bootstrap, schema_registry, FRAMES, cam)
    dets = read_camera(bootstrap, schema_registry, DETECTIONS, cam)
    assert [f.frame_seq for f in frames] == [d.frame_seq for d in dets] == list(range(20))


def test_auto_mode_decides_from_measurements_and_logs_why(bootstrap, schema_registry, tmp_path) -> None:
    """Loopback RTT is far below 50 ms; a declared 1 Mbps uplink is below 2 Mbps: the seed says edge."""
    cam = f"cam-auto-{uuid.uuid4().hex[:8]}"
    code, summary, err = run_edge(
        ["--camera-id", cam, "--source", str(CLIP), "--mode", "auto", "--fast", "--max-frames", "10"],
        _env(bootstrap, schema_registry, tmp_path, ITS_EDGE__UPLINK_MBPS="1"),
    )
    assert code == 0, err[-3000:]
    decided = [json.loads(x) for x in err.splitlines() if '"auto mode decided"' in x]
    assert decided and decided[0]["mode"] == "edge" and "uplink 1.00 Mbps < 2 Mbps" in decided[0]["reason"]
    assert decided[0]["latency_ms"] < 50
    assert summary["cameras"][0]["modes_used"] == ["edge"]
    assert len(read_camera(bootstrap, schema_registry, DETECTIONS, cam)) == 10
