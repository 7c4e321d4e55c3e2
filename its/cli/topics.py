"""`its topics ...`: make the cluster's topics match the catalogue, and show them."""

from __future__ import annotations

import typer
from confluent_kafka import KafkaException
from rich.console import Console
from rich.table import Table

from infra.topics import describe_topics, ensure_topics, list_topics
from its.settings import get_settings
from schemas.topics import BY_NAME, CATALOGUE

app = typer.Typer(no_args_is_help=True, help="Create or update every topic from the catalogue")
console = Console()
err = Console(stderr=True)


def _fail(exc: KafkaException) -> typer.Exit:
    settings = get_settings()
    err.print(f"[red]Kafka error at {settings.kafka_bootstrap}:[/] {exc.args[0] if exc.args else exc}")
    return typer.Exit(1)


@app.command()
def ensure(
    replication_factor: int = typer.Option(1, "--replication-factor", "-r", help="For topics created now"),
    timeout: float = typer.Option(30.0, help="Seconds per admin request"),
) -> None:
    """Create missing topics, correct configs, add partitions; idempotent."""
    settings = get_settings()
    try:
        changes = ensure_topics(
            settings.kafka_config(), replication_factor=replication_factor, timeout=timeout
        )
    except KafkaException as exc:
        raise _fail(exc) from None
    table = Table(title=f"Topics at {settings.kafka_bootstrap}")
    table.add_column("topic")
    table.add_column("action")
    table.add_column("details")
    colour = {"created": "green", "updated": "yellow", "unchanged": "dim"}
    for change in changes:
        table.add_row(change.topic, f"[{colour[change.action]}]{change.action}[/]", change.summary())
    console.print(table)


@app.command("list")
def list_() -> None:
    """Every topic in the cluster, and every catalogue topic that is missing from it."""
    settings = get_settings()
    try:
        topics = list_topics(settings.kafka_config(), timeout=10.0)
    except KafkaException as exc:
        raise _fail(exc) from None
    table = Table(title=f"Topics at {settings.kafka_bootstrap}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("catalogue")
    for name in sorted(set(topics) | set(BY_NAME)):
        if name in topics:
            table.add_row(name, str(topics[name]), "yes" if name in BY_NAME else "-")
        else:
            table.add_row(name, "-", "[red]missing[/]")
    console.print(table)


@app.command()
def describe(names: list[str] = typer.Argument(None, help="Topics (default: the catalogue)")) -> None:
    """Partitions, replication and topic-level configs."""
    settings = get_settings()
    wanted = names or [s.name for s in CATALOGUE]
    try:
        info = describe_topics(settings.kafka_config(), wanted, timeout=10.0)
    except KafkaException as exc:
        raise _fail(exc) from None
    table = Table(title=f"Topics at {settings.kafka_bootstrap}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("replicas", justify="right")
    table.add_column("topic configs")
    for name, t in info.items():
        if not t["exists"]:
            table.add_row(name, "-", "-", "[red]missing[/]")
            continue
        configs = "\n".join(f"{k}={v}" for k, v in t["configs"].items())
        table.add_row(name, str(t["partitions"]), str(t["replication_factor"]), configs)
    console.print(table)
    if any(not t["exists"] for t in info.values()):
        raise typer.Exit(1)
