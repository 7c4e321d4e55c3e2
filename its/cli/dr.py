"""``its dr backup|restore``: disaster recovery of the analytics database."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


def _database() -> str:
    from connectors.clickhouse.runner import sink_database

    return sink_database(get_settings())


@app.command()
def backup(directory: Path = typer.Argument(..., help="new directory for the backup")) -> None:
    """Back up the analytics database (through the running sink, between two batches, if it runs)."""
    from connectors.clickhouse.client import connect
    from connectors.clickhouse.dr import backup as run_backup
    from connectors.clickhouse.errors import StoreError

    settings = get_settings()
    auth = (settings.sink.query_user, settings.sink.query_password)
    try:
        client = connect(settings.clickhouse_dsn, via_endpoint=auth)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        manifest = run_backup(client, _database(), directory)
    except (FileExistsError, RuntimeError, ClickHouseError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
    typer.echo(json.dumps(manifest))


@app.command()
def restore(directory: Path = typer.Argument(..., help="a directory written by `its dr backup`")) -> None:
    """Replace the analytics database by a backup (sink stopped); it resumes at the restored offsets."""
    from connectors.clickhouse.client import connect
    from connectors.clickhouse.dr import restore as run_restore
    from connectors.clickhouse.errors import StoreError

    settings = get_settings()
    try:
        client = connect(settings.clickhouse_dsn)
    except StoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        result = run_restore(client, directory, _database())
    except (FileNotFoundError, ClickHouseError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
    typer.echo(json.dumps(result))
