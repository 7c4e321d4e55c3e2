"""``its alerts ack ALERT_ID --by NAME``: acknowledge an alert (an AlertAck on its.alert-acks.v1)."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("ack")
def ack(
    alert_id: str = typer.Argument(..., help="the alert's id, e.g. cam-1:SPEEDING:1700000000000:0"),
    by: str = typer.Option(..., "--by", help="the operator acknowledging it"),
    note: str = typer.Option("", "--note", help="free text kept with the acknowledgement"),
) -> None:
    """Acknowledge an alert: analytics stops escalating the incident and publishes it ACKNOWLEDGED."""
    from processors.analytics.acks import AckError, publish_ack

    try:
        record = publish_ack(get_settings(), alert_id, by, note, source="cli")
    except AckError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(asdict(record)))
