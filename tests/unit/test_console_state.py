"""The console's state and web API without Kafka: incident merging, liveness, counts, tiles, refusals."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from its.console.app import Console, create_app
from its.console.state import ConsoleState
from its.settings import Settings
from producers.simulator.scene import build, to_camera_record
from schemas import records as r

pytestmark = pytest.mark.unit
NOW = 1_800_000_000_000


def _camera(camera_id: str = "cam-1") -> r.Camera:
    scene = build("signalised_junction", 50.0)
    return to_camera_record(scene, camera_id, name="junction", registered_ts_ms=NOW, fps=10.0, source="sim")


def _alert(
    rev: int,
    status: r.AlertStatus = r.AlertStatus.OPEN,
    camera: str = "cam-1",
    kind: r.EventType = r.EventType.SPEEDING,
    sev: r.Severity = r.Severity.HIGH,
) -> r.Alert:
    incident = f"{camera}:{kind.value}:{NOW}"
    return r.Alert(f"{incident}:{rev}", incident, camera, kind, sev, NOW, NOW + rev * 1000, "t", revision=rev,
                   status=status)  # fmt: skip


def _ack(alert: r.Alert) -> r.AlertAck:
    return r.AlertAck("ack-1", alert.alert_id, alert.incident_id, alert.camera_id, "ops", NOW + 5000)


def test_incident_is_latest_revision_merged_with_acks() -> None:
    st = ConsoleState()
    heard: list[dict] = []
    st.subscribe(lambda kind, doc: heard.append(doc))
    st.on_record(_alert(1, r.AlertStatus.UPDATED))
    st.on_record(_alert(0))  # an older revision read later (warm-up order) does not win
    assert [a["status"] for a in st.alerts()] == ["UPDATED"]
    st.on_record(_ack(_alert(0)))  # an ack of any revision acknowledges the incident
    view = st.alert_view("cam-1:SPEEDING:1800000000000:0")
    assert view is not None and view["status"] == "ACKNOWLEDGED" and view["acknowledged_by"] == "ops"
    st.on_record(_alert(2, r.AlertStatus.ESCALATED))  # still acknowledged on a later revision
    assert st.alerts()[0]["status"] == "ACKNOWLEDGED" and st.alerts()[0]["revision"] == 2
    st.on_record(_alert(3, r.AlertStatus.RESOLVED))  # resolved wins over acknowledged
    assert st.alerts()[0]["status"] == "RESOLVED"
    assert [d["status"] for d in heard] == ["UPDATED", "ACKNOWLEDGED", "ACKNOWLEDGED", "RESOLVED"]


def test_filters_and_camera_selection() -> None:
    st = ConsoleState(cameras="^cam-")
    st.on_record(_alert(0, sev=r.Severity.LOW, kind=r.EventType.STOP_SIGN))
    st.on_record(_alert(0, camera="cam-2", sev=r.Severity.CRITICAL))
    st.on_record(_alert(0, camera="other-9"))  # outside the console's camera expression
    assert len(st.alerts()) == 2
    assert [a["camera_id"] for a in st.alerts(severity="HIGH")] == ["cam-2"]
    assert [a["type"] for a in st.alerts(alert_type="stop_sign")] == ["STOP_SIGN"]
    assert [a["camera_id"] for a in st.alerts(camera_id="cam-1")] == ["cam-1"]


def test_liveness_by_heartbeat_age_and_fps() -> None:
    st = ConsoleState(degraded_after_s=10, offline_after_s=60)
    st.on_record(_camera())
    assert st.cameras(NOW)[0]["status"] == "OFFLINE"  # registered, never seen
    for i in range(5):
        st.on_record(r.Detections("cam-1", i, NOW + i * 200, 1280, 720, "yolox", "v3", [], [], []))
    at = NOW + 800
    assert (st.cameras(at)[0]["status"], st.cameras(at)[0]["fps"]) == ("ONLINE", 5.0)
    assert st.cameras(at + 15_000)[0]["status"] == "DEGRADED"
    assert st.cameras(at + 61_000)[0]["status"] == "OFFLINE"
    st.on_record(r.Health("cam-1", at, r.ProcessingMode.EDGE, r.HealthStatus.DEGRADED, fps_out=7.5))
    row = st.cameras(at + 1000)[0]
    assert (row["status"], row["fps"], row["model"]) == ("DEGRADED", 7.5, "yolox v3")  # as the camera reports


def test_counts_per_line_and_direction() -> None:
    st = ConsoleState()
    cam = _camera()
    st.on_record(cam)
    line = cam.scene.lines[0]
    for k, speed in enumerate((40.0, 50.0, None)):
        m = {} if speed is None else {"speed_kmh": speed}
        st.on_record(r.Event(f"e{k}", "cam-1", r.EventType.LINE_CROSSING, r.Severity.INFO, NOW + k,
                             line_id=line.line_id, direction=line.in_direction, measurements=m))  # fmt: skip
    doc = st.camera_detail("cam-1", NOW)
    assert doc is not None
    rows = {(x["line_id"], x["direction"]): (x["count"], x["mean_speed_kmh"]) for x in doc["lines"]}
    assert rows[(line.line_id, line.in_direction)] == (3, 45.0)
    assert rows[(line.line_id, line.out_direction)] == (0, None)  # configured lines show at zero
    assert len(rows) == 2 * len(cam.scene.lines)


def test_api_refuses_acks_without_the_token_and_draws_tiles() -> None:
    alert = _alert(0)
    for token, header in ((None, "Bearer anything"), ("s3cret", None), ("s3cret", "Bearer wrong"),
                          ("s3cret", "s3cret")):  # fmt: skip
        console = Console(Settings(console={"operator_token": token}), feed=False)
        console.state.on_record(alert)
        client = TestClient(create_app(console))
        headers = {"Authorization": header} if header else {}
        res = client.post(f"/api/alerts/{alert.alert_id}/ack", headers=headers)
        assert res.status_code == 403, (token, header)
        assert client.get("/api/alerts").json()[0]["status"] == "OPEN"
        assert client.get("/api/config").json() == {"read_only": token is None}
    # A tile from detections that carry edge track ids (no engine needed) over the scene.
    console.state.on_record(_camera())
    det = r.Detections("cam-1", 7, NOW, 1280, 720, "m", "1", [100.0, 100.0, 200.0, 180.0], [2], [0.9],
                       track_ids=[42])  # fmt: skip
    console.state.on_record(det)
    res = client.get("/api/cameras/cam-1/tile.jpg?w=320")
    assert res.status_code == 200 and res.content[:2] == b"\xff\xd8"
    assert client.get("/api/cameras/nope/tile.jpg").status_code == 404
    assert client.get("/healthz").json()["status"] == "ok"
    assert "its_console_acks_total" in client.get("/metrics").text
