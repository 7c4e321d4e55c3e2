"""``its camera register|list|show|remove``: the camera registry on the compacted its.cameras.v1."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _registry():  # type: ignore[no-untyped-def]
    from producers.registry import CameraRegistry

    settings = get_settings()
    return CameraRegistry(settings.kafka_config(), settings.schema_registry_url)


def _json(obj: object) -> str:
    return json.dumps(obj, default=str, indent=2)


@app.command("register")
def register(
    scene_file: Path = typer.Argument(..., help="YAML: camera_id, name, location, mode, source, scene"),
) -> None:
    """Register (or update) the camera a YAML file describes."""
    from producers.registry import CameraFileError, load_camera_file

    try:
        camera = load_camera_file(scene_file)
    except CameraFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _registry().register(camera)
    typer.echo(f"registered {camera.camera_id}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every registered camera (id, name, mode, location)."""
    cameras = _registry().all()
    rows = [
        {"camera_id": c.camera_id, "name": c.name, "mode": c.mode.value.lower(),
         "latitude": c.location.latitude, "longitude": c.location.longitude}
        for c in sorted(cameras.values(), key=lambda c: c.camera_id)
    ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['camera_id']}\t{row['mode']}\t{row['name']}")


@app.command("show")
def show(camera_id: str = typer.Argument(...)) -> None:
    """One camera's full registration, scene config included, as JSON."""
    camera = _registry().get(camera_id)
    if camera is None:
        typer.echo(f"error: camera {camera_id} is not registered", err=True)
        raise typer.Exit(1)
    typer.echo(_json(asdict(camera)))


@app.command("remove")
def remove(camera_id: str = typer.Argument(...)) -> None:
    """Remove a camera (a tombstone on the compacted topic)."""
    if not _registry().remove(camera_id):
        typer.echo(f"error: camera {camera_id} is not registered", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {camera_id}")
