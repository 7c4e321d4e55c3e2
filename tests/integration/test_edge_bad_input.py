"""Bad input in one multi-camera process: a missing file, an unreachable RTSP URL (with credentials),
a truncated mp4 and a corrupt frame each give a clear error or a counted skip, while a healthy camera
in the same process keeps publishing. Also: SIGTERM stops cleanly (flush + sequence persisted)."""

from __future__ import annotations

import signal
import socket
import time
import uuid

import cv2
import pytest
import yaml

from infra.topics import ensure_topics
from schemas.records import HealthStatus
from schemas.topics import FRAMES, HEALTH
from tests.edge_helpers import ASSETS, CLIP, edge_env, finish, read_camera, run_edge, start_edge

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bootstrap(kafka_broker) -> str:
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    return kafka_broker.bootstrap


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: connections are refused


def test_bad_sources_are_reported_while_other_cameras_keep_running(
    bootstrap, schema_registry, tmp_path
) -> None:
    run = uuid.uuid4().hex[:8]
    truncated = tmp_path / "truncated.mp4"
    data = CLIP.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # moov first, then half the media data
    folder = tmp_path / "frames"
    folder.mkdir()
    image = cv2.imread(str(ASSETS / "images" / "zidane.jpg"))
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)
    (folder / "003.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 64)  # corrupt frame
    rtsp = f"rtsp://admin:hunter2@127.0.0.1:{_closed_port()}/x"
    cams = {
        "good": {"source": str(CLIP), "realtime": True, "max_frames": 40},
        "missing": {"source": str(tmp_path / "missing.mp4")},
        "rtsp": {"source": rtsp},
        "trunc": {"source": str(truncated), "realtime": False},
        "corrupt": {"source": str(folder), "realtime": False},
    }
    config = tmp_path / "cameras.yaml"
    config.write_text(
        yaml.safe_dump(
            {"cameras": [{"camera_id": f"{k}-{run}", "mode": "cloud", **v} for k, v in cams.items()]}
        )
    )
    env = edge_env(
        bootstrap,
        schema_registry,
        tmp_path,
        ITS_EDGE__RECONNECT_INITIAL_S="0.2",
        ITS_EDGE__RECONNECT_MAX_S="1",
        ITS_EDGE__HEALTH_INTERVAL_S="1",
        ITS_EDGE__OPEN_TIMEOUT_S="2",
    )
    code, summary, err = run_edge(["--config", str(config), "--duration", "8"], env, timeout=90)
    out = {c["camera_id"].rsplit("-", 1)[0]: c for c in summary["cameras"]}

    assert code == 1  # a camera failed; the process still ran the others to the end
    assert out["missing"]["status"] == "failed" and "source not found" in out["missing"]["error"]
    assert f"error: camera missing-{run}: source not found" in err

    good = out["good"]
    assert good["status"] == "finished" and good["published"] == 40
    assert [f.frame_seq for f in read_camera(bootstrap, schema_registry, FRAMES, f"good-{run}")] == list(
        range(40)
    )

    r = out["rtsp"]
    assert r["status"] == "stopped" and r["published"] == 0 and r["reconnects"] >= 3
    assert any("cannot open rtsp://***@127.0.0.1" in e for e in r["source_errors"])
    beats = read_camera(bootstrap, schema_registry, HEALTH, f"rtsp-{run}")
    assert beats and all(b.status == HealthStatus.OFFLINE for b in beats) and beats[-1].reconnects >= 3
    assert "hunter2" not in err and "hunter2" not in str(summary)
    assert all("hunter2" not in (b.last_error or "") for b in beats)

    t = out["trunc"]
    assert t["status"] == "finished" and t["decode_errors"] == 1 and 50 < t["frames_in"] < 377
    assert any("truncated or corrupt" in e for e in t["source_errors"])
    assert len(read_camera(bootstrap, schema_registry, FRAMES, f"trunc-{run}")) == t["published"] > 40

    c = out["corrupt"]
    assert c["status"] == "finished" and c["decode_errors"] == 1 and c["published"] == 5
    assert any("undecodable image 003.jpg" in e for e in c["source_errors"])
    beats = read_camera(bootstrap, schema_registry, HEALTH, f"corrupt-{run}")
    assert beats[-1].decode_errors == 1


def test_sigterm_flushes_and_persists_the_sequence(bootstrap, schema_registry, tmp_path) -> None:
    cam = f"cam-term-{uuid.uuid4().hex[:8]}"
    env = edge_env(bootstrap, schema_registry, tmp_path)
    proc = start_edge(["--camera-id", cam, "--source", str(CLIP), "--loop", "--mode", "cloud"], env)
    seq_file = tmp_path / "edge" / "seq" / f"{cam}.seq"
    deadline = time.monotonic() + 60
    while not seq_file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # the first frame was sampled: the process is up and handling signals
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    code, summary, err = finish(proc, timeout=60)
    assert code == 0, err[-3000:]
    s = summary["cameras"][0]
    assert s["status"] == "stopped" and s["published"] > 10
    frames = read_camera(bootstrap, schema_registry, FRAMES, cam)
    assert [f.frame_seq for f in frames] == list(range(s["published"]))
    assert int(seq_file.read_text()) == s["last_seq"] + 1
