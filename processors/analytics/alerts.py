"""Alerts for integrators: one open incident per camera and event type, throttled, escalated, resolved.

Repeats of an event type on a camera while its incident is open are correlated into that incident
(``count``, ``event_ids``) instead of raising new alerts. An incident publishes at most one alert
revision per ``throttle_s`` (seed: max 1 per minute per incident type); changes held back by the
throttle go out with the next revision. Unacknowledged incidents escalate after the seed's 5 and 15
minutes (level 2 supervisor, level 3 management); LOW severity incidents do not escalate (the seed
batches them). An incident with no new event for ``resolve_after_s`` is resolved. All times are event
times (capture timestamps), so a replay produces the same alerts with the same ids.

An operator's acknowledgement (``AlertAck`` on its.alert-acks.v1, ``on_ack``) stops the incident's
escalation and publishes an ACKNOWLEDGED revision; later revisions (updates, resolution) carry who
acknowledged it and when. Acks for incidents that are no longer open change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.analytics.rules import SUGGESTED_ACTION
from processors.analytics.state import evidence_load, evidence_state
from schemas.records import Alert, AlertAck, AlertStatus, Event, EventType, Evidence, Location, Severity

TITLES: dict[EventType, str] = {
    EventType.RED_LIGHT: "Red-light running",
    EventType.STOP_SIGN: "Stop-sign violation",
    EventType.SPEEDING: "Speeding",
    EventType.WRONG_WAY: "Wrong-way driver",
    EventType.PEDESTRIAN_IN_ROADWAY: "Pedestrian in roadway",
    EventType.LANE_BLOCKAGE: "Lane blocked by a stopped vehicle",
    EventType.CONGESTION: "Congestion",
}


@dataclass(slots=True)
class AlertPolicy:
    throttle_s: float = 60.0
    resolve_after_s: float = 600.0
    escalate_after_s: tuple[float, ...] = (300.0, 900.0)  # level 2, level 3
    max_event_ids: int = 50


@dataclass(slots=True)
class Incident:
    incident_id: str
    alert_type: EventType
    severity: Severity
    first_ts: int
    last_ts: int
    count: int
    revision: int
    last_emit_ts: int
    escalation_level: int
    event_ids: list[str] = field(default_factory=list)
    evidence: Evidence | None = None
    dirty: bool = False
    last_measurements: dict[str, float] = field(default_factory=dict)
    acknowledged_by: str | None = None
    acknowledged_ts: int | None = None


class AlertManager:
    """Incidents of one camera."""

    def __init__(self, camera_id: str, location: Location | None, policy: AlertPolicy) -> None:
        self.camera_id = camera_id
        self.location = location
        self.policy = policy
        self.open: dict[EventType, Incident] = {}

    def on_event(self, ev: Event) -> list[Alert]:
        if ev.event_type in (EventType.LINE_CROSSING, EventType.OTHER):
            return []
        out: list[Alert] = []
        inc = self.open.get(ev.event_type)
        if inc is not None and ev.ts_ms - inc.last_ts > self.policy.resolve_after_s * 1000:
            out.extend(self._resolve(inc, inc.last_ts + int(self.policy.resolve_after_s * 1000)))
            inc = None
        if inc is None:
            inc = Incident(
                incident_id=f"{self.camera_id}:{ev.event_type.value}:{ev.ts_ms}",
                alert_type=ev.event_type,
                severity=ev.severity,
                first_ts=ev.ts_ms,
                last_ts=ev.ts_ms,
                count=1,
                revision=0,
                last_emit_ts=ev.ts_ms,
                escalation_level=1,
                event_ids=[ev.event_id],
                evidence=ev.evidence,
                last_measurements=dict(ev.measurements),
            )
            self.open[ev.event_type] = inc
            out.append(self._alert(inc, AlertStatus.OPEN))
            return out
        inc.count += 1
        inc.last_ts = max(inc.last_ts, ev.ts_ms)
        inc.event_ids = ([*inc.event_ids, ev.event_id])[-self.policy.max_event_ids :]
        inc.evidence = ev.evidence or inc.evidence
        inc.last_measurements = dict(ev.measurements)
        if _rank(ev.severity) > _rank(inc.severity):
            inc.severity = ev.severity
        inc.dirty = True
        out.extend(self.on_time(ev.ts_ms))
        return out

    def on_time(self, now_ms: int) -> list[Alert]:
        """Throttled updates, escalations and resolutions due at event time ``now_ms``."""
        out: list[Alert] = []
        p = self.policy
        for et in sorted(self.open):
            inc = self.open[et]
            if now_ms - inc.last_ts > p.resolve_after_s * 1000:
                out.extend(self._resolve(inc, now_ms))
                continue
            # Escalation goes to other recipients (supervisor, management), so the throttle does not hold it.
            level = 1
            # Acknowledged: someone owns it, so nobody further up is called (the level reached stays).
            if inc.acknowledged_by is not None:
                level = inc.escalation_level
            elif inc.severity != Severity.LOW:
                level += sum(1 for t in p.escalate_after_s if now_ms - inc.first_ts >= t * 1000)
            if level > inc.escalation_level:
                inc.escalation_level = level
                inc.revision += 1
                inc.last_emit_ts = now_ms
                inc.dirty = False
                out.append(self._alert(inc, AlertStatus.ESCALATED))
            elif inc.dirty and now_ms - inc.last_emit_ts >= p.throttle_s * 1000:
                inc.revision += 1
                inc.last_emit_ts = now_ms
                inc.dirty = False
                out.append(self._alert(inc, AlertStatus.UPDATED))
        return out

    def on_ack(self, ack: AlertAck) -> list[Alert]:
        """An operator acknowledged the incident: no more escalation; one ACKNOWLEDGED revision.

        Matched by incident id (an ack of any revision acknowledges the incident). An ack for an incident
        that is resolved, unknown or already acknowledged changes nothing. The throttle clock is left
        alone: the acknowledgement is not a notification, and it arrives on wall-clock time while the
        incident runs on event time.
        """
        inc = next((i for i in self.open.values() if i.incident_id == ack.incident_id), None)
        if inc is None or inc.acknowledged_by is not None:
            return []
        inc.acknowledged_by = ack.acknowledged_by
        inc.acknowledged_ts = ack.ts_ms
        inc.revision += 1
        inc.dirty = False  # this revision carries the latest count and evidence
        return [self._alert(inc, AlertStatus.ACKNOWLEDGED)]

    def _resolve(self, inc: Incident, now_ms: int) -> list[Alert]:
        del self.open[inc.alert_type]
        inc.revision += 1
        inc.last_emit_ts = now_ms
        return [self._alert(inc, AlertStatus.RESOLVED)]

    def _alert(self, inc: Incident, status: AlertStatus) -> Alert:
        m = inc.last_measurements
        detail = ", ".join(f"{k} {v:g}" for k, v in sorted(m.items()))
        return Alert(
            alert_id=f"{inc.incident_id}:{inc.revision}",
            incident_id=inc.incident_id,
            camera_id=self.camera_id,
            alert_type=inc.alert_type,
            severity=inc.severity,
            first_ts_ms=inc.first_ts,
            last_ts_ms=inc.last_ts,
            title=f"{TITLES.get(inc.alert_type, inc.alert_type.value)} at camera {self.camera_id}",
            revision=inc.revision,
            status=status,
            count=inc.count,
            escalation_level=inc.escalation_level,
            description=f"{inc.count} event(s) since {inc.first_ts}"
            + (f"; latest: {detail}" if detail else ""),
            suggested_action=SUGGESTED_ACTION.get(inc.alert_type, "Review the evidence frame."),
            event_ids=list(inc.event_ids),
            evidence=inc.evidence,
            location=self.location,
            acknowledged_by=inc.acknowledged_by,
            acknowledged_ts_ms=inc.acknowledged_ts,
        )

    # --- snapshot -----------------------------------------------------------------------------------

    def to_state(self) -> list:
        return [
            [
                i.incident_id,
                i.alert_type.value,
                i.severity.value,
                i.first_ts,
                i.last_ts,
                i.count,
                i.revision,
                i.last_emit_ts,
                i.escalation_level,
                i.event_ids,
                _ev_state(i.evidence),
                i.dirty,
                i.last_measurements,
                i.acknowledged_by,
                i.acknowledged_ts,
            ]
            for i in self.open.values()
        ]

    def load_state(self, s: list) -> None:
        self.open = {}
        for row in s:
            inc = Incident(
                row[0],
                EventType(row[1]),
                Severity(row[2]),
                row[3],
                row[4],
                row[5],
                row[6],
                row[7],
                row[8],
                list(row[9]),
                _ev_load(row[10]),
                row[11],
                dict(row[12]),
                # Snapshots written before acknowledgements existed have 13 fields.
                row[13] if len(row) > 13 else None,
                row[14] if len(row) > 14 else None,
            )
            self.open[inc.alert_type] = inc


def _rank(s: Severity) -> int:
    return list(Severity).index(s)


_ev_state = evidence_state
_ev_load = evidence_load
