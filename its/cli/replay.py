"""``its replay``: rebuild analytics tables from Kafka retention into another database."""

from __future__ import annotations

import json

import typer

from its.settings import get_settings


def replay(
    topic: list[str] = typer.Option(..., "--topic", "-t", help="catalogue topic(s), e.g. its.events.v1"),
    start: str = typer.Option(..., "--from", help="ISO time (Kafka timestamp = event time) or offset"),
    end: str | None = typer.Option(None, "--to", help="ISO time or offset, exclusive (default: the end)"),
    into: str = typer.Option(..., "--into", help="database to rebuild into (created; never the live one)"),
    dsn: str | None = typer.Option(
        None, "--dsn", help="ClickHouse to write to (default: ITS_CLICKHOUSE_URL)"
    ),
) -> None:
    """Replay TOPIC's records in [--from, --to) into database --into; print rows per table as JSON."""
    from connectors.clickhouse.client import connect
    from connectors.clickhouse.errors import StoreError
    from connectors.clickhouse.replay import Bound
    from connectors.clickhouse.replay import replay as run_replay

    settings = get_settings()
    try:
        bounds = Bound.parse(start), Bound.parse(end) if end else None
        client = connect(dsn or settings.clickhouse_dsn)
    except (ValueError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    from clickhouse_connect.driver.exceptions import ClickHouseError

    try:
        rows = run_replay(settings, client, topic, into, bounds[0], bounds[1], settings.sink.batch_rows)
    except (ValueError, LookupError, ClickHouseError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
    typer.echo(json.dumps({"into": into, "rows": rows}))
