"""Typed Python records, one per Avro contract in ``schemas/avro`` (checked field by field in a unit test).

Records are plain slotted dataclasses; ``schemas.codec`` converts them to and from the dicts
fastavro reads and writes. Times are integer milliseconds since the epoch, UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

# --- enums ---------------------------------------------------------------------------------------


class ProcessingMode(StrEnum):
    CLOUD = "CLOUD"
    EDGE = "EDGE"
    HYBRID = "HYBRID"
    AUTO = "AUTO"


class ZoneKind(StrEnum):
    ROADWAY = "ROADWAY"
    CROSSWALK = "CROSSWALK"
    INTERSECTION_BOX = "INTERSECTION_BOX"
    NO_STOPPING = "NO_STOPPING"
    STOP_ZONE = "STOP_ZONE"
    OTHER = "OTHER"


class DetectionSource(StrEnum):
    EDGE = "EDGE"
    CLOUD = "CLOUD"


class Phase(StrEnum):
    RED = "RED"
    AMBER = "AMBER"
    GREEN = "GREEN"
    FLASHING_RED = "FLASHING_RED"
    FLASHING_AMBER = "FLASHING_AMBER"
    OFF = "OFF"
    UNKNOWN = "UNKNOWN"


class EventType(StrEnum):
    LINE_CROSSING = "LINE_CROSSING"
    RED_LIGHT = "RED_LIGHT"
    STOP_SIGN = "STOP_SIGN"
    SPEEDING = "SPEEDING"
    WRONG_WAY = "WRONG_WAY"
    PEDESTRIAN_IN_ROADWAY = "PEDESTRIAN_IN_ROADWAY"
    LANE_BLOCKAGE = "LANE_BLOCKAGE"
    CONGESTION = "CONGESTION"
    OTHER = "OTHER"


class Severity(StrEnum):
    INFO = "INFO"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


class AlertStatus(StrEnum):
    OPEN = "OPEN"
    UPDATED = "UPDATED"
    ESCALATED = "ESCALATED"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"


class LevelOfService(StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"


class HealthStatus(StrEnum):
    ONLINE = "ONLINE"
    DEGRADED = "DEGRADED"
    OFFLINE = "OFFLINE"


# --- nested records ------------------------------------------------------------------------------


@dataclass(slots=True)
class Point:
    x: float
    y: float


@dataclass(slots=True)
class Location:
    latitude: float
    longitude: float
    address: str | None = None
    intersection_id: str | None = None


@dataclass(slots=True)
class CountingLine:
    line_id: str
    points: list[Point]
    in_direction: str = "in"
    out_direction: str = "out"
    lane_id: str | None = None


@dataclass(slots=True)
class Zone:
    zone_id: str
    kind: ZoneKind
    polygon: list[Point]


@dataclass(slots=True)
class Lane:
    lane_id: str
    polygon: list[Point]
    centerline: list[Point]
    speed_limit_kmh: float
    approach: str | None = None


@dataclass(slots=True)
class StopLine:
    stop_line_id: str
    points: list[Point]
    signal_id: str | None = None
    lane_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Calibration:
    image_points: list[Point] = field(default_factory=list)
    ground_points: list[Point] = field(default_factory=list)
    metres_per_pixel: float | None = None


@dataclass(slots=True)
class RuleConfig:
    rule: str
    enabled: bool = True
    severity: str | None = None
    lane_ids: list[str] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class SceneConfig:
    lines: list[CountingLine] = field(default_factory=list)
    zones: list[Zone] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    stop_lines: list[StopLine] = field(default_factory=list)
    calibration: Calibration | None = None
    rules: list[RuleConfig] = field(default_factory=list)


@dataclass(slots=True)
class FrameRef:
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Evidence:
    frame_seq: int
    capture_ts_ms: int
    frame_ref: FrameRef | None = None
    box: list[float] = field(default_factory=list)


# --- topic records -------------------------------------------------------------------------------


@dataclass(slots=True)
class Camera:
    AVRO_NAME: ClassVar[str] = "its.Camera"
    camera_id: str
    name: str
    location: Location
    scene: SceneConfig
    registered_ts_ms: int
    mode: ProcessingMode = ProcessingMode.CLOUD
    source: str | None = None
    fps: float = 10.0
    timezone: str = "UTC"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Frame:
    AVRO_NAME: ClassVar[str] = "its.Frame"
    camera_id: str
    frame_seq: int
    capture_ts_ms: int
    width: int
    height: int
    is_keyframe: bool
    jpeg: bytes
    blur_score: float = 0.0
    producer_id: str = ""


@dataclass(slots=True)
class Detections:
    AVRO_NAME: ClassVar[str] = "its.Detections"
    camera_id: str
    frame_seq: int
    capture_ts_ms: int
    width: int
    height: int
    model_name: str
    model_version: str
    boxes: list[float]
    class_ids: list[int]
    scores: list[float]
    source: DetectionSource = DetectionSource.CLOUD
    track_ids: list[int] | None = None
    frame_ref: FrameRef | None = None
    inference_ms: float = 0.0
    processed_ts_ms: int = 0

    def __len__(self) -> int:
        return len(self.class_ids)


@dataclass(slots=True)
class SignalPhase:
    AVRO_NAME: ClassVar[str] = "its.SignalPhase"
    camera_id: str
    signal_id: str
    phase: Phase
    ts_ms: int
    controller_id: str = ""


@dataclass(slots=True)
class Event:
    AVRO_NAME: ClassVar[str] = "its.Event"
    event_id: str
    camera_id: str
    event_type: EventType
    severity: Severity
    ts_ms: int
    end_ts_ms: int | None = None
    track_id: int | None = None
    class_id: int | None = None
    lane_id: str | None = None
    line_id: str | None = None
    direction: str | None = None
    confidence: float = 1.0
    measurements: dict[str, float] = field(default_factory=dict)
    signal_phase: str | None = None
    evidence: Evidence | None = None
    model_version: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Alert:
    AVRO_NAME: ClassVar[str] = "its.Alert"
    alert_id: str
    incident_id: str
    camera_id: str
    alert_type: EventType
    severity: Severity
    first_ts_ms: int
    last_ts_ms: int
    title: str
    revision: int = 0
    status: AlertStatus = AlertStatus.OPEN
    count: int = 1
    escalation_level: int = 0
    description: str = ""
    suggested_action: str = ""
    event_ids: list[str] = field(default_factory=list)
    evidence: Evidence | None = None
    location: Location | None = None
    acknowledged_by: str | None = None
    acknowledged_ts_ms: int | None = None


@dataclass(slots=True)
class TrafficStats:
    AVRO_NAME: ClassVar[str] = "its.TrafficStats"
    stats_id: str
    camera_id: str
    window_start_ms: int
    window_end_ms: int
    window_s: int
    volume: int
    lane_id: str | None = None
    volume_by_class: dict[str, int] = field(default_factory=dict)
    mean_speed_kmh: float | None = None
    p85_speed_kmh: float | None = None
    occupancy: float = 0.0
    density_veh_per_km: float | None = None
    queue_length_m: float | None = None
    queue_vehicles: int = 0
    level_of_service: LevelOfService = LevelOfService.A
    late_records: int = 0


@dataclass(slots=True)
class Health:
    AVRO_NAME: ClassVar[str] = "its.Health"
    camera_id: str
    ts_ms: int
    mode: ProcessingMode
    status: HealthStatus = HealthStatus.ONLINE
    producer_id: str = ""
    fps_in: float = 0.0
    fps_out: float = 0.0
    frames_dropped: int = 0
    frames_skipped_blur: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    queue_depth: int = 0
    spool_bytes: int = 0
    uptime_s: float = 0.0
    last_error: str | None = None


@dataclass(slots=True)
class DeadLetter:
    AVRO_NAME: ClassVar[str] = "its.DeadLetter"
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    error_type: str
    component: str
    ts_ms: int
    key: bytes | None = None
    payload: bytes | None = None


class ModelStage(StrEnum):
    CANDIDATE = "CANDIDATE"
    CANARY = "CANARY"
    STABLE = "STABLE"
    RETIRED = "RETIRED"


@dataclass(slots=True)
class ModelEntry:
    """One detector version in the model registry (its.models.v1, key ``<name>:<version>``)."""

    AVRO_NAME: ClassVar[str] = "its.ModelEntry"
    name: str
    version: str
    path: str
    format: str
    input_height: int
    input_width: int
    classes: list[int]
    sha256: str
    size_bytes: int
    added_ts_ms: int
    updated_ts_ms: int
    stage: ModelStage = ModelStage.CANDIDATE
    canary_percent: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    promoted_ts_ms: int = 0
    note: str = ""


@dataclass(slots=True)
class AnalyticsState:
    """Snapshot of one camera's analytics engine (its.analytics-state.v1, compacted, key camera_id)."""

    AVRO_NAME: ClassVar[str] = "its.AnalyticsState"
    camera_id: str
    ts_ms: int
    format: int
    state: bytes


