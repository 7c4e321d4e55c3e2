"""The model registry: detector versions on the compacted topic ``its.models.v1``, seen by every processor.

Each record is one model version (key ``<name>:<version>``); the latest record per key is that
version's state, so the topic folds into ``{(name, version): ModelEntry}``. Stages:

* CANDIDATE: registered (``its model add``), used by nobody;
* CANARY: used for ``canary_percent`` % of cameras, chosen by a stable hash of the camera id;
* STABLE: used for every other camera (the newest ``promoted_ts_ms`` wins if two say STABLE);
* RETIRED: an earlier stable version; ``rollback`` re-promotes the latest one.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from its.settings import Settings
from schemas.records import ModelEntry, ModelStage
from schemas.serde import TopicSerde
from schemas.topics import MODELS

log = logging.getLogger(__name__)

Key = tuple[str, str]


def canary_bucket(camera_id: str, model_name: str) -> float:
    """A camera's fixed place in [0, 100): cameras below ``canary_percent`` get the candidate.

    Salted with the model name (not the version) so raising the percentage only adds cameras, and a
    new candidate of the same model goes to the same first cameras, which operators then know.
    """
    digest = hashlib.sha256(f"{model_name}\x00{camera_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000 / 10_000


def stable_entry(entries: dict[Key, ModelEntry], name: str) -> ModelEntry | None:
    stable = [e for (n, _), e in entries.items() if n == name and e.stage == ModelStage.STABLE]
    return max(stable, key=lambda e: (e.promoted_ts_ms, e.updated_ts_ms), default=None)


def canary_entry(entries: dict[Key, ModelEntry], name: str) -> ModelEntry | None:
    canary = [e for (n, _), e in entries.items() if n == name and e.stage == ModelStage.CANARY]
    return max(canary, key=lambda e: e.updated_ts_ms, default=None)


def choose(entries: dict[Key, ModelEntry], name: str, camera_id: str) -> ModelEntry | None:
    """The version ``camera_id`` uses: the canary if the camera's bucket is inside its share, else stable."""
    canary = canary_entry(entries, name)
    if canary is not None and canary_bucket(camera_id, name) < canary.canary_percent:
        return canary
    return stable_entry(entries, name) or canary


