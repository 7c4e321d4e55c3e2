"""Helpers for the inference-processor tests: real highway frames in, committed detections out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import BY_NAME, DETECTIONS, FRAMES

CLIP = "video/highway_cars_720p.mp4"  # local tests only: read from ../shared/assets, never copied


def clip_jpegs(assets: Path, n: int, *, width: int | None = None, step: int = 1) -> list[bytes]:
    """``n`` JPEG frames of the highway clip (every ``step``-th, optionally resized to ``width``)."""
    cap = cv2.VideoCapture(str(assets / CLIP))
    out: list[bytes] = []
    index = 0
    try:
        while len(out) < n:
            ok, frame = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop the clip for long runs
                continue
            index += 1
            if (index - 1) % step:
                continue
            if width:
                frame = cv2.resize(frame, (width, int(frame.shape[0] * width / frame.shape[1])))
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            out.append(buf.tobytes())
    finally:
        cap.release()
    return out


def camera_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}-cam"


def frame_record(camera_id: str, seq: int, jpeg: bytes) -> r.Frame:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2] if img is not None else (0, 0)
    return r.Frame(camera_id, seq, 1_764_000_000_000 + seq * 100, w, h, True, jpeg, 0.0, "test")


def produce(bootstrap: str, items: Iterable[tuple[str, bytes]], topic: str = FRAMES) -> list[tuple[int, int]]:
    """Produce (key, value) pairs idempotently; returns (partition, offset) of each, in order."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    results: dict[int, tuple[int, int]] = {}
    errors: list[object] = []

    def report(i: int):
        def cb(err, msg) -> None:
            if err:
                errors.append(err)
            else:
                results[i] = (msg.partition(), msg.offset())

        return cb

    count = 0
    for i, (key, value) in enumerate(items):
        producer.produce(topic, key=key.encode(), value=value, on_delivery=report(i))
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0 and not errors, errors
    return [results[i] for i in range(count)]


def produce_frames(bootstrap: str, serde: TopicSerde, frames: list[r.Frame]) -> list[tuple[int, int]]:
    return produce(bootstrap, ((f.camera_id, serde.encode(FRAMES, f)) for f in frames))


def high_watermark(consumer: Consumer, topic: str, partition: int, timeout: float = 30.0) -> int:
    """The partition's end offset, retried while a just-created topic elects its leaders."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def start_group_at_end(bootstrap: str, group: str, *topics: str) -> None:
    """Commit ``group``'s offsets at the current end of ``topics`` (default: frames), so it only sees
    what comes next.

    Topics are shared by every test of the session; this keeps a test's processor off older records.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [
            TopicPartition(t, p, high_watermark(consumer, t, p))
            for t in topics or (FRAMES,)
            for p in range(BY_NAME[t].partitions)
        ]
        consumer.commit(offsets=parts, asynchronous=False)
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4()}"})
    try:
        return {p: high_watermark(consumer, topic, p) for p in range(BY_NAME[topic].partitions)}
    finally:
        consumer.close()


def read_committed(
    bootstrap: str,
    serde: TopicSerde,
    topic: str,
    start: dict[int, int],
    keep: callable,
    *,
    want: int | None = None,
    timeout: float = 120.0,
    settle: float = 2.0,
    isolation: str = "read_committed",
) -> list[object]:
    """Every committed record on ``topic`` after ``start`` offsets for which ``keep(record)`` holds.

    Reads until ``want`` records are in (if given) and then until every partition's position has
    reached its end (read_committed: aborted data and transaction markers are skipped).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"verify-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    parts = [TopicPartition(topic, p, o) for p, o in start.items()]
    consumer.assign(parts)
    out: list[object] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                rec = serde.decode(msg)
                if keep(rec):
                    out.append(rec)
                quiet_since = time.monotonic()
                continue
            if want is not None and len(out) < want:
                continue
            if time.monotonic() - quiet_since < settle:
                continue
            positions = consumer.position([TopicPartition(topic, p) for p in start])
            ends = {p: high_watermark(consumer, topic, p) for p in start}
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == start[tp.partition]
                   for tp in positions):  # fmt: skip
                break
        return out
    finally:
        consumer.close()


__all__ = [
    "DETECTIONS",
    "FRAMES",
    "camera_prefix",
    "clip_jpegs",
    "end_offsets",
    "frame_record",
    "produce",
    "produce_frames",
    "read_committed",
    "start_group_at_end",
]
