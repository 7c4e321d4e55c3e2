"""Settings of the inference processor: a section of the one `its.settings.Settings` object.

Environment variables reach a field as `ITS_<SECTION>__<FIELD>`; YAML as `<section>: {<field>: ...}`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class InferenceSettings(BaseModel):
    """Detector, batching and registry settings of `its process inference`."""

    model: str = Field(
        "models/yolox_nano_coco_416.onnx",
        description="ONNX (or .pt/.engine with the ultralytics extra) model path; relative paths are "
        "tried as given, then under the assets directory. Overridden by the registry's stable model.",
    )
    model_name: str | None = Field(None, description="Name on detection records (default: file stem)")
    model_version: str | None = Field(None, description="Version on records (default: sha256 prefix)")
    use_registry: bool = Field(True, description="Follow the model registry topic (its.models.v1)")
    registry_refresh_s: float = Field(30.0, description="How often the processor re-reads the registry")
    conf: float = Field(0.25, description="Confidence threshold")
    iou: float = Field(0.45, description="IoU threshold of the class-agnostic NMS")
    classes: list[int] | None = Field(
        default_factory=lambda: [0, 1, 2, 3, 5, 7, 9, 11], description="COCO ids kept; null keeps all"
    )
    providers: list[str] = Field(
        default_factory=lambda: [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ],
        description="ONNX Runtime execution providers in preference order (unavailable ones are skipped)",
    )
    intra_op_threads: int = Field(0, description="ONNX Runtime intra-op threads (0: runtime default)")
    max_batch: int = Field(32, description="Frames per forward pass (dynamic batching across cameras)")
    max_wait_ms: int = Field(50, description="Longest a frame waits for its batch to fill")
    max_in_flight: int = Field(
        256, description="Frames buffered before the consumer pauses its partitions (backpressure)"
    )
    group_id: str = Field("its-inference", description="Kafka consumer group of the processors")
    metrics_port: int = Field(9102, description="/metrics and /healthz port (0: any free port)")
    instance_id: str | None = Field(
        None, description="Stable id of this replica; the transactional.id derives from it (default: host)"
    )
