"""``its privacy erase``: remove one camera's data from ClickHouse for a time range, audited."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from its.settings import get_settings

if TYPE_CHECKING:
    from its.privacy.erase import EraseReport
    from its.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Privacy: erase a camera's data for a time range")
out = Console()
err = Console(stderr=True)


@app.command()
def erase(
    camera: str = typer.Option(..., "--camera", help="Camera id whose data goes"),
    start: str = typer.Option(..., "--from", help="ISO 8601 start, inclusive (no zone = UTC)"),
    end: str = typer.Option(..., "--to", help="ISO 8601 end, exclusive"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be removed"),
    dsn: str | None = typer.Option(
        None, "--dsn", help="ClickHouse DSN (default: ITS_CLICKHOUSE_URL/embedded)"
    ),
    database: str | None = typer.Option(
        None, "--database", "-d", help="Analytics database (default: the sink's)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
) -> None:
    """Delete CAMERA's rows in [FROM, TO) from every data table and report, per table, what went."""
    from connectors.clickhouse.client import connect
    from connectors.clickhouse.errors import StoreError
    from connectors.clickhouse.runner import sink_database
    from its.audit import ERROR, OK, AuditError, audit, current_actor
    from its.privacy.erase import erase as run_erase
    from its.privacy.erase import parse_time

    try:
        lo, hi = parse_time(start), parse_time(end)
        if hi <= lo:
            raise ValueError(f"--to ({hi.isoformat()}) must be after --from ({lo.isoformat()})")
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None
    settings = get_settings()
    actor = current_actor(settings)
    db = database or sink_database(settings)
    span = {"from": lo.isoformat(), "to": hi.isoformat(), "dry_run": dry_run, "database": db}
    try:
        client = connect(dsn or settings.clickhouse_dsn)
    except StoreError as exc:
        # Writes cannot go through the sink's read-only endpoint: the store must be free (or a server).
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
    try:
        report = run_erase(client, db, camera, lo, hi, dry_run=dry_run)
    except Exception as exc:
        _audit_or_fail(settings, actor, camera, ERROR, f"{type(exc).__name__}: {exc}", span)
        err.print(f"error: the erase failed: {exc}", markup=False)
        raise typer.Exit(1) from None
    finally:
        client.close()
    counts = {f"removed.{t.table}": t.removed for t in report.tables}
    try:
        audit(settings, actor, "privacy.erase", camera, OK, component="privacy", removed=report.removed,
              **span, **counts)  # fmt: skip
    except AuditError as exc:
        err.print(f"error: the data was {'counted' if dry_run else 'erased'} but {exc}", markup=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        _print(report)
    if report.uncovered:
        err.print(f"warning: tables with a camera_id the erase does not know: {', '.join(report.uncovered)}")


def _audit_or_fail(
    settings: Settings, actor: str, camera: str, outcome: str, reason: str, span: dict[str, object]
) -> None:
    from its.audit import AuditError, audit

    try:
        audit(settings, actor, "privacy.erase", camera, outcome, reason, component="privacy", **span)
    except AuditError as exc:
        err.print(f"error: {exc}", markup=False)


def _print(report: EraseReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    title = f"erase {report.camera_id} [{report.start.isoformat()}, {report.end.isoformat()})"
    table = Table("table", "kind", "rows before", verb, "rebuilt", "rows after", title=title)
    for t in report.tables:
        table.add_row(t.table, t.kind, str(t.before), str(t.removed), str(t.rebuilt), str(t.after))
    out.print(table)
    out.print(f"{verb} {report.removed} rows" + (" (dry run: nothing changed)" if report.dry_run else ""))
    if report.missing:
        out.print(f"not in this database: {', '.join(report.missing)}")