class ModelRegistry:
    """Read and change the registry topic."""

    def __init__(self, settings: Settings, serde: TopicSerde | None = None, topic: str = MODELS) -> None:
        self.settings = settings
        self.topic = topic
        self.serde = serde or TopicSerde(settings.schema_registry_url)
        self.entries: dict[Key, ModelEntry] = {}
        self._consumer: Consumer | None = None

    # --- reading ----------------------------------------------------------------------------------

    def refresh(self, timeout: float = 10.0) -> dict[Key, ModelEntry]:
        """Fold every record up to the current end of the topic into ``entries``; returns them."""
        if self._consumer is None:
            self._consumer = Consumer(
                self.settings.kafka_config(
                    **{
                        "group.id": f"its-model-registry-{uuid.uuid4().hex[:8]}",  # never commits
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",
                    }
                )
            )
            self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            position = self._consumer.position([TopicPartition(self.topic, 0)])[0].offset
            if high <= low or (position >= 0 and position >= high):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic} up to offset {high} took over {timeout}s")
            msg = self._consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("registry read error", extra={"error": str(msg.error())})
                continue
            if msg.value() is None:  # tombstone: the version was deleted
                key = (msg.key() or b"").decode()
                name, _, version = key.partition(":")
                self.entries.pop((name, version), None)
                continue
            entry: ModelEntry = self.serde.decode(msg)
            self.entries[(entry.name, entry.version)] = entry
        return self.entries

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def versions(self, name: str | None = None) -> list[ModelEntry]:
        return sorted(
            (e for (n, _), e in self.entries.items() if name is None or n == name),
            key=lambda e: (e.name, e.added_ts_ms, e.version),
        )

    def get(self, name: str, version: str) -> ModelEntry:
        try:
            return self.entries[(name, version)]
        except KeyError:
            known = [v for (n, v) in self.entries if n == name]
            raise KeyError(
                f"no model {name}:{version} in the registry (versions of {name}: {known})"
            ) from None

    # --- writing ----------------------------------------------------------------------------------

    def publish(self, entries: Iterable[ModelEntry]) -> None:
        """Write entries (idempotent producer, acks=all) and fold them in."""
        producer = Producer(self.settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
        errors: list[Any] = []
        batch = list(entries)
        for e in batch:
            producer.produce(
                self.topic,
                key=f"{e.name}:{e.version}".encode(),
                value=self.serde.encode(self.topic, e),
                on_delivery=lambda err, _msg: errors.append(err) if err else None,
            )
        left = producer.flush(30)
        if left or errors:
            raise RuntimeError(f"registry write failed: {errors or f'{left} records undelivered'}")
        for e in batch:
            self.entries[(e.name, e.version)] = e

    def add(
        self, path: str | Path, name: str, version: str, *, measure: bool = True, note: str = ""
    ) -> ModelEntry:
        """Register a model file as a CANDIDATE, with its geometry, checksum and measured figures."""
        from processors.inference.detector import OnnxDetector, file_sha256

        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file")
        self.refresh()
        if (name, version) in self.entries:
            raise ValueError(f"{name}:{version} is already registered; versions are immutable")
        now = int(time.time() * 1000)
        metrics: dict[str, float] = {}
        if path.suffix.lower() == ".onnx":
            det = OnnxDetector(path, name=name, version=version, classes=None)
            fmt, (h, w), classes = det.format, det.input_size, list(range(det.num_classes))
            if measure:
                metrics = measure_model(det, self.settings.assets_path)
        else:  # .pt / .engine: described by ultralytics when it is installed
            fmt, (h, w), classes = "ultralytics-pt", (640, 640), list(range(80))
        entry = ModelEntry(
            name=name,
            version=version,
            path=str(path),
            format=fmt,
            input_height=h,
            input_width=w,
            classes=classes,
            sha256=file_sha256(str(path)),
            size_bytes=path.stat().st_size,
            added_ts_ms=now,
            updated_ts_ms=now,
            metrics=metrics,
            note=note,
        )
        self.publish([entry])
        return entry

    def promote(self, name: str, version: str) -> list[ModelEntry]:
        """Make ``version`` the stable model of ``name``; the previous stable one is RETIRED."""
        self.refresh()
        target = self.get(name, version)
        now = int(time.time() * 1000)
        changes = [
            replace(e, stage=ModelStage.RETIRED, canary_percent=0.0, updated_ts_ms=now)
            for (n, v), e in self.entries.items()
            if n == name and v != version and e.stage == ModelStage.STABLE
        ]
        changes.append(
            replace(
                target, stage=ModelStage.STABLE, canary_percent=0.0, updated_ts_ms=now, promoted_ts_ms=now
            )
        )
        self.publish(changes)
        retired = ",".join(e.version for e in changes[:-1])
        self._audit("model.promote", f"{name}:{version}", sha256=target.sha256, retired=retired)
        return changes

    def rollback(self, name: str) -> list[ModelEntry]:
        """Return ``name`` to the version that was stable before the current one."""
        self.refresh()
        current = stable_entry(self.entries, name)
        if current is None:
            raise ValueError(f"{name} has no stable version to roll back from")
        earlier = [
            e
            for (n, _), e in self.entries.items()
            if n == name and e.version != current.version and 0 < e.promoted_ts_ms <= current.promoted_ts_ms
        ]
        if not earlier:
            raise ValueError(f"{name}:{current.version} is the first stable version; nothing to roll back to")
        previous = max(earlier, key=lambda e: e.promoted_ts_ms)
        now = int(time.time() * 1000)
        # The previous version keeps its original promoted_ts_ms (so a second rollback goes further
        # back); the rolled-back one loses its promotion so it is never chosen as 'previous' again.
        changes = [
            replace(
                current, stage=ModelStage.RETIRED, updated_ts_ms=now, promoted_ts_ms=0, note="rolled back"
            ),
            replace(previous, stage=ModelStage.STABLE, updated_ts_ms=now),
        ]
        self.publish(changes)
        self._audit("model.rollback", f"{name}:{previous.version}", rolled_back=current.version)
        return changes

    def canary(self, name: str, version: str, percent: float) -> list[ModelEntry]:
        """Send ``percent`` % of cameras to ``version``; another canary of ``name`` goes back to CANDIDATE."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be within 0..100, got {percent}")
        self.refresh()
        target = self.get(name, version)
        if target.stage == ModelStage.STABLE:
            raise ValueError(f"{name}:{version} is already stable")
        now = int(time.time() * 1000)
        changes = [
            replace(e, stage=ModelStage.CANDIDATE, canary_percent=0.0, updated_ts_ms=now)
            for (n, v), e in self.entries.items()
            if n == name and v != version and e.stage == ModelStage.CANARY
        ]
        changes.append(
            replace(target, stage=ModelStage.CANARY, canary_percent=float(percent), updated_ts_ms=now)
        )
        self.publish(changes)
        self._audit("model.canary", f"{name}:{version}", percent=f"{percent:g}")
        return changes

    def _audit(self, action: str, target: str, **details: object) -> None:
        """Stage changes are security-relevant (what every camera runs): audited after they are published."""
        from its.audit import OK, audit

        audit(
            self.settings,
            None,
            action,
            target,
            OK,
            component="model-registry",
            registry_topic=self.topic,
            **details,
        )


def measure_model(det: Any, assets: Path, repeats: int = 5) -> dict[str, float]:
    """Figures stored with a model: CPU latency per image and what it finds on the reference image."""
    import cv2
    import numpy as np

    ref = assets / "images" / "bus.jpg"
    img = cv2.imread(str(ref)) if ref.is_file() else None
    if img is None:
        img = np.full((720, 1280, 3), 114, np.uint8)
    det.detect([img])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        boxes = det.detect([img])[0]
        times.append((time.perf_counter() - start) * 1000)
    out = {"latency_ms_cpu": round(float(np.median(times)), 2)}
    if ref.is_file():
        out["bus_jpg_detections"] = float(len(boxes))
        out["bus_jpg_mean_score"] = round(float(boxes.score.mean()) if len(boxes) else 0.0, 4)
    return out