@dataclass(slots=True)
class AlertAck:
    """An operator's acknowledgement of an alert (its.alert-acks.v1, key camera_id)."""

    AVRO_NAME: ClassVar[str] = "its.AlertAck"
    ack_id: str
    alert_id: str
    incident_id: str
    camera_id: str
    acknowledged_by: str
    ts_ms: int
    note: str = ""
    source: str = "console"


@dataclass(slots=True)
class AuditEntry:
    """One security-relevant action (its.audit.v1, append-only)."""

    AVRO_NAME: ClassVar[str] = "its.AuditEntry"
    audit_id: str
    ts_ms: int
    actor: str
    action: str
    target: str
    outcome: str
    reason: str = ""
    details: dict[str, str] = field(default_factory=dict)
    component: str = "cli"


Record = (
    Camera | Frame | Detections | SignalPhase | Event | Alert | TrafficStats | Health | DeadLetter
    | ModelEntry | AnalyticsState | AlertAck | AuditEntry
)  # fmt: skip

RECORD_TYPES: dict[str, type] = {
    cls.AVRO_NAME: cls
    for cls in (
        Camera, Frame, Detections, SignalPhase, Event, Alert, TrafficStats, Health, DeadLetter, ModelEntry,
        AnalyticsState, AlertAck, AuditEntry,
    )
}  # fmt: skip
