"""Deterministic, realistic records for every sink topic: tests, benchmarks and the README queries.

``generate(n)`` yields ``(catalogue topic, record)`` in time order for a small city: cameras with
two lanes each, detection frames from two model versions (an A/B split), line crossings and
violations with speeds, alerts (some acknowledged), one-minute traffic windows per lane and
heartbeats. The same seed gives the same records, byte for byte, on every run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Producer

from schemas import records as r
from schemas import topics as t
from schemas.serde import TopicSerde, key_bytes

HOUR_MS = 3_600_000
CLASSES = (2, 2, 2, 2, 2, 7, 5, 3, 0, 1)  # COCO ids, weighted like a city street
CLASS_NAMES = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
VIOLATIONS = (r.EventType.RED_LIGHT, r.EventType.SPEEDING, r.EventType.WRONG_WAY, r.EventType.STOP_SIGN)
LOS = (r.LevelOfService.A, r.LevelOfService.B, r.LevelOfService.C, r.LevelOfService.D,
       r.LevelOfService.E, r.LevelOfService.F)  # fmt: skip


def default_start_ms(hours_back: int = 6) -> int:
    """A start ``hours_back`` hours before the current hour: inside every TTL, on an hour boundary."""
    now = int(time.time() * 1000)
    return now - now % HOUR_MS - hours_back * HOUR_MS


def camera(i: int, start_ms: int) -> r.Camera:
    cid = f"cam-{i:04d}"
    p = r.Point
    return r.Camera(
        camera_id=cid,
        name=f"Junction {i}",
        location=r.Location(40.70 + i * 0.001, -74.00 + i * 0.001, f"{i} Main St", f"int-{i // 2:04d}"),
        scene=r.SceneConfig(
            lanes=[
                r.Lane("nb-1", [p(0, 0)], [p(0, 0)], 50.0, "north"),
                r.Lane("sb-1", [p(0, 0)], [p(0, 0)], 50.0 if i % 3 else 30.0, "south"),
            ]
        ),
        registered_ts_ms=start_ms,
        timezone="America/New_York",
        labels={"district": ("north", "south", "east", "west")[i % 4]},
    )


def generate(
    n: int, cameras: int = 40, seed: int = 7, start_ms: int | None = None
) -> Iterator[tuple[str, Any]]:
    """``n`` records in all (the cameras first), spread over ``span`` hours from ``start_ms``."""
    rng = random.Random(seed)
    start = default_start_ms() if start_ms is None else start_ms
    for i in range(cameras):
        yield t.CAMERAS, camera(i, start)
    left = max(0, n - cameras)
    span_ms = 4 * HOUR_MS
    step = span_ms / max(1, left)
    frame_seq = [0] * cameras
    acked = 0
    for k in range(left):
        ts = start + int(k * step)
        cam = rng.randrange(cameras)
        cid = f"cam-{cam:04d}"
        roll = rng.random()
        if roll < 0.70:
            frame_seq[cam] += 1
            objects = rng.randint(0, 12)
            boxes: list[float] = []
            for _ in range(objects):
                x, y = rng.uniform(0, 1200), rng.uniform(0, 650)
                boxes += [
                    round(x, 1),
                    round(y, 1),
                    round(x + rng.uniform(20, 80), 1),
                    round(y + rng.uniform(20, 70), 1),
                ]
            version = "2" if cam % 2 else "1"
            yield (
                t.DETECTIONS,
                r.Detections(
                    camera_id=cid,
                    frame_seq=frame_seq[cam],
                    capture_ts_ms=ts,
                    width=1280,
                    height=720,
                    model_name="yolox_nano_coco_416",
                    model_version=version,
                    boxes=boxes,
                    class_ids=[rng.choice(CLASSES) for _ in range(objects)],
                    scores=[round(rng.uniform(0.3, 0.99), 3) for _ in range(objects)],
                    track_ids=[rng.randrange(10_000) for _ in range(objects)],
                    inference_ms=round(rng.uniform(8, 14) if version == "1" else rng.uniform(6, 11), 2),
                    processed_ts_ms=ts + rng.randint(20, 120),
                ),
            )
        elif roll < 0.85:
            lane = rng.choice(("nb-1", "sb-1"))
            violation = rng.random() < 0.2
            etype = rng.choice(VIOLATIONS) if violation else r.EventType.LINE_CROSSING
            track = rng.randrange(100_000)
            speed = round(max(3.0, rng.gauss(45 if lane == "nb-1" else 38, 9)), 1)
            yield (
                t.EVENTS,
                r.Event(
                    event_id=f"{cid}:{etype}:{track}:{ts}",
                    camera_id=cid,
                    event_type=etype,
                    severity=r.Severity.HIGH if violation else r.Severity.INFO,
                    ts_ms=ts,
                    track_id=track,
                    class_id=rng.choice(CLASSES),
                    lane_id=lane,
                    line_id="count-1",
                    direction="northbound" if lane == "nb-1" else "southbound",
                    confidence=round(rng.uniform(0.5, 0.99), 3),
                    measurements={"speed_kmh": speed},
                    signal_phase="RED" if etype is r.EventType.RED_LIGHT else None,
                    evidence=r.Evidence(frame_seq[cam], ts, r.FrameRef(t.FRAMES, cam % 24, k))
                    if violation
                    else None,
                    model_version="yolox_nano_coco_416:" + ("2" if cam % 2 else "1"),
                ),
            )
        elif roll < 0.93:
            lane = rng.choice(("nb-1", "sb-1"))
            window_start = ts - ts % 60_000
            volume = rng.randint(0, 40)
            los = LOS[min(5, volume // 7)]
            yield (
                t.TRAFFIC_STATS,
                r.TrafficStats(
                    stats_id=f"{cid}:{lane}:{window_start}:60:{k}",
                    camera_id=cid,
                    lane_id=lane,
                    window_start_ms=window_start,
                    window_end_ms=window_start + 60_000,
                    window_s=60,
                    volume=volume,
                    volume_by_class={
                        "car": volume - volume // 5,
                        "truck": volume // 10,
                        "bus": volume // 5 - volume // 10,
                    },
                    mean_speed_kmh=round(rng.uniform(15, 55), 1) if volume else None,
                    p85_speed_kmh=round(rng.uniform(40, 70), 1) if volume else None,
                    occupancy=round(min(1.0, volume / 45), 3),
                    density_veh_per_km=round(volume * 1.5, 1),
                    queue_length_m=round(rng.uniform(0, 120), 1),
                    queue_vehicles=rng.randint(0, 15),
                    level_of_service=los,
                ),
            )
        elif roll < 0.99:
            status = (
                r.HealthStatus.ONLINE
                if rng.random() < 0.93
                else rng.choice((r.HealthStatus.DEGRADED, r.HealthStatus.OFFLINE))
            )
            yield (
                t.HEALTH,
                r.Health(
                    camera_id=cid,
                    ts_ms=ts,
                    mode=r.ProcessingMode.CLOUD,
                    status=status,
                    producer_id=f"edge-{cam % 5}",
                    fps_in=25.0,
                    fps_out=round(rng.uniform(8, 10), 2)
                    if status is r.HealthStatus.ONLINE
                    else round(rng.uniform(0, 5), 2),
                    frames_dropped=rng.randint(0, 20),
                    queue_depth=rng.randint(0, 30),
                    uptime_s=float((ts - start) // 1000),
                ),
            )
        else:
            etype = rng.choice(VIOLATIONS)
            ack = rng.random() < 0.7
            acked += ack
            yield (
                t.ALERTS,
                r.Alert(
                    alert_id=f"{cid}:{etype}:{ts}:0",
                    incident_id=f"{cid}:{etype}:{ts}",
                    camera_id=cid,
                    alert_type=etype,
                    severity=rng.choice((r.Severity.MEDIUM, r.Severity.HIGH, r.Severity.CRITICAL)),
                    first_ts_ms=ts,
                    last_ts_ms=ts + rng.randint(0, 30_000),
                    title=f"{etype} at Junction {cam}",
                    status=r.AlertStatus.ACKNOWLEDGED if ack else r.AlertStatus.OPEN,
                    event_ids=[f"{cid}:{etype}:{k}:{ts}"],
                    location=r.Location(40.70 + cam * 0.001, -74.00 + cam * 0.001),
                    acknowledged_by="operator-1" if ack else None,
                    acknowledged_ts_ms=ts + rng.randint(15_000, 900_000) if ack else None,
                ),
            )


def event_time_ms(record: Any) -> int:
    """The record's event time: its Kafka timestamp, so that a replay by time selects by event time."""
    for name in ("capture_ts_ms", "ts_ms", "window_start_ms", "first_ts_ms", "registered_ts_ms"):
        value = getattr(record, name, None)
        if value is not None:
            return int(value)
    return int(time.time() * 1000)


def produce(
    kafka_conf: dict[str, object],
    registry_url: str,
    records: Any,
    prefix: str = "",
) -> dict[str, int]:
    """Encode and produce ``(catalogue topic, record)`` pairs to ``prefix + topic``; returns counts."""
    serde = TopicSerde(registry_url)
    producer = Producer(
        {**kafka_conf, "enable.idempotence": True, "acks": "all", "linger.ms": 20, "batch.size": 1_000_000,
         "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    counts: dict[str, int] = {}
    failures: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for topic, record in records:
        value = serde.encode(topic, record)
        while True:
            try:
                producer.produce(
                    prefix + topic,
                    value,
                    key_bytes(record.camera_id),
                    on_delivery=report,
                    timestamp=event_time_ms(record),
                )
                break
            except BufferError:
                producer.poll(0.1)
        counts[topic] = counts.get(topic, 0) + 1
    if producer.flush(60) or failures:
        raise RuntimeError(f"could not deliver every record: {failures[:3]}")
    return counts
