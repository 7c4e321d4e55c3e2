"""Settings of the analytics processor: a section of the one `its.settings.Settings` object.

Environment variables reach a field as `ITS_<SECTION>__<FIELD>`; YAML as `<section>: {<field>: ...}`.
Rule thresholds are per camera (``SceneConfig.rules``); these are the processor-wide knobs.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class AnalyticsSettings(BaseModel):
    """Tracking, measurement, window and alert settings of `its process analytics`."""

    group_id: str = Field("its-analytics", description="Kafka consumer group")
    max_batch: int = Field(500, ge=1, description="Records per transaction at most")
    max_wait_ms: int = Field(100, ge=1, description="Longest a batch waits to fill")
    metrics_port: int = Field(9103, ge=0, description="/metrics and /healthz port (0: any free port)")

    allowed_lateness_ms: int = Field(
        5_000,
        ge=0,
        description="Watermark lag behind the largest capture time: windows close this long after their "
        "end; contributions for a closed window are counted in late_records of the next one",
    )
    speed_window_s: float = Field(
        1.5, gt=0, description="Span of the ground-track fit a crossing's speed is measured over (centred)"
    )
    rule_speed_window_s: float = Field(
        1.0, gt=0, description="Trailing span of the fit that rules (speeding, stopped) use"
    )
    crossing_band_m: float = Field(
        1.0,
        ge=0,
        description="Hysteresis: a track changes side of a line only once it is this far past it",
    )
    line_margin_m: float = Field(1.0, ge=0, description="A crossing may miss a line's end by this much")
    max_lost_s: float = Field(2.0, gt=0, description="A confirmed track survives this long without a match")
    track_high_score: float = Field(0.5, ge=0, le=1, description="ByteTrack first-stage score threshold")
    track_new_score: float = Field(0.6, ge=0, le=1, description="Score a box needs to start a track")

    alert_throttle_s: float = Field(
        60.0, ge=0, description="At most one alert per camera and type this often"
    )
    alert_resolve_after_s: float = Field(600.0, gt=0, description="Resolve an incident quiet this long")
    alert_escalate_after_s: list[float] = Field(
        default_factory=lambda: [300.0, 900.0], description="Escalation levels 2, 3 after this long unacked"
    )
