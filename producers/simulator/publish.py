"""Publish a simulation to Kafka: cameras, then signals and detections paced by capture time."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge

from infra.kafka.signing import Signer, make_producer
from producers.simulator.core import Simulation
from schemas import records as r
from schemas.serde import TopicSerde, key_bytes
from schemas.topics import CAMERAS, DETECTIONS, FRAMES, SIGNALS

log = logging.getLogger(__name__)

RECORDS = Counter("its_simulator_records_total", "Records the simulator handed to Kafka", ["topic"])
DELIVERY_ERRORS = Counter("its_simulator_delivery_errors_total", "Records Kafka failed to deliver", ["topic"])
BEHIND = Gauge("its_simulator_behind_seconds", "How far publishing lags the simulated capture clock")


def producer_config(settings: Any, **overrides: object) -> dict[str, object]:
    """Idempotent, acks=all, compressed: the edge producers' delivery guarantees."""
    conf: dict[str, object] = {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    conf.update(overrides)
    return settings.kafka_config(**conf)


@dataclass(slots=True)
class PublishReport:
    produced: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    delivery_errors: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


def _perfect_frames(sim: Simulation) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(camera, frame) -> true boxes and classes: what a rendered frame shows."""
    per: dict[tuple[str, int], tuple[list[np.ndarray], list[int]]] = {}
    for t in sim.truth.tracks:
        for seq, box in zip(t.frame_seq.tolist(), t.box, strict=True):
            boxes, classes = per.setdefault((t.camera_id, seq), ([], []))
            boxes.append(box)
            classes.append(t.class_id)
    return {k: (np.asarray(b).reshape(-1, 4), np.asarray(c)) for k, (b, c) in per.items()}


def publish(
    sim: Simulation,
    settings: Any,
    *,
    realtime: bool = True,
    render: bool = False,
    keyframe_every: int = 10,
    should_stop: Any = None,
) -> PublishReport:
    """Send ``sim.stream()`` to Kafka; paced by capture time unless ``realtime`` is False."""
    serde = TopicSerde(settings.schema_registry_url)
    producer = make_producer(producer_config(settings), Signer.from_settings(settings))
    report = PublishReport()

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            report.delivery_errors += 1
            DELIVERY_ERRORS.labels(msg.topic()).inc()
        else:
            report.delivered += 1

    renderers: dict[str, Any] = {}
    frames: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    if render:
        from producers.simulator.render import Renderer

        renderers = {cid: Renderer(scene) for cid, scene in sim.scenes.items()}
        frames = _perfect_frames(sim)

    def send(topic: str, record: Any) -> None:
        value = serde.encode(topic, record)
        while True:
            try:
                producer.produce(topic, value=value, key=key_bytes(record.camera_id), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let librdkafka drain, never drop
                producer.poll(0.05)
        report.produced[topic] = report.produced.get(topic, 0) + 1
        RECORDS.labels(topic).inc()

    started = time.monotonic()
    t_sim0 = sim.truth.start_ms
    # A simulation anchored at "now" (as `its simulate` makes it) is paced by the wall clock itself:
    # computing the world took seconds, and pacing from the first send would make every capture time
    # that much older than its publish time (a false end-to-end latency). Others are paced relatively.
    behind_s = time.time() - t_sim0 / 1000.0
    t_wall0 = started - behind_s if 0 <= behind_s < 600 else started
    for rec in sim.stream():
        if should_stop is not None and should_stop():
            report.stopped_early = True
            break
        if isinstance(rec, r.Camera):
            send(CAMERAS, rec)
            continue
        ts = rec.ts_ms if isinstance(rec, r.SignalPhase) else rec.capture_ts_ms
        if realtime:
            due = t_wall0 + (ts - t_sim0) / 1000.0
            lag = time.monotonic() - due
            BEHIND.set(max(lag, 0.0))
            if lag < 0:
                time.sleep(-lag)
        if isinstance(rec, r.SignalPhase):
            send(SIGNALS, rec)
        else:
            if render:
                boxes, classes = frames.get((rec.camera_id, rec.frame_seq), (np.zeros((0, 4)), np.zeros(0)))
                rd = renderers[rec.camera_id]
                frame = r.Frame(
                    rec.camera_id, rec.frame_seq, rec.capture_ts_ms, rd.width, rd.height,
                    rec.frame_seq % keyframe_every == 0, rd.jpeg(boxes, classes), 0.0, "simulator",
                )  # fmt: skip
                send(FRAMES, frame)
            send(DETECTIONS, rec)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        report.delivery_errors += remaining
    report.seconds = time.monotonic() - started
    return report
