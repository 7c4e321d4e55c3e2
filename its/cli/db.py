"""`its db migrate|status` and `its sql`: ClickHouse schema and ad-hoc queries.

chdb and clickhouse-connect are imported inside the commands: chdb is a 555 MB library and the
rest of the CLI must start fast.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from its.settings import get_settings

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

app = typer.Typer(no_args_is_help=True)
out = Console()
err = Console(stderr=True)

DSN_HELP = (
    "chdb:///abs/path, chdb://memory or http(s)://user:pass@host:port/db "
    "(default: ITS_CLICKHOUSE_URL, else the embedded store under ITS_DATA_DIR)"
)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    tsv = "tsv"


# Formats ClickHouse renders itself, so values print exactly as the server writes them.
_RAW_FORMATS = {
    OutputFormat.json: "JSONEachRow",
    OutputFormat.csv: "CSVWithNames",
    OutputFormat.tsv: "TabSeparatedWithNames",
}


@app.command()
def migrate(
    dsn: str | None = typer.Option(None, "--dsn", help=DSN_HELP),
    database: str | None = typer.Option(
        None, "--database", "-d", help="Database to migrate (created if missing)"
    ),
) -> None:
    """Apply pending schema migrations; print what was applied and what was already there."""
    from connectors.clickhouse.migrate import discover
    from connectors.clickhouse.migrate import migrate as run_migrations

    client = _connect(dsn)
    try:
        applied = {m.version for m in _guard(lambda: run_migrations(client, database))}
    finally:
        client.close()
    for migration in discover():
        if migration.version in applied:
            out.print(f"[green]applied[/green]  {migration.label}")
        else:
            out.print(f"[dim]skipped[/dim]  {migration.label} (already applied)")
    out.print(f"{len(applied)} applied, {len(discover()) - len(applied)} already up to date")


@app.command()
def status(
    dsn: str | None = typer.Option(None, "--dsn", help=DSN_HELP),
    database: str | None = typer.Option(None, "--database", "-d", help="Database to inspect"),
) -> None:
    """Show every migration: applied, pending, changed (file edited after it ran) or orphan."""
    from connectors.clickhouse.migrate import migration_status

    client = _connect(dsn, read_only=True)
    try:
        states = _guard(lambda: migration_status(client, database))
    finally:
        client.close()
    table = Table("version", "name", "state", "applied_at")
    colours = {"applied": "green", "pending": "yellow", "changed": "red", "orphan": "red"}
    for s in states:
        table.add_row(
            f"{s.version:04d}",
            s.name,
            f"[{colours[s.state]}]{s.state}[/]",
            s.applied_at.isoformat(sep=" ") if s.applied_at else "",
        )
    out.print(table)
    if any(s.state in ("changed", "orphan") for s in states):
        raise typer.Exit(1)


def sql(
    query: str = typer.Argument(..., help="SQL; several statements separated by ';' run in order"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output format"),
    dsn: str | None = typer.Option(None, "--dsn", help=DSN_HELP),
    database: str | None = typer.Option(None, "--database", "-d", help="Database to run in"),
) -> None:
    """Run SQL on ClickHouse and print the last statement's result."""
    from connectors.clickhouse.client import use_database
    from connectors.clickhouse.sql import returns_rows, split_statements

    try:
        statements = split_statements(query)
    except ValueError as exc:
        _fail(str(exc))
    if not statements:
        _fail("no SQL statement given")
    client = _connect(dsn, read_only=True)
    try:
        if database:
            _guard(lambda: use_database(client, database, create=False))
        for statement in statements[:-1]:
            _guard(lambda s=statement: client.command(s))
        last = statements[-1]
        if not returns_rows(last):
            result = _guard(lambda: client.command(last))
            out.print(result if isinstance(result, (str, int)) else "OK")
        elif fmt is OutputFormat.table:
            rows = _guard(lambda: client.query(last))
            _print_table(list(rows.column_names), rows.result_rows)
        else:
            data = _guard(lambda: client.raw_query(last, fmt=_RAW_FORMATS[fmt]))
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    finally:
        client.close()


def _connect(dsn: str | None, read_only: bool = False) -> Client:
    from connectors.clickhouse.client import connect

    settings = get_settings()
    target = dsn or settings.clickhouse_dsn
    # Readers go through the sink's query endpoint while the sink holds the embedded store.
    auth = (settings.sink.query_user, settings.sink.query_password) if read_only else None
    return _guard(lambda: connect(target, via_endpoint=auth))


def _guard(call: Any) -> Any:
    """Run ``call``; turn store, migration and ClickHouse errors into a message and exit code 1."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from connectors.clickhouse.errors import MigrationError, StoreError

    try:
        return call()
    except (StoreError, MigrationError, ClickHouseError, LookupError) as exc:
        _fail(str(exc).strip())


def _fail(message: str) -> NoReturn:
    # Text, not markup: ClickHouse messages contain [brackets] that rich would eat.
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(1)


def _print_table(columns: list[str], rows: list[Any]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    out.print(table)


def _cell(value: Any) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, (dict, list, tuple)):
        return Text(json.dumps(value, default=str))
    return Text(str(value))
