"""``its console``: the operator's web console (cameras, incidents, traffic, map)."""

from __future__ import annotations

import typer

from its.settings import get_settings


def console(
    host: str = typer.Option(None, "--host", help="bind address (default: console.host, 127.0.0.1)"),
    port: int = typer.Option(None, "--port", help="port (default: console.port, 8090)"),
) -> None:
    """Serve the operator console; acknowledging alerts needs ITS_CONSOLE__OPERATOR_TOKEN."""
    from its.console.server import serve

    settings = get_settings()
    update = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if update:
        settings = settings.model_copy(update={"console": settings.console.model_copy(update=update)})
    serve(settings)
