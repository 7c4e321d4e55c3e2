"""``its sink clickhouse``: the exactly-once ClickHouse sink."""

from __future__ import annotations

import json

import typer

from its.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("clickhouse")
def clickhouse(
    exit_when_idle: float | None = typer.Option(
        None, help="exit once every partition is caught up and nothing arrived for this many seconds"
    ),
) -> None:
    """Consume the analytics topics into ClickHouse (ITS_CLICKHOUSE_URL), serving read-only SQL."""
    import faulthandler
    import signal

    from connectors.clickhouse.runner import run_sink

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack: a stuck sink
    summary = run_sink(get_settings(), exit_when_idle=exit_when_idle)
    if exit_when_idle is not None:
        typer.echo(json.dumps(summary))


@app.command("webhook")
def webhook(
    url: str = typer.Option(..., "--url", help="integrator endpoint receiving POSTed alerts"),
    secret: str = typer.Option(
        ..., "--secret", envvar="ITS_WEBHOOK_SECRET", help="HMAC-SHA256 shared secret"
    ),
    group_id: str = typer.Option("its-webhook-sink", help="consumer group (one per endpoint)"),
    attempts: int = typer.Option(3, help="delivery attempts before the dead-letter topic"),
    backoff_s: float = typer.Option(0.5, help="first retry delay; doubled each attempt"),
    metrics_port: int = typer.Option(9105, help="/metrics and /healthz port (0: any free port)"),
) -> None:
    """POST each alert on its.alerts.v1 as signed JSON (X-ITS-Signature header); failures to its.dlq.v1."""
    from connectors.webhook import WebhookSink

    sink = WebhookSink(get_settings(), url, secret, group_id=group_id, attempts=attempts, backoff_s=backoff_s)
    sink.run(metrics_port=metrics_port)
