"""What the console knows, built from Kafka records: cameras, their liveness, latest frames, incidents.

One ``ConsoleState`` per process; the Kafka feed thread writes it, web requests read it (one lock).
An incident is shown as its latest alert revision merged with the acknowledgements seen for it, so
an acknowledged alert reads ACKNOWLEDGED even before (or without) the analytics processor's
ACKNOWLEDGED revision, and again after a restart (the feed re-reads recent acks on start).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import records as r

Listener = Callable[[str, dict[str, Any]], None]
SEVERITY_RANK = {s.value: i for i, s in enumerate(r.Severity)}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class CameraLive:
    """One camera's latest records."""

    camera_id: str
    camera: r.Camera | None = None
    health: r.Health | None = None
    detections: deque[r.Detections] = field(default_factory=lambda: deque(maxlen=20))
    frame: r.Frame | None = None
    last_seen_ms: int | None = None
    # (ts_ms, line_id, direction, speed_kmh or None) of recent line crossings, for live counts.
    crossings: deque[tuple[int, str, str, float | None]] = field(default_factory=lambda: deque(maxlen=20_000))


@dataclass(slots=True)
class Liveness:
    status: str
    age_s: float | None
    fps: float | None


class ConsoleState:
    """Thread-safe store of the live view; listeners hear every change of an incident."""

    def __init__(
        self,
        degraded_after_s: float = 10.0,
        offline_after_s: float = 60.0,
        cameras: str = "",
        track_frames: int = 20,
        counts_window_s: float = 900.0,
    ) -> None:
        self.degraded_after_ms = degraded_after_s * 1000
        self.offline_after_ms = offline_after_s * 1000
        self.counts_window_ms = counts_window_s * 1000
        self._filter = re.compile(cameras) if cameras else None
        self._track_frames = track_frames
        self._lock = threading.RLock()
        self._cameras: dict[str, CameraLive] = {}
        self._incidents: dict[str, r.Alert] = {}  # incident_id -> latest revision
        self._acks: dict[str, r.AlertAck] = {}  # incident_id -> first ack seen
        self._alert_incident: dict[str, str] = {}  # alert_id -> incident_id
        self._listeners: list[Listener] = []

    # --- inputs (the feed thread) ------------------------------------------------------------------

    def wants(self, camera_id: str) -> bool:
        return self._filter is None or bool(self._filter.search(camera_id))

    def _cam(self, camera_id: str) -> CameraLive:
        cam = self._cameras.get(camera_id)
        if cam is None:
            cam = self._cameras[camera_id] = CameraLive(
                camera_id, detections=deque(maxlen=self._track_frames)
            )
        return cam

    def _seen(self, cam: CameraLive, ts_ms: int) -> None:
        cam.last_seen_ms = ts_ms if cam.last_seen_ms is None else max(cam.last_seen_ms, ts_ms)

    def on_record(self, record: Any) -> None:
        """Route one decoded record of any console topic."""
        camera_id = getattr(record, "camera_id", None)
        if camera_id is None or not self.wants(camera_id):
            return
        handler = _HANDLERS.get(type(record))
        if handler is not None:
            handler(self, record)

    def on_camera(self, rec: r.Camera) -> None:
        with self._lock:
            self._cam(rec.camera_id).camera = rec

    def on_health(self, rec: r.Health) -> None:
        with self._lock:
            cam = self._cam(rec.camera_id)
            if cam.health is None or rec.ts_ms >= cam.health.ts_ms:
                cam.health = rec
            self._seen(cam, rec.ts_ms)

    def on_detections(self, rec: r.Detections) -> None:
        with self._lock:
            cam = self._cam(rec.camera_id)
            cam.detections.append(rec)
            self._seen(cam, rec.capture_ts_ms)

    def on_frame(self, rec: r.Frame) -> None:
        with self._lock:
            cam = self._cam(rec.camera_id)
            if cam.frame is None or rec.capture_ts_ms >= cam.frame.capture_ts_ms:
                cam.frame = rec

    def on_event(self, rec: r.Event) -> None:
        if rec.event_type != r.EventType.LINE_CROSSING or rec.line_id is None:
            return
        with self._lock:
            cam = self._cam(rec.camera_id)
            cam.crossings.append(
                (rec.ts_ms, rec.line_id, rec.direction or "", rec.measurements.get("speed_kmh"))
            )

    def on_alert(self, rec: r.Alert) -> None:
        with self._lock:
            self._alert_incident[rec.alert_id] = rec.incident_id  # any revision's id names the incident
            old = self._incidents.get(rec.incident_id)
            if old is not None and (old.revision, old.last_ts_ms) > (rec.revision, rec.last_ts_ms):
                return  # an older revision read after a newer one (warm-up): keep the newer
            self._incidents[rec.incident_id] = rec
            view = self._alert_view(rec)
        self._notify("alert", view)

    def on_ack(self, rec: r.AlertAck) -> None:
        with self._lock:
            if rec.incident_id in self._acks:
                return
            self._acks[rec.incident_id] = rec
            alert = self._incidents.get(rec.incident_id)
            view = self._alert_view(alert) if alert is not None else None
        if view is not None:
            self._notify("alert", view)

    # --- listeners (server-sent events) -----------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)
        return lambda: self._unsubscribe(listener)

    def _unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, kind: str, doc: dict[str, Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(kind, doc)

    # --- views (web requests) ---------------------------------------------------------------------

    def liveness(self, cam: CameraLive, at_ms: int) -> Liveness:
        """ONLINE / DEGRADED / OFFLINE by the age of the newest heartbeat or frame, and the frame rate."""
        if cam.last_seen_ms is None:
            return Liveness(r.HealthStatus.OFFLINE.value, None, None)
        age = at_ms - cam.last_seen_ms
        reported = cam.health.status.value if cam.health is not None else r.HealthStatus.ONLINE.value
        if age > self.offline_after_ms:
            status = r.HealthStatus.OFFLINE.value
        elif age > self.degraded_after_ms and reported == r.HealthStatus.ONLINE.value:
            status = r.HealthStatus.DEGRADED.value
        else:
            status = reported
        fps: float | None = None
        if cam.health is not None and at_ms - cam.health.ts_ms <= self.offline_after_ms:
            fps = cam.health.fps_out or cam.health.fps_in or None
        if fps is None and len(cam.detections) >= 2:
            span = cam.detections[-1].capture_ts_ms - cam.detections[0].capture_ts_ms
            fps = (len(cam.detections) - 1) * 1000.0 / span if span > 0 else None
        return Liveness(status, max(age, 0) / 1000.0, None if fps is None else round(fps, 1))

    def camera_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._cameras)

    def camera(self, camera_id: str) -> CameraLive | None:
        with self._lock:
            return self._cameras.get(camera_id)

    def snapshot(self, camera_id: str) -> tuple[r.Camera | None, r.Frame | None, list[r.Detections]]:
        """A consistent copy of what a tile is drawn from."""
        with self._lock:
            cam = self._cameras.get(camera_id)
            if cam is None:
                return None, None, []
            return cam.camera, cam.frame, list(cam.detections)

    def _open_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self._incidents.values():
            if self._status(a) != r.AlertStatus.RESOLVED.value:
                counts[a.camera_id] = counts.get(a.camera_id, 0) + 1
        return counts

    def camera_summary(self, cam: CameraLive, at_ms: int, open_counts: dict[str, int]) -> dict[str, Any]:
        live = self.liveness(cam, at_ms)
        det = cam.detections[-1] if cam.detections else None
        loc = cam.camera.location if cam.camera is not None else None
        return {
            "camera_id": cam.camera_id,
            "name": cam.camera.name if cam.camera is not None else cam.camera_id,
            "registered": cam.camera is not None,
            "latitude": loc.latitude if loc else None,
            "longitude": loc.longitude if loc else None,
            "address": loc.address if loc else None,
            "status": live.status,
            "age_s": None if live.age_s is None else round(live.age_s, 1),
            "fps": live.fps,
            "model": f"{det.model_name} {det.model_version}" if det is not None else None,
            "source": det.source.value if det is not None else None,
            "objects": len(det) if det is not None else 0,
            "frame_seq": det.frame_seq if det is not None else None,
            "has_keyframe": cam.frame is not None,
            "open_incidents": open_counts.get(cam.camera_id, 0),
        }

    def cameras(self, at_ms: int | None = None) -> list[dict[str, Any]]:
        at = now_ms() if at_ms is None else at_ms
        with self._lock:
            counts = self._open_counts()
            return [self.camera_summary(self._cameras[c], at, counts) for c in sorted(self._cameras)]

    def camera_detail(self, camera_id: str, at_ms: int | None = None) -> dict[str, Any] | None:
        """Summary plus live counts and mean speeds per counting line and direction, and open incidents."""
        at = now_ms() if at_ms is None else at_ms
        with self._lock:
            cam = self._cameras.get(camera_id)
            if cam is None:
                return None
            doc = self.camera_summary(cam, at, self._open_counts())
            since = (cam.last_seen_ms or at) - self.counts_window_ms
            counts: dict[tuple[str, str], list[Any]] = {}
            if cam.camera is not None:  # every configured line and direction, also those still at zero
                for line in cam.camera.scene.lines:
                    for d in (line.in_direction, line.out_direction):
                        counts[(line.line_id, d)] = [0, 0.0, 0]
            for ts, line_id, direction, speed in cam.crossings:
                if ts < since:
                    continue
                acc = counts.setdefault((line_id, direction), [0, 0.0, 0])
                acc[0] += 1
                if speed is not None:
                    acc[1] += speed
                    acc[2] += 1
            doc["lines"] = [
                {
                    "line_id": line_id,
                    "direction": direction,
                    "count": n,
                    "mean_speed_kmh": round(s / k, 1) if k else None,
                }
                for (line_id, direction), (n, s, k) in sorted(counts.items())
            ]
            doc["counts_window_s"] = self.counts_window_ms / 1000
            doc["incidents"] = [
                self._alert_view(a)
                for a in sorted(self._incidents.values(), key=lambda a: -a.last_ts_ms)
                if a.camera_id == camera_id and self._status(a) != r.AlertStatus.RESOLVED.value
            ]
            if cam.camera is not None:
                doc["speed_limits_kmh"] = {ln.lane_id: ln.speed_limit_kmh for ln in cam.camera.scene.lanes}
            return doc

    def _status(self, alert: r.Alert) -> str:
        if alert.status == r.AlertStatus.RESOLVED or alert.incident_id not in self._acks:
            return alert.status.value
        return r.AlertStatus.ACKNOWLEDGED.value

    def _alert_view(self, alert: r.Alert) -> dict[str, Any]:
        ack = self._acks.get(alert.incident_id)
        ev = alert.evidence
        return {
            "alert_id": alert.alert_id,
            "incident_id": alert.incident_id,
            "camera_id": alert.camera_id,
            "type": alert.alert_type.value,
            "severity": alert.severity.value,
            "status": self._status(alert),
            "title": alert.title,
            "description": alert.description,
            "suggested_action": alert.suggested_action,
            "revision": alert.revision,
            "count": alert.count,
            "escalation_level": alert.escalation_level,
            "first_ts_ms": alert.first_ts_ms,
            "last_ts_ms": alert.last_ts_ms,
            "acknowledged_by": alert.acknowledged_by or (ack.acknowledged_by if ack else None),
            "acknowledged_ts_ms": alert.acknowledged_ts_ms or (ack.ts_ms if ack else None),
            "has_evidence": ev is not None,
            "evidence_frame_seq": ev.frame_seq if ev is not None else None,
        }

    def alerts(
        self, severity: str | None = None, alert_type: str | None = None, camera_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Incidents newest first; ``severity`` is a minimum (HIGH shows HIGH and CRITICAL)."""
        floor = SEVERITY_RANK.get(severity.upper(), 0) if severity else 0
        with self._lock:
            rows = [
                self._alert_view(a)
                for a in self._incidents.values()
                if SEVERITY_RANK[a.severity.value] >= floor
                and (not alert_type or a.alert_type.value == alert_type.upper())
                and (not camera_id or a.camera_id == camera_id)
            ]
        rows.sort(key=lambda a: (-a["last_ts_ms"], a["incident_id"]))
        return rows

    def alert(self, alert_id: str) -> r.Alert | None:
        """The incident's latest revision, by the id of any of its revisions (or the incident id)."""
        with self._lock:
            incident = self._alert_incident.get(alert_id, alert_id)
            return self._incidents.get(incident)

    def alert_view(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            alert = self.alert(alert_id)
            return None if alert is None else self._alert_view(alert)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"cameras": len(self._cameras), "incidents": len(self._incidents), "acks": len(self._acks)}


_HANDLERS: dict[type, Callable[[ConsoleState, Any], None]] = {
    r.Camera: ConsoleState.on_camera,
    r.Health: ConsoleState.on_health,
    r.Detections: ConsoleState.on_detections,
    r.Frame: ConsoleState.on_frame,
    r.Event: ConsoleState.on_event,
    r.Alert: ConsoleState.on_alert,
    r.AlertAck: ConsoleState.on_ack,
}
