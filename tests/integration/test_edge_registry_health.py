"""Camera registry on the compacted its.cameras.v1 through `its camera ...`, heartbeats on its.health.v1,
and the edge process's /metrics and /healthz."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid

import cv2
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.topics import ensure_topics
from its.settings import Settings
from producers.edge import CameraConfig, EdgeRunner
from producers.settings import EdgeSettings
from schemas.records import HealthStatus, ProcessingMode
from schemas.topics import CAMERAS, HEALTH
from tests.edge_helpers import ASSETS, REPO, edge_env, its_cmd, read_camera

pytestmark = pytest.mark.integration

SCENE = """\
camera_id: {cam}
name: Main St & 5th Ave, northbound
location: {{latitude: 40.7411, longitude: -73.9897, address: Main St & 5th Ave}}
mode: edge
source: rtsp://operator:topsecret@10.0.0.12:554/stream1
fps: 10
labels: {{district: midtown}}
scene:
  lines:
    - {{line_id: north-count, points: [[100, 400], [1180, 400]], in_direction: northbound}}
  zones:
    - {{zone_id: crosswalk-n, kind: crosswalk, polygon: [[100, 300], [1180, 300], [1180, 340], [100, 340]]}}
  lanes:
    - lane_id: nb-1
      polygon: [[300, 720], [600, 720], [620, 200], [500, 200]]
      centerline: [[450, 720], [560, 200]]
      speed_limit_kmh: 50
  rules:
    - {{rule: speeding, lane_ids: [nb-1], params: {{tolerance_kmh: 10}}}}
"""


@pytest.fixture(scope="module")
def bootstrap(kafka_broker) -> str:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    return kafka_broker.bootstrap


def _its(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(its_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def _last_raw(bootstrap: str, topic: str, key: bytes) -> list[bytes | None]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        values: list[bytes | None] = []
        for p in parts:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if hi <= lo:
                continue
            consumer.assign([TopicPartition(topic, p, lo)])
            while True:
                msg = consumer.poll(5)
                assert msg is not None, "timed out"
                if not msg.error() and msg.key() == key:
                    values.append(msg.value())
                if msg.offset() + 1 >= hi:
                    break
        return values
    finally:
        consumer.close()


def test_camera_register_list_show_remove(bootstrap, schema_registry, tmp_path) -> None:
    cam = f"cam-reg-{uuid.uuid4().hex[:8]}"
    env = edge_env(bootstrap, schema_registry, tmp_path)
    scene = tmp_path / "scene.yaml"
    scene.write_text(SCENE.format(cam=cam))
    done = _its(env, "camera", "register", str(scene))
    assert done.returncode == 0 and f"registered {cam}" in done.stdout, done.stderr[-2000:]

    listed = json.loads(_its(env, "camera", "list", "--json").stdout)
    assert {"camera_id": cam, "name": "Main St & 5th Ave, northbound", "mode": "edge",
            "latitude": 40.7411, "longitude": -73.9897} in listed  # fmt: skip
    shown = json.loads(_its(env, "camera", "show", cam).stdout)
    assert shown["scene"]["lines"][0]["points"] == [{"x": 100.0, "y": 400.0}, {"x": 1180.0, "y": 400.0}]
    assert shown["scene"]["zones"][0]["kind"] == "CROSSWALK" and shown["labels"] == {"district": "midtown"}
    assert shown["source"] == "rtsp://***@10.0.0.12:554/stream1", "no credentials on Kafka"
    assert shown["scene"]["rules"][0]["params"] == {"tolerance_kmh": 10.0}

    removed = _its(env, "camera", "remove", cam)
    assert removed.returncode == 0, removed.stderr[-2000:]
    assert cam not in {c["camera_id"] for c in json.loads(_its(env, "camera", "list", "--json").stdout)}
    gone = _its(env, "camera", "show", cam)
    assert gone.returncode == 1 and "not registered" in gone.stderr
    values = _last_raw(bootstrap, CAMERAS, cam.encode())
    assert len(values) == 2 and values[0] and values[-1] is None, "register, then a tombstone"
    assert b"topsecret" not in values[0]

    bad = tmp_path / "bad.yaml"
    bad.write_text("camera_id: x\nname: no location\n")
    failed = _its(env, "camera", "register", str(bad))
    assert failed.returncode == 2 and "location" in failed.stderr


def test_heartbeats_metrics_and_healthz(bootstrap, schema_registry, tmp_path) -> None:
    cam = f"cam-hb-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = cv2.imread(str(ASSETS / "images" / "bus.jpg"))
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.jpg"), cv2.flip(image, i % 2))
    settings = Settings(
        kafka_bootstrap=bootstrap,
        schema_registry_url=schema_registry,
        data_dir=tmp_path,
        edge=EdgeSettings(metrics_port=0, health_interval_s=1.0, folder_fps=20.0),
    )
    runner = EdgeRunner(
        settings,
        [CameraConfig(camera_id=cam, source=str(folder), loop=True)],
        duration_s=4.5,
        handle_signals=False,
    )
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(runner.run()))
    thread.start()
    try:
        for _ in range(100):
            if runner.service is not None:
                break
            time.sleep(0.05)
        time.sleep(2.5)
        url = runner.service.url
        health = httpx.get(f"{url}/healthz", timeout=5)
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        thread.join(timeout=60)
    assert health.status_code == 200 and health.json()["cameras"] == {cam: "running"}
    assert health.json()["publisher"]["spooling"] is False
    assert f'its_edge_frames_sampled_total{{camera="{cam}"}}' in metrics
    assert f'its_edge_mode{{camera="{cam}",mode="cloud"}} 1.0' in metrics
    assert "its_edge_spool_bytes" in metrics and "its_edge_queue_depth" in metrics

    beats = read_camera(bootstrap, schema_registry, HEALTH, cam)
    assert len(beats) >= 4  # every second plus the final one
    steady = beats[1:-1]
    assert all(b.status == HealthStatus.ONLINE and b.mode == ProcessingMode.CLOUD for b in beats)
    # 20 fps in, 10 fps sampled; beats are timed by a busy 2-core machine, so the window is loose.
    rates = [(b.fps_in, b.fps_out) for b in steady]
    assert all(12 <= i <= 28 and 6 <= o <= 14 and 0.35 <= o / i <= 0.65 for i, o in rates), rates
    assert all(b.queue_depth >= 0 and b.spool_bytes == 0 and b.producer_id for b in beats)
    assert beats[-1].uptime_s >= 4
    assert result["cameras"][0]["status"] == "stopped"
