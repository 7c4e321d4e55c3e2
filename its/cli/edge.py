"""``its edge run``: cameras to Kafka (sampling, keyframes, JPEG, optional edge detection, spool)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("run")
def run(
    camera_id: str | None = typer.Option(None, "--camera-id", help="Camera id (key on every topic)"),
    source: str | None = typer.Option(
        None, "--source", help="Video file, image folder, rtsp://... or http://... URL, or device index"
    ),
    mode: str | None = typer.Option(None, "--mode", help="cloud, edge, hybrid or auto (default: settings)"),
    config: Path | None = typer.Option(None, "--config", help="YAML with a 'cameras:' list (many cameras)"),
    loop: bool = typer.Option(False, "--loop", help="Loop a file or folder source"),
    fps: float | None = typer.Option(None, "--fps", help="Sampling rate (default ITS_EDGE__FPS, 10)"),
    realtime: bool | None = typer.Option(
        None, "--realtime/--fast", help="Pace file sources at their frame rate, or read as fast as possible"
    ),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Stop a camera after N sampled frames"),
    duration: float | None = typer.Option(None, "--duration", help="Stop after this many seconds"),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="/metrics + /healthz port (0: any)"),
) -> None:
    """Run one camera (--camera-id/--source) or many (--config); prints a JSON summary on exit.

    Exit status: 0 when every camera ran, 1 when any camera's source failed (the others still ran).
    """
    from producers.edge import CameraConfig, EdgeRunner, load_cameras_file
    from producers.modes import parse_mode

    settings = get_settings()
    try:
        if config is not None:
            if camera_id or source:
                raise ValueError("give either --config or --camera-id/--source, not both")
            cameras = load_cameras_file(config)
        else:
            if not camera_id or not source:
                raise ValueError("give --camera-id and --source (or --config cameras.yaml)")
            cameras = [CameraConfig(camera_id=camera_id, source=source, loop=loop)]
        for cam in cameras:
            if mode is not None:
                cam.mode = mode
            if fps is not None:
                cam.fps = fps
            if realtime is not None:
                cam.realtime = realtime
            if max_frames is not None:
                cam.max_frames = max_frames
            parse_mode(cam.mode or settings.edge.mode)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        runner = EdgeRunner(settings, cameras, metrics_port=metrics_port, duration_s=duration)
    except Exception as exc:  # the registry is needed once at start to register the record schemas
        typer.echo(f"error: cannot start (schema registry {settings.schema_registry_url}): {exc}", err=True)
        raise typer.Exit(2) from None
    summary = runner.run()
    typer.echo(json.dumps(summary))
    failed = [c for c in summary["cameras"] if c["status"] == "failed"]
    for cam in failed:
        typer.echo(f"error: camera {cam['camera_id']}: {cam['error']}", err=True)
    if failed:
        raise typer.Exit(1)
