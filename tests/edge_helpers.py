"""Helpers of the edge-producer tests: run `its edge run` as a process, read a camera's records back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from schemas.serde import TopicSerde

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ITS_ASSETS_DIR") or REPO / ".." / "shared" / "assets").resolve()
CLIP = ASSETS / "video" / "intel_car-detection.mp4"
MODEL = ASSETS / "models" / "yolox_nano_coco_416.onnx"


def edge_env(bootstrap: str, registry: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITS_")}
    env.update(
        ITS_KAFKA_BOOTSTRAP=bootstrap,
        ITS_SCHEMA_REGISTRY_URL=registry,
        ITS_DATA_DIR=str(data_dir),
        ITS_ASSETS_DIR=str(ASSETS),
        ITS_EDGE__METRICS_PORT="0",
        ITS_LOG_FORMAT="json",
        ITS_LOG_LEVEL="INFO",
        **extra,
    )
    return env


def its_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from its.cli import main; main()", *args]


def start_edge(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        its_cmd("edge", "run", *args),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, dict[str, Any] | None, str]:
    """Wait for an edge process; its exit code, JSON summary (last stdout line) and stderr."""
    out, err = proc.communicate(timeout=timeout)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    return proc.returncode, (json.loads(lines[-1]) if lines else None), err


def run_edge(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> tuple[int, dict[str, Any] | None, str]:
    return finish(start_edge(args, env), timeout)


def read_camera(bootstrap: str, registry: str, topic: str, camera_id: str, timeout: float = 60) -> list[Any]:
    """Every record of ``camera_id`` on ``topic`` in offset order (one camera = one partition)."""
    serde = TopicSerde(registry)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    key = camera_id.encode()
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        ends = {}
        for p in meta.partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if hi > lo:
                ends[p] = hi
        consumer.assign([TopicPartition(topic, p, -2) for p in ends])
        out: list[tuple[int, int, Any]] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() == key:
                out.append((msg.partition(), msg.offset(), serde.decode(msg)))
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        assert len(done) == len(ends), f"timed out reading {topic}"
        assert len({p for p, _, _ in out}) <= 1, "one camera's records must stay on one partition"
        return [rec for _, _, rec in sorted(out, key=lambda x: (x[0], x[1]))]
    finally:
        consumer.close()
