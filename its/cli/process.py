"""`its process NAME`: run a stream processor until SIGTERM (it commits its open batch first)."""

from __future__ import annotations

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Stream processors (Kafka transactions, exactly once)")


@app.command()
def inference(
    model: str | None = typer.Option(None, help="Model file (default: settings inference.model)"),
    max_batch: int | None = typer.Option(None, help="Frames per forward pass"),
    max_wait_ms: int | None = typer.Option(None, help="Longest wait for a batch to fill"),
    instance_id: str | None = typer.Option(
        None, help="Stable id of this replica (transactional.id base); default: host name"
    ),
    metrics_port: int | None = typer.Option(None, help="/metrics + /healthz port (0: any free port)"),
    registry: bool | None = typer.Option(None, "--registry/--no-registry", help="Follow its.models.v1"),
) -> None:
    """Frames -> detections: batched across cameras, one Kafka transaction per batch."""
    from processors.inference.processor import build_processor

    settings = get_settings()
    updates: dict[str, object] = {}
    if model is not None:
        updates["model"] = model
    if max_batch is not None:
        updates["max_batch"] = max_batch
    if max_wait_ms is not None:
        updates["max_wait_ms"] = max_wait_ms
    if registry is not None:
        updates["use_registry"] = registry
    if updates:
        settings = settings.model_copy(update={"inference": settings.inference.model_copy(update=updates)})
    build_processor(settings, instance_id=instance_id, metrics_port=metrics_port).run()


@app.command()
def analytics(
    instance_id: str | None = typer.Option(
        None, help="Stable id of this replica (transactional.id base); default: host name"
    ),
    metrics_port: int | None = typer.Option(None, help="/metrics + /healthz port (0: any free port)"),
) -> None:
    """Detections -> tracks, events, alerts, windowed stats; engine snapshots in the same transaction."""
    from processors.analytics.processor import build_processor

    build_processor(get_settings(), instance_id=instance_id, metrics_port=metrics_port).run()
