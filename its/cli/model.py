"""`its model ...`: the model registry on the compacted topic its.models.v1."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Model registry: add, promote, canary, rollback, export")
console = Console()
err = Console(stderr=True)


def _registry():
    from processors.inference.registry import ModelRegistry

    return ModelRegistry(get_settings())


def _show(entries: list, as_json: bool) -> None:
    from schemas import codec

    if as_json:
        typer.echo(json.dumps([codec.to_avro(e) for e in entries], default=str))
        return
    table = Table(title="its.models.v1")
    for col in ("name", "version", "stage", "canary %", "format", "input", "sha256", "metrics", "path"):
        table.add_column(col)
    for e in entries:
        table.add_row(
            e.name,
            e.version,
            e.stage.value,
            f"{e.canary_percent:g}" if e.stage.value == "CANARY" else "",
            e.format,
            f"{e.input_width}x{e.input_height}",
            e.sha256[:12],
            ", ".join(f"{k}={v:g}" for k, v in sorted(e.metrics.items())),
            e.path,
        )
    console.print(table)


def _run(fn, *args, as_json: bool = False) -> None:
    try:
        _show(fn(*args), as_json)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        err.print(f"[red]{exc.args[0] if exc.args else exc}[/]")
        raise typer.Exit(1) from None


@app.command("list")
def list_(
    name: str | None = typer.Argument(None, help="Only this model"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every registered version with its stage, geometry, checksum and measured figures."""
    reg = _registry()
    reg.refresh()
    _show(reg.versions(name), as_json)


@app.command()
def add(
    path: Path = typer.Argument(..., help="Model file (.onnx; .pt/.engine with the ultralytics extra)"),
    name: str = typer.Option(..., "--name", help="Model name on detection records"),
    version: str = typer.Option(..., "--version", help="Version (immutable once added)"),
    note: str = typer.Option("", help="Free text"),
    measure: bool = typer.Option(
        True, "--measure/--no-measure", help="Time it on CPU on the reference image"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Register a model file as a CANDIDATE."""
    _run(lambda: [_registry().add(path, name, version, measure=measure, note=note)], as_json=as_json)


@app.command()
def promote(name: str, version: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Make VERSION the stable model of NAME for every camera (the old stable one is RETIRED)."""
    _run(_registry().promote, name, version, as_json=as_json)


@app.command()
def rollback(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Return NAME to the version that was stable before the current one."""
    _run(_registry().rollback, name, as_json=as_json)


@app.command()
def canary(
    name: str,
    version: str,
    percent: float = typer.Option(..., "--percent", help="Share of cameras (stable hash of camera_id)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send PERCENT % of cameras to VERSION; the rest stay on the stable version."""
    _run(_registry().canary, name, version, percent, as_json=as_json)


@app.command()
def export(
    weights: str = typer.Option(..., "--weights", help="Ultralytics weights, e.g. yolo11m.pt (or .yaml)"),
    fmt: str = typer.Option("onnx", "--format", help="onnx or engine (TensorRT; needs a GPU)"),
    imgsz: int = typer.Option(640, help="Input size"),
    half: bool = typer.Option(False, help="FP16 (engine)"),
    dynamic: bool = typer.Option(True, help="Dynamic batch dimension (one forward pass per batch)"),
) -> None:
    """Export weights through ultralytics (the optional extra) to ONNX or a TensorRT engine."""
    from processors.inference.detector import ultralytics_yolo

    if fmt not in ("onnx", "engine"):
        err.print(f"[red]--format must be onnx or engine, not {fmt}[/]")
        raise typer.Exit(2)
    try:
        yolo = ultralytics_yolo()
    except RuntimeError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    out = yolo(weights).export(format=fmt, imgsz=imgsz, half=half, dynamic=dynamic)
    typer.echo(str(out))
