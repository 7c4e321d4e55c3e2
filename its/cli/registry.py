"""`its registry`: start, stop and inspect the local Confluent-compatible schema registry."""

from __future__ import annotations

import json
from urllib.parse import quote, urlparse

import httpx
import typer

from infra.schema_registry import runner
from its.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="The local Confluent-compatible schema registry")


@app.command()
def start(
    host: str | None = typer.Option(None, help="Listen address; default from ITS_SCHEMA_REGISTRY_URL"),
    port: int | None = typer.Option(None, help="Listen port; default from ITS_SCHEMA_REGISTRY_URL"),
    timeout: float = typer.Option(60.0, help="Seconds to wait for /healthz"),
) -> None:
    """Start the registry in the background (persisted in the topic ITS_SCHEMA_REGISTRY_TOPIC)."""
    settings = get_settings()
    url = urlparse(settings.schema_registry_url)
    try:
        pid = runner.start_background(
            settings, host or url.hostname or "127.0.0.1", port or url.port or 8081, timeout
        )
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({**runner.status(settings), "pid": pid}))


@app.command()
def stop() -> None:
    """Stop the background registry (SIGTERM, then SIGKILL after 15 s)."""
    stopped = runner.stop_background(get_settings())
    typer.echo("stopped" if stopped else "not running")


@app.command()
def status() -> None:
    """Print whether the background registry runs and answers, as JSON; exit 1 when it does not."""
    state = runner.status(get_settings())
    typer.echo(json.dumps(state))
    if not state["healthy"]:
        raise typer.Exit(1)


@app.command()
def subjects(
    deleted: bool = typer.Option(False, help="Include soft-deleted subjects"),
    versions: bool = typer.Option(False, "--versions", help="Show each subject's versions and latest id"),
) -> None:
    """List subjects of the registry at ITS_SCHEMA_REGISTRY_URL (any Confluent-compatible registry)."""
    base = get_settings().schema_registry_url.rstrip("/")
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            names = (
                client.get("/subjects", params={"deleted": str(deleted).lower()}).raise_for_status().json()
            )
            for name in names:
                if not versions:
                    typer.echo(name)
                    continue
                quoted = f"/subjects/{quote(name, safe='')}"  # a "/" in a subject name stays one segment
                found = client.get(f"{quoted}/versions").raise_for_status().json()
                latest = client.get(f"{quoted}/versions/latest").raise_for_status().json()
                typer.echo(f"{name}\tversions={found}\tlatest_id={latest['id']}")
    except httpx.HTTPError as exc:
        typer.echo(f"registry at {base} not reachable: {exc}", err=True)
        raise typer.Exit(1) from exc
