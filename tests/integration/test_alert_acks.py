"""Alert acknowledgements as an input of `its process analytics`, on the real broker.

A simulated highway camera opens a SPEEDING and later a WRONG_WAY incident; with escalation after
20 s and 40 s of event time both would escalate twice (the in-process engine shows it). The test
acknowledges the SPEEDING incident with ``its alerts ack`` as soon as its OPEN alert is committed,
SIGKILLs and restarts the processor (the acknowledgement must live in the camera's snapshot), then
sends the rest of the detections: SPEEDING gets one ACKNOWLEDGED revision and never escalates;
WRONG_WAY, not acknowledged, still does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.topics import ensure_topics
from processors.analytics.engine import Engine, Output
from processors.analytics.settings import AnalyticsSettings
from producers.simulator import simulate
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import ALERT_ACKS, ALERTS, CAMERAS, DETECTIONS, SIGNALS
from tests.integration import inference_support as s
from tests.integration.processor_support import ProcessorUnderTest

pytestmark = pytest.mark.integration

ITS = str(Path(sys.executable).with_name("its"))
ESCALATE = [20.0, 40.0]
ACK_BEFORE_S = 25.0  # detections up to here first: SPEEDING opens at ~16 s, would escalate at ~36 s


def _simulated(camera_id: str) -> tuple[r.Camera, list[r.Detections]]:
    sim = simulate("highway", seed=3, noise="default", duration_s=120, cameras=1)
    cam = dataclasses.replace(sim.cameras[0], camera_id=camera_id)
    dets = [
        dataclasses.replace(d, camera_id=camera_id, frame_ref=r.FrameRef("its.frames.v1", 0, d.frame_seq))
        for d in sim.detections
    ]
    return cam, dets


def _alerts(bootstrap: str, serde: TopicSerde, start: dict[int, int], camera_id: str, want) -> list[r.Alert]:
    """Committed alerts of the camera, read until ``want(alerts)`` holds (or a minute passes)."""
    deadline = time.monotonic() + 60
    while True:
        got = s.read_committed(
            bootstrap, serde, ALERTS, start, lambda a: a.camera_id == camera_id, timeout=10, settle=0.5
        )
        if want(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_ack_stops_escalation_and_publishes_acknowledged_revision(
    kafka_broker, schema_registry, kafka_settings, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    ensure_topics({"bootstrap.servers": bootstrap})
    serde = TopicSerde(schema_registry)
    camera_id = f"{s.camera_prefix()}-ack"
    cam, dets = _simulated(camera_id)

    # Without an acknowledgement both incidents escalate: the engine in process, same settings.
    ref = Engine(AnalyticsSettings(alert_escalate_after_s=ESCALATE))
    ref.on_camera(cam)
    out = Output()
    for d in dets:
        out.extend(ref.on_detections(d))
    escalated = {a.incident_id for a in out.alerts if a.status == r.AlertStatus.ESCALATED}
    speeding = next(a for a in out.alerts if a.alert_type == r.EventType.SPEEDING)
    wrong_way = next(a for a in out.alerts if a.alert_type == r.EventType.WRONG_WAY)
    assert {speeding.incident_id, wrong_way.incident_id} <= escalated
    t_ack = dets[0].capture_ts_ms + int(ACK_BEFORE_S * 1000)
    assert speeding.first_ts_ms < t_ack < speeding.first_ts_ms + int(ESCALATE[0] * 1000)

    group = f"analytics-ack-{uuid.uuid4().hex[:8]}"
    for topic in (CAMERAS, SIGNALS, DETECTIONS, ALERT_ACKS):  # topics are shared by the session
        s.start_group_at_end(bootstrap, group, topic)
    start = s.end_offsets(bootstrap, ALERTS)
    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": bootstrap,
        "ITS_SCHEMA_REGISTRY_URL": schema_registry,
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_ANALYTICS__GROUP_ID": group,
        "ITS_ANALYTICS__MAX_BATCH": "200",
        "ITS_ANALYTICS__MAX_WAIT_MS": "50",
        "ITS_ANALYTICS__ALERT_ESCALATE_AFTER_S": json.dumps(ESCALATE),
        "ITS_LOG_FORMAT": "text",
    }
    runner = ProcessorUnderTest(
        ["process", "analytics"], env, f"ack-{uuid.uuid4().hex[:6]}", tmp_path / "processor.log"
    )
    first = [d for d in dets if d.capture_ts_ms < t_ack]
    rest = dets[len(first) :]
    s.produce(bootstrap, [(camera_id, serde.encode(CAMERAS, cam))], topic=CAMERAS)
    s.produce(bootstrap, [(camera_id, serde.encode(DETECTIONS, d)) for d in first], topic=DETECTIONS)
    runner.start()
    try:
        opened = _alerts(bootstrap, serde, start, camera_id, lambda got: any(a.status == "OPEN" for a in got))
        assert [a.alert_id for a in opened] == [speeding.alert_id], runner.log_path.read_text()[-3000:]

        # The operator acknowledges it through the CLI (the console uses the same publish_ack).
        done = subprocess.run(
            [ITS, "alerts", "ack", speeding.alert_id, "--by", "operator-jane", "--note", "unit 12 on site"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        ack = json.loads(done.stdout.strip().splitlines()[-1])
        assert ack["incident_id"] == speeding.incident_id and ack["source"] == "cli"

        def acknowledged(got: list[r.Alert]) -> bool:
            return any(a.status == r.AlertStatus.ACKNOWLEDGED for a in got)

        got = _alerts(bootstrap, serde, start, camera_id, acknowledged)
        assert acknowledged(got), runner.log_path.read_text()[-3000:]
        # The acknowledgement must survive a crash: it is in the snapshot committed with that revision.
        runner.kill()
        runner.start()
        s.produce(bootstrap, [(camera_id, serde.encode(DETECTIONS, d)) for d in rest], topic=DETECTIONS)
        wrong_way_escalations = lambda got: sum(  # noqa: E731
            1 for a in got if a.incident_id == wrong_way.incident_id and a.status == r.AlertStatus.ESCALATED
        )
        got = _alerts(bootstrap, serde, start, camera_id, lambda got: wrong_way_escalations(got) >= 2)
    finally:
        code = runner.stop()
    assert code == 0, runner.log_path.read_text()[-3000:]

    mine = [a for a in got if a.incident_id == speeding.incident_id]
    assert [(a.revision, a.status) for a in mine[:2]] == [
        (0, r.AlertStatus.OPEN),
        (1, r.AlertStatus.ACKNOWLEDGED),
    ], [(a.revision, a.status, a.escalation_level) for a in mine]
    acked = mine[1]
    assert acked.alert_id == f"{speeding.incident_id}:1"
    assert acked.acknowledged_by == "operator-jane" and acked.acknowledged_ts_ms == ack["ts_ms"]
    assert acked.escalation_level == 1
    # Never escalated, although the reference did at 20 s and 40 s; later revisions keep the ack.
    assert all(a.status in (r.AlertStatus.UPDATED, r.AlertStatus.RESOLVED) for a in mine[2:])
    assert all(a.escalation_level == 1 and a.acknowledged_by == "operator-jane" for a in mine[1:])
    # The incident that nobody acknowledged escalates exactly as without acks.
    theirs = [
        (a.revision, a.status, a.escalation_level) for a in got if a.incident_id == wrong_way.incident_id
    ]
    assert theirs == [
        (a.revision, a.status, a.escalation_level)
        for a in out.alerts
        if a.incident_id == wrong_way.incident_id
    ]
    assert all(a.acknowledged_by is None for a in got if a.incident_id == wrong_way.incident_id)
