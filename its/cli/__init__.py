"""The `its` command: one entry point, one sub-command group per part of the system."""

from __future__ import annotations

import typer

from its.cli import bench, db, kafka, registry, topics
from its.logs import configure_logging
from its.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="ITS Camera AI on Kafka")
app.add_typer(kafka.app, name="kafka", help="Run the local Apache Kafka broker (KRaft) and schema registry")
app.add_typer(topics.app, name="topics", help="Create or update every topic from the catalogue")
app.add_typer(registry.app, name="registry", help="The local Confluent-compatible schema registry")
app.add_typer(db.app, name="db", help="ClickHouse schema migrations")
app.command("sql")(db.sql)
app.add_typer(bench.app, name="bench", help="Benchmarks: ours next to a peer, as JSON")


@app.callback()
def _setup() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@app.command()
def demo(
    keep_running: bool = typer.Option(False, help="leave the broker and registry running afterwards"),
) -> None:
    """Run the whole system on the embedded default and show what it did."""
    import os

    from its.demo import run_demo

    if "ITS_LOG_LEVEL" not in os.environ:  # the demo speaks through its tables; logs only for trouble
        configure_logging("WARNING", "text")
    if not run_demo(get_settings(), keep_running=keep_running):
        raise typer.Exit(1)


def main() -> None:
    app()
