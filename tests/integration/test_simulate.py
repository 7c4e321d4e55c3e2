"""``its simulate`` and ``run_load`` against the real broker and registry: records come back decodable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.topics import ensure_topics
from its.settings import Settings
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import CAMERAS, DETECTIONS, FRAMES, SIGNALS

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _read_keys(bootstrap: str, topic: str, keys: set[bytes], expect: int, serde: TopicSerde) -> list:
    """Read the whole topic from the start, keeping (decoded) records whose key is in ``keys``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out = []
    idle = 0
    try:
        while len(out) < expect and idle < 20:
            msgs = consumer.consume(1000, 0.5)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                if m.error() is None and m.key() in keys:
                    out.append(serde.decode(m))
    finally:
        consumer.close()
    return out


def test_its_simulate_publishes_what_a_consumer_decodes(kafka_broker, schema_registry, tmp_path) -> None:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    # A uniquely named copy of the city scenario gives camera ids no other test uses.
    name = f"it{uuid.uuid4().hex[:8]}"
    shutil.copy(REPO / "tests" / "scenarios" / "intersection.yaml", tmp_path / f"{name}.yaml")
    text = (tmp_path / f"{name}.yaml").read_text().replace("name: intersection", f"name: {name}")
    (tmp_path / f"{name}.yaml").write_text(text)
    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "ITS_SCHEMA_REGISTRY_URL": schema_registry,
        "ITS_SCENARIOS_DIR": str(tmp_path),
        "ITS_LOG_LEVEL": "WARNING",
    }
    truth = tmp_path / "truth.json"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "its"),
            "simulate",
            "--scenario",
            name,
            "--duration",
            "70",
            "--fps",
            "5",
            "--seed",
            "2",
            "--truth",
            str(truth),
            "--as-fast-as-possible",
            "--render",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    cams = {f"sim-{name}-0000", f"sim-{name}-0001"}
    n_det = 2 * 70 * 5
    assert summary["produced"][DETECTIONS] == n_det and summary["delivery_errors"] == 0
    assert summary["produced"]["its.frames.v1"] == n_det
    serde = TopicSerde(schema_registry)
    keys = {c.encode() for c in cams}
    dets = _read_keys(kafka_broker.bootstrap, DETECTIONS, keys, n_det, serde)
    assert len(dets) == n_det
    assert all(isinstance(d, r.Detections) and d.source == r.DetectionSource.EDGE for d in dets)
    for cam in cams:
        seqs = [d.frame_seq for d in dets if d.camera_id == cam]
        assert seqs == list(range(70 * 5))  # one partition per camera: in order, no gaps, no duplicates
    registered = _read_keys(kafka_broker.bootstrap, CAMERAS, keys, 2, serde)
    assert {c.camera_id for c in registered} == cams and all(c.scene.lanes for c in registered)
    signals = _read_keys(kafka_broker.bootstrap, SIGNALS, keys, 1, serde)
    assert signals and all(isinstance(s, r.SignalPhase) for s in signals)
    frames = _read_keys(kafka_broker.bootstrap, FRAMES, {f"sim-{name}-0000".encode()}, 3, serde)
    img = cv2.imdecode(np.frombuffer(frames[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (frames[0].height, frames[0].width, 3)
    doc = json.loads(truth.read_text())
    assert doc["scenario"] == name and any(v["type"] == "RED_LIGHT" for v in doc["violations"])


def test_run_load_sustains_its_target_at_small_scale(kafka_broker, schema_registry) -> None:
    from producers.simulator.load import run_load

    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    settings = Settings(kafka_bootstrap=kafka_broker.bootstrap, schema_registry_url=schema_registry)
    prefix = f"load{uuid.uuid4().hex[:6]}"
    report = run_load(
        settings,
        cameras=50,
        fps=10.0,
        duration_s=2.0,
        scenario="city",
        templates=2,
        template_s=10.0,
        camera_prefix=prefix,
    )
    assert report.records == 1000 and report.delivered == 1000 and report.delivery_errors == 0
    assert report.records_per_s > 400  # 500/s target; paced, so it cannot be much above
    serde = TopicSerde(schema_registry)
    keys = {f"{prefix}-{i:05d}".encode() for i in (0, 7)}
    got = _read_keys(kafka_broker.bootstrap, DETECTIONS, keys, 40, serde)
    assert len(got) == 40
    assert sorted(d.frame_seq for d in got if d.camera_id == f"{prefix}-00007") == list(range(20))


def test_realtime_simulate_serves_health_and_stops_cleanly_on_sigterm(kafka_broker, schema_registry) -> None:
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "ITS_SCHEMA_REGISTRY_URL": schema_registry,
        "ITS_LOG_LEVEL": "WARNING",
    }
    cmd = [str(Path(sys.executable).parent / "its"), "simulate", "--scenario", "city", "--cameras", "1"]
    cmd += ["--duration", "60", "--metrics-port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 90
        published = False
        while time.monotonic() < deadline and not published:
            time.sleep(0.5)
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                continue
            assert health.status_code == 200
            published = 'its_simulator_records_total{topic="its.detections.v1"}' in metrics
        assert published, "no detections published within 90 s"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped_early"] is True and summary["delivery_errors"] == 0
    assert 0 < summary["produced"][DETECTIONS] < 600  # paced: far fewer than the 60 s worth
    assert time.monotonic() - started < 30
