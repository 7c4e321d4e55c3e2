"""Hostile input on the real broker: each case reaches the DLQ with its reason; good records go through.

The analytics processor runs on a thread (the code ``its process analytics`` runs) on a fresh group;
one camera's detections, signals and raw garbage are interleaved with good records on its partition.
"""

from __future__ import annotations

import dataclasses
import struct
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from infra.topics import ensure_topics
from processors.analytics.processor import AnalyticsProcessor
from schemas import records as r
from schemas.examples import example_camera
from schemas.serde import TopicSerde
from schemas.topics import ANALYTICS_STATE, CAMERAS, DETECTIONS, DLQ, SIGNALS
from schemas.validate import ERROR_TYPE
from tests.integration import inference_support as s

pytestmark = [pytest.mark.security, pytest.mark.integration]


@pytest.fixture(scope="module")
def bootstrap(kafka_broker) -> str:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    return kafka_broker.bootstrap


@pytest.fixture
def analytics(kafka_settings, schema_registry, bootstrap) -> Iterator[tuple[AnalyticsProcessor, str]]:
    """An analytics processor on a thread for one freshly registered camera."""
    serde = TopicSerde(schema_registry)
    cam = f"{s.camera_prefix()}-hostile"
    camera = dataclasses.replace(example_camera(cam), registered_ts_ms=int(time.time() * 1000))
    s.produce(bootstrap, [(cam, serde.encode(CAMERAS, camera))], topic=CAMERAS)
    group = f"analytics-hostile-{uuid.uuid4().hex[:8]}"
    s.start_group_at_end(bootstrap, group, CAMERAS, SIGNALS, DETECTIONS)
    analytics_cfg = kafka_settings.analytics.model_copy(update={"group_id": group, "max_wait_ms": 100})
    settings = kafka_settings.model_copy(
        update={"schema_registry_url": schema_registry, "analytics": analytics_cfg}
    )
    proc = AnalyticsProcessor(settings, instance_id=group, metrics_port=0)
    thread = threading.Thread(target=proc.run, name="analytics-hostile", daemon=True)
    thread.start()
    yield proc, cam
    proc.runtime.stop()
    thread.join(60)
    assert not thread.is_alive(), "the processor did not stop"


def test_each_hostile_case_goes_to_the_dlq_with_its_reason(analytics, bootstrap, schema_registry) -> None:
    proc, cam = analytics
    serde = TopicSerde(schema_registry)
    now = int(time.time() * 1000)
    good = r.Detections(cam, 1, now - 2000, 1280, 720, "yolox", "1", [420.0, 500.0, 500.0, 560.0], [2], [0.9])

    def dets(seq: int, **changes: object) -> bytes:
        fields = {"frame_seq": seq, "capture_ts_ms": now - 2000 + seq * 100, **changes}
        rec = dataclasses.replace(good, **fields)
        return serde.encode(DETECTIONS, rec)

    n = 2001
    body = serde.encode(DETECTIONS, good)[5:]
    cases: list[tuple[str, bytes, str, str]] = [  # (case, value, error type, reason text)
        ("NaN box", dets(2, boxes=[float("nan"), 500.0, 500.0, 560.0]), ERROR_TYPE, "non-finite coordinate"),
        ("negative box", dets(3, boxes=[-300.0, -200.0, 50.0, 60.0]), ERROR_TYPE, "negative coordinates"),
        ("inverted box", dets(4, boxes=[500.0, 560.0, 420.0, 500.0]), ERROR_TYPE, "is inverted"),
        (
            "box outside the frame",
            dets(5, boxes=[2000.0, 900.0, 2100.0, 990.0]),
            ERROR_TYPE,
            "outside the frame",
        ),
        (
            "oversized record",
            dets(6, boxes=[1.0, 1.0, 2.0, 2.0] * n, class_ids=[2] * n, scores=[0.5] * n),
            ERROR_TYPE,
            "2001 boxes is oversized",
        ),
        ("future timestamp", dets(7, capture_ts_ms=now + 3_600_000), ERROR_TYPE, "in the future"),
        ("past timestamp", dets(8, capture_ts_ms=now // 1000), ERROR_TYPE, "too far in the past"),
        ("wrong magic byte", b"\x07" + dets(9)[1:], "RecordDecodeError", "magic byte 7"),
        (
            "unknown schema id",
            struct.pack(">bI", 0, 987_654_321) + body,
            "RecordDecodeError",
            "unknown schema id",
        ),
        ("not Avro", b"\x00\x00\x00\x00", "RecordDecodeError", "shorter than the 5-byte wire header"),
    ]
    dlq_start = s.end_offsets(bootstrap, DLQ)
    state_start = s.end_offsets(bootstrap, ANALYTICS_STATE)
    last_good = dataclasses.replace(good, frame_seq=20, capture_ts_ms=now - 2000 + 2000)
    s.produce(
        bootstrap,
        [
            (cam, serde.encode(DETECTIONS, good)),
            *((cam, value) for _, value, _, _ in cases),
            (cam, serde.encode(DETECTIONS, last_good)),
        ],
        topic=DETECTIONS,
    )
    future_signal = r.SignalPhase(cam, "sig-north", r.Phase.RED, now + 86_400_000)
    s.produce(bootstrap, [(cam, serde.encode(SIGNALS, future_signal))], topic=SIGNALS)

    dead = s.read_committed(
        bootstrap,
        serde,
        DLQ,
        dlq_start,
        lambda d: d.key == cam.encode(),
        want=len(cases) + 1,
        timeout=90,
        settle=0.5,
    )
    assert all(d.component == "analytics" for d in dead)
    from_detections = sorted((d for d in dead if d.source_topic == DETECTIONS), key=lambda d: d.source_offset)
    assert len(from_detections) == len(cases), [d.reason for d in dead]
    for (case, value, error_type, reason), d in zip(cases, from_detections, strict=True):
        assert d.error_type == error_type and reason in d.reason, (case, d.error_type, d.reason)
        assert d.payload == value, case  # the offending bytes are kept for inspection
    signal = [d for d in dead if d.source_topic == SIGNALS]
    assert len(signal) == 1 and "signal timestamp" in signal[0].reason and "in the future" in signal[0].reason

    # The good records on either side of the hostile ones were tracked: a committed state snapshot of
    # the camera stands at the last good record's capture time (had the future-dated record been taken
    # in, the camera's clock would be an hour ahead), and neither good record is a dead letter.
    states = s.read_committed(
        bootstrap,
        serde,
        ANALYTICS_STATE,
        state_start,
        lambda st: st.camera_id == cam and st.ts_ms == last_good.capture_ts_ms,
        want=1,
        timeout=60,
        settle=0.5,
    )
    assert states
    good_offsets = {from_detections[0].source_offset - 1, from_detections[-1].source_offset + 1}
    assert not good_offsets & {d.source_offset for d in dead if d.source_topic == DETECTIONS}
    assert proc.runtime._committed_batches >= 1
