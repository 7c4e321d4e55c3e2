"""Camera registry: ``records.Camera`` on the compacted ``its.cameras.v1``, latest record per camera id.

A camera is described by a YAML file (id, name, location, mode, source, scene config); points may be
written ``[x, y]`` or ``{x: .., y: ..}`` and enum values in any case. ``remove`` writes a tombstone
(key, no value), which compaction turns into the camera's absence.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from pydantic import TypeAdapter, ValidationError

from producers.modes import parse_mode
from producers.redact import redact_url
from schemas import records as r
from schemas.serde import TopicSerde, key_bytes
from schemas.topics import CAMERAS

_CAMERA = TypeAdapter(r.Camera)
_POINT_KEYS = {"points", "polygon", "centerline", "image_points", "ground_points"}
_ENUM_KEYS = {"kind", "mode"}


class CameraFileError(ValueError):
    """A camera YAML file that does not describe a valid camera."""


def _normalise(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key in _POINT_KEYS:
            return [{"x": p[0], "y": p[1]} if isinstance(p, list | tuple) else p for p in value]
        return [_normalise(v) for v in value]
    if key in _ENUM_KEYS and isinstance(value, str):
        return value.upper()
    return value


def camera_from_dict(doc: dict[str, Any], *, now_ms: int | None = None) -> r.Camera:
    """A validated ``records.Camera``; the source URL is stored redacted (no credentials on Kafka)."""
    data = _normalise(dict(doc))
    data.setdefault("registered_ts_ms", now_ms if now_ms is not None else time.time_ns() // 1_000_000)
    data.setdefault("scene", {})
    if "mode" in data:
        data["mode"] = parse_mode(data["mode"]).value
    if data.get("source") is not None:
        data["source"] = redact_url(str(data["source"]))
    try:
        return _CAMERA.validate_python(data)
    except ValidationError as exc:
        raise CameraFileError(str(exc)) from None


def load_camera_file(path: Path) -> r.Camera:
    if not path.is_file():
        raise CameraFileError(f"camera file {path} is not a file")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CameraFileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise CameraFileError(f"{path}: expected a mapping with camera_id, name, location, scene")
    try:
        return camera_from_dict(doc)
    except (CameraFileError, ValueError) as exc:
        raise CameraFileError(f"{path}: {exc}") from None


class CameraRegistry:
    """Register, list, show and remove cameras on ``its.cameras.v1``."""

    def __init__(self, kafka_conf: dict[str, Any], registry_url: str, topic: str = CAMERAS) -> None:
        self.kafka_conf = kafka_conf
        self.serde = TopicSerde(registry_url)
        self.topic = topic

    def _send(self, key: bytes, value: bytes | None) -> None:
        producer = Producer({**self.kafka_conf, "enable.idempotence": True, "acks": "all"})
        errors: list[KafkaError] = []
        producer.produce(
            self.topic, key=key, value=value, on_delivery=lambda err, _m: err and errors.append(err)
        )
        remaining = producer.flush(30)
        if remaining or errors:
            raise RuntimeError(
                f"could not write to {self.topic}: {errors[0].str() if errors else 'timed out'}"
            )

    def register(self, camera: r.Camera) -> None:
        self._send(key_bytes(camera.camera_id), self.serde.encode(self.topic, camera))

    def remove(self, camera_id: str) -> bool:
        """Tombstone ``camera_id``; False if it is not registered."""
        if camera_id not in self.all():
            return False
        self._send(key_bytes(camera_id), None)
        return True

    def all(self, timeout: float = 30.0) -> dict[str, r.Camera]:
        """Every registered camera (latest record per key, tombstones applied), read to the end."""
        consumer = Consumer({
            **self.kafka_conf,
            "group.id": f"its-camera-cli-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })  # fmt: skip
        try:
            meta = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if meta is None or meta.error is not None:
                raise RuntimeError(f"topic {self.topic} is missing (run `its topics ensure`)")
            ends: dict[int, int] = {}
            for p in meta.partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
                if hi > lo:
                    ends[p] = hi
            cameras: dict[str, r.Camera] = {}
            if not ends:
                return cameras
            consumer.assign([TopicPartition(self.topic, p, -2) for p in ends])  # -2: OFFSET_BEGINNING
            deadline = time.monotonic() + timeout
            done: set[int] = set()
            while len(done) < len(ends) and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                key = (msg.key() or b"").decode()
                if msg.value() is None:
                    cameras.pop(key, None)
                else:
                    cameras[key] = self.serde.decode(msg)
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
            if len(done) < len(ends):
                raise RuntimeError(f"timed out reading {self.topic}")
            return cameras
        finally:
            consumer.close()

    def get(self, camera_id: str) -> r.Camera | None:
        return self.all().get(camera_id)
