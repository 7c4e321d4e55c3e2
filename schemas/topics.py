"""The topic catalogue: every Kafka topic of the system, declared once.

``its topics ensure`` makes the cluster match this list. Keys are camera ids on every topic, so one
camera's records stay ordered on one partition; partition counts are sized for 1,000+ cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name, partitions, the Avro record it carries and its topic-level configs."""

    name: str
    partitions: int
    record: str  # Avro full name of the value schema (subject = "<topic>-value")
    doc: str
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def value_subject(self) -> str:
        return f"{self.name}-value"


CAMERAS = "its.cameras.v1"
FRAMES = "its.frames.v1"
DETECTIONS = "its.detections.v1"
SIGNALS = "its.signals.v1"
EVENTS = "its.events.v1"
ALERTS = "its.alerts.v1"
TRAFFIC_STATS = "its.traffic-stats.v1"
HEALTH = "its.health.v1"
DLQ = "its.dlq.v1"
MODELS = "its.models.v1"
ANALYTICS_STATE = "its.analytics-state.v1"
ALERT_ACKS = "its.alert-acks.v1"
AUDIT = "its.audit.v1"

_COMMON = {"min.insync.replicas": "1", "compression.type": "producer"}

CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec(
        CAMERAS,
        6,
        "its.Camera",
        "camera registration and scene config (latest per camera)",
        {**_COMMON, "cleanup.policy": "compact", "min.compaction.lag.ms": "0", "segment.ms": str(DAY_MS)},
    ),
    TopicSpec(
        FRAMES,
        24,
        "its.Frame",
        "JPEG keyframes for central inference: large, short-lived",
        {
            **_COMMON,
            "retention.ms": str(1 * DAY_MS),
            "max.message.bytes": str(8 * 1024 * 1024),
            "segment.bytes": str(256 * 1024 * 1024),
        },
    ),
    TopicSpec(
        DETECTIONS,
        24,
        "its.Detections",
        "all boxes of one frame; the one stream trackers read",
        {**_COMMON, "retention.ms": str(7 * DAY_MS)},
    ),
    TopicSpec(
        SIGNALS,
        12,
        "its.SignalPhase",
        "signal phase per approach",
        {**_COMMON, "retention.ms": str(7 * DAY_MS)},
    ),
    TopicSpec(
        EVENTS,
        12,
        "its.Event",
        "line crossings, violations, incidents",
        {**_COMMON, "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        ALERTS,
        6,
        "its.Alert",
        "actionable alerts for integrators",
        {**_COMMON, "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        TRAFFIC_STATS,
        12,
        "its.TrafficStats",
        "windowed counts, speeds, occupancy, queue, level of service",
        {**_COMMON, "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        HEALTH, 6, "its.Health", "camera and stream heartbeats", {**_COMMON, "retention.ms": str(7 * DAY_MS)}
    ),
    TopicSpec(
        DLQ,
        6,
        "its.DeadLetter",
        "anything that could not be processed, with the reason",
        {**_COMMON, "retention.ms": str(30 * DAY_MS), "max.message.bytes": str(8 * 1024 * 1024)},
    ),
    TopicSpec(
        MODELS,
        1,
        "its.ModelEntry",
        "model registry: one record per model version (key name:version), latest state wins",
        {**_COMMON, "cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
    ),
    TopicSpec(
        ANALYTICS_STATE,
        24,
        "its.AnalyticsState",
        "analytics engine snapshot per camera, written with the outputs in one transaction",
        {
            **_COMMON,
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "0",
            "max.message.bytes": str(8 * 1024 * 1024),
            "segment.ms": str(DAY_MS),
        },
    ),
    TopicSpec(
        ALERT_ACKS,
        24,  # the detections topic's count: an ack reaches the analytics instance owning the camera
        "its.AlertAck",
        "operator acknowledgements of alerts; analytics stops escalating what is acknowledged",
        {**_COMMON, "retention.ms": str(30 * DAY_MS)},
    ),
    TopicSpec(
        AUDIT,
        3,
        "its.AuditEntry",
        "append-only audit trail of security-relevant actions",
        {**_COMMON, "retention.ms": str(365 * DAY_MS)},
    ),
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in CATALOGUE}
