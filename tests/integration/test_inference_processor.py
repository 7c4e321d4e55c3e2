"""The inference processor on a real broker: detections match a direct run; bad input goes to the DLQ."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest

from infra.topics import ensure_topics
from processors.inference.detector import load_detector
from processors.inference.processor import build_processor
from processors.runtime import StreamProcessor
from schemas import examples
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import DETECTIONS, DLQ, FRAMES
from tests.integration import inference_support as s

pytestmark = pytest.mark.integration

MODEL = "yolox_nano_coco_416.onnx"


@pytest.fixture(scope="module")
def bootstrap(kafka_broker) -> str:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    return kafka_broker.bootstrap


@pytest.fixture
def processor(kafka_settings, schema_registry, bootstrap) -> Iterator[StreamProcessor]:
    """An inference processor on a thread, on a fresh group that starts at the frames topic's end."""
    group = f"inference-test-{uuid.uuid4().hex[:8]}"
    s.start_group_at_end(bootstrap, group)
    inference = kafka_settings.inference.model_copy(
        update={
            "model": str(kafka_settings.assets_path / "models" / MODEL),
            "group_id": group,
            "use_registry": False,
            "max_batch": 8,
            "max_wait_ms": 200,
        }
    )
    settings = kafka_settings.model_copy(
        update={"schema_registry_url": schema_registry, "inference": inference}
    )
    proc = build_processor(settings, instance_id=group, metrics_port=0, handle_signals=False)
    thread = threading.Thread(target=proc.run, name="inference-test", daemon=True)
    thread.start()
    yield proc
    proc.stop()
    thread.join(60)
    assert not thread.is_alive(), "the processor did not stop"


def test_detections_match_a_direct_single_image_run(processor, bootstrap, schema_registry, kafka_settings):
    serde = TopicSerde(schema_registry)
    prefix = s.camera_prefix()
    jpegs = s.clip_jpegs(kafka_settings.assets_path, 24, step=10)
    # 4 cameras interleaved: batches of 8 mix cameras
    frames = [s.frame_record(f"{prefix}-{i % 4}", i // 4, jpeg) for i, jpeg in enumerate(jpegs)]
    start = s.end_offsets(bootstrap, DETECTIONS)
    refs = s.produce_frames(bootstrap, serde, frames)

    got = s.read_committed(
        bootstrap, serde, DETECTIONS, start, lambda d: d.camera_id.startswith(prefix), want=len(frames)
    )
    by_key = {(d.camera_id, d.frame_seq): d for d in got}
    assert len(got) == len(by_key) == len(frames)

    direct = load_detector(kafka_settings.assets_path / "models" / MODEL)
    total_boxes = 0
    for frame, (partition, offset) in zip(frames, refs, strict=True):
        det: r.Detections = by_key[(frame.camera_id, frame.frame_seq)]
        img = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        (want,) = direct.detect([img])
        assert det.class_ids == want.class_id.tolist()
        np.testing.assert_allclose(np.asarray(det.boxes).reshape(-1, 4), want.xyxy, atol=1.0)
        assert det.frame_ref == r.FrameRef(FRAMES, partition, offset)
        assert (det.model_name, det.model_version) == (direct.name, direct.version)
        assert (det.width, det.height) == (1280, 720) and det.capture_ts_ms == frame.capture_ts_ms
        assert det.inference_ms > 0 and det.processed_ts_ms > 0
        assert det.source == r.DetectionSource.CLOUD
        total_boxes += len(det)
    assert total_boxes >= 5 * len(frames)  # dense traffic: cars in every frame

    metrics = httpx.get(f"{processor.service.url}/metrics").text
    assert "its_inference_batch_size_count" in metrics
    assert 'its_inference_frames_total{model="yolox_nano_coco_416"' in metrics
    assert 'its_inference_stage_seconds_count{stage="infer"}' in metrics
    health = httpx.get(f"{processor.service.url}/healthz").json()
    assert health["status"] == "ok" and health["assigned_partitions"] == 24
    assert health["committed_batches"] >= 3  # 24 frames, batches of at most 8


def test_corrupt_jpeg_and_wrong_schema_go_to_the_dlq_and_the_batch_goes_on(
    processor, bootstrap, schema_registry, kafka_settings
):
    serde = TopicSerde(schema_registry)
    prefix = s.camera_prefix()
    cam = f"{prefix}-0"  # one camera: all on one partition, in this order
    good = s.clip_jpegs(kafka_settings.assets_path, 2, width=640)
    corrupt = r.Frame(cam, 1, 1_764_000_000_100, 640, 360, True, b"\xff\xd8\xff\xe0 not a jpeg", 0.0, "t")
    wrong_schema = serde.encode(DETECTIONS, examples.example_records()[DETECTIONS])
    dlq_start = s.end_offsets(bootstrap, DLQ)
    det_start = s.end_offsets(bootstrap, DETECTIONS)
    refs = s.produce(
        bootstrap,
        [
            (cam, serde.encode(FRAMES, s.frame_record(cam, 0, good[0]))),
            (cam, serde.encode(FRAMES, corrupt)),
            (cam, wrong_schema),  # a Detections record on the frames topic
            (cam, b"plain garbage, not Avro"),
            (cam, serde.encode(FRAMES, s.frame_record(cam, 4, good[1]))),
        ],
    )

    dead = s.read_committed(
        bootstrap, serde, DLQ, dlq_start, lambda d: d.key == cam.encode(), want=3, timeout=90
    )
    by_offset = {d.source_offset: d for d in dead}
    assert len(dead) == 3 and set(by_offset) == {refs[1][1], refs[2][1], refs[3][1]}
    for d in dead:
        assert d.source_topic == FRAMES and d.source_partition == refs[0][0]
        assert d.component == "inference" and d.reason
    assert by_offset[refs[1][1]].error_type == "FrameDecodeError"
    assert "undecodable JPEG" in by_offset[refs[1][1]].reason
    assert by_offset[refs[1][1]].payload == corrupt.jpeg
    assert by_offset[refs[2][1]].error_type == "RecordDecodeError"
    assert by_offset[refs[3][1]].error_type == "RecordDecodeError"
    assert "magic byte" in by_offset[refs[3][1]].reason
    assert by_offset[refs[3][1]].payload == b"plain garbage, not Avro"

    dets = s.read_committed(
        bootstrap, serde, DETECTIONS, det_start, lambda d: d.camera_id == cam, want=2, timeout=60
    )
    assert sorted(d.frame_seq for d in dets) == [0, 4]
    assert all(len(d) > 0 for d in dets)
