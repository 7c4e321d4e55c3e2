"""Settings of edge producers (its edge run): a section of the one `its.settings.Settings` object.

Environment variables reach a field as `ITS_<SECTION>__<FIELD>`; YAML as `<section>: {<field>: ...}`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class EdgeSettings(BaseModel):
    """Sampling, encoding, publishing, spool and mode-decision settings of `its edge run`."""

    # Sampling and encoding
    fps: float = Field(10.0, gt=0, description="Frames per second sampled from the source, by capture time")
    keyframe_every: int = Field(10, ge=1, description="Every N-th sampled frame is a keyframe")
    scene_change: float = Field(
        0.12,
        ge=0,
        description="Mean absolute grey difference (0..1) to the last keyframe that makes a keyframe",
    )
    blur_threshold: float = Field(
        5.0,
        ge=0,
        description="Variance of Laplacian (640 px wide grey) below which a frame is skipped; 0 off",
    )
    resize_width: int | None = Field(
        None, ge=16, description="Resize sampled frames to this width (aspect kept)"
    )
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality of published frames")
    realtime: bool = Field(True, description="Pace file and folder sources at their own frame rate")
    folder_fps: float = Field(10.0, gt=0, description="Frame rate assumed for an image folder source")

    # Processing mode
    mode: str = Field("cloud", description="cloud, edge, hybrid or auto (seed section 1.4)")
    model: str = Field(
        "models/yolox_nano_coco_416.onnx", description="Edge detector (relative: under assets)"
    )
    conf: float = Field(0.25, description="Edge detector confidence threshold")
    auto_latency_ms: float = Field(50.0, description="auto: round trip above this -> edge")
    auto_bandwidth_mbps: float = Field(2.0, description="auto: uplink below this -> edge")
    auto_utilisation: float = Field(0.8, description="auto: local load per core above this -> cloud")
    auto_interval_s: float = Field(30.0, gt=0, description="auto: how often the decision is re-evaluated")
    uplink_mbps: float | None = Field(
        None, description="Known uplink bandwidth; unset: measured from acknowledged bytes while saturated"
    )

    # Publishing
    queue_max_records: int = Field(512, ge=1, description="In-memory queue bound (records) before drops")
    queue_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="In-memory queue bound (bytes)")
    inflight_max: int = Field(2000, ge=1, description="Records handed to librdkafka and not yet acknowledged")
    detections_compression: str = Field("zstd", description="Compression of detections/health records")
    spool_dir: Path | None = Field(None, description="Disk spool directory (default <data_dir>/edge/spool)")
    spool_max_bytes: int = Field(1024 * 1024 * 1024, ge=1024, description="Disk spool bound in bytes")
    spool_after_s: float = Field(
        3.0, gt=0, description="No acknowledgement for this long while records are outstanding: spool to disk"
    )
    flush_timeout_s: float = Field(15.0, ge=0, description="On shutdown: wait this long for acknowledgements")

    # Sources
    reconnect_initial_s: float = Field(0.5, gt=0, description="First reconnect delay of a live source")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay")
    reconnect_jitter: float = Field(0.3, ge=0, le=1, description="Random +/- fraction on each delay")
    open_timeout_s: float = Field(5.0, gt=0, description="Open/read timeout of network sources")

    # Observability
    health_interval_s: float = Field(5.0, gt=0, description="Heartbeat period on its.health.v1")
    metrics_port: int = Field(9101, ge=0, description="/metrics and /healthz port (0: any free port)")
    producer_id: str | None = Field(None, description="Name of this edge node on records (default: host)")
