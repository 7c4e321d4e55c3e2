"""Alert acknowledgements: an alert id names its incident and camera; an ack's id follows its content."""

from __future__ import annotations

import pytest

from processors.analytics.acks import AckError, make_ack, parse_alert_id
from processors.analytics.alerts import AlertManager, AlertPolicy
from schemas import records as r

pytestmark = pytest.mark.unit


def test_alert_id_names_incident_and_camera():
    incident, camera = parse_alert_id("cam:with:colons:SPEEDING:1767254415800:3")
    assert (incident, camera) == ("cam:with:colons:SPEEDING:1767254415800", "cam:with:colons")
    ack = make_ack("cam-1:WRONG_WAY:5:0", "jane", "note", ts_ms=42)
    assert (ack.incident_id, ack.camera_id, ack.ts_ms, ack.note) == ("cam-1:WRONG_WAY:5", "cam-1", 42, "note")
    assert ack.ack_id == make_ack("cam-1:WRONG_WAY:5:0", "jane", ts_ms=42).ack_id  # same content, same id
    assert ack.ack_id != make_ack("cam-1:WRONG_WAY:5:0", "joe", ts_ms=42).ack_id
    for bad in ("nope", "cam-1:speeding:5:0", "cam-1:SPEEDING:x:0", "cam-1:SPEEDING:5:"):
        with pytest.raises(AckError):
            parse_alert_id(bad)
    with pytest.raises(AckError):
        make_ack("cam-1:WRONG_WAY:5:0", " ")


def _event(ts: int, n: int) -> r.Event:
    return r.Event(f"cam-1:ev{n}", "cam-1", r.EventType.WRONG_WAY, r.Severity.HIGH, ts)


def test_acknowledged_incident_stops_escalating_and_keeps_the_ack_across_a_snapshot():
    policy = AlertPolicy(escalate_after_s=(20.0, 40.0))
    mgr = AlertManager("cam-1", None, policy)
    [opened] = mgr.on_event(_event(1_000, 0))
    ack = make_ack(opened, "jane", ts_ms=99)
    [acked] = mgr.on_ack(ack)
    assert (acked.status, acked.revision, acked.acknowledged_by, acked.acknowledged_ts_ms) == (
        r.AlertStatus.ACKNOWLEDGED, 1, "jane", 99,
    )  # fmt: skip
    assert mgr.on_ack(ack) == []  # twice: nothing new
    assert mgr.on_ack(make_ack("cam-1:SPEEDING:1:0", "jane")) == []  # not an open incident
    restored = AlertManager("cam-1", None, policy)
    restored.load_state(mgr.to_state())
    assert restored.on_time(60_000) == []  # past both escalation times: silent
    [resolved] = restored.on_time(1_000 + 601_000)
    assert resolved.status == r.AlertStatus.RESOLVED and resolved.acknowledged_by == "jane"
    # Without the ack the same incident escalates twice.
    other = AlertManager("cam-1", None, policy)
    other.on_event(_event(1_000, 0))
    assert [a.status for a in other.on_time(60_000)] == [r.AlertStatus.ESCALATED]
    # Snapshots from before acknowledgements existed (13 fields) still load.
    old = [row[:13] for row in other.to_state()]
    other.load_state(old)
    assert all(i.acknowledged_by is None for i in other.open.values())
