"""``its demo``: bring up the embedded stack and show every part working, then leave nothing behind.

Foundation stage: broker + registry, topics from the catalogue, ClickHouse migrations, and one record
of every contract produced and read back through the registry.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from infra.topics import ensure_topics
from its.settings import Settings
from its.stack import Stack
from schemas import examples
from schemas.serde import TopicSerde, key_bytes


@dataclass(slots=True)
class RoundTrip:
    topic: str
    record: str
    partition: int
    offset: int
    schema_id: int
    size: int
    identical: bool


def round_trip_examples(settings: Settings) -> list[RoundTrip]:
    """Produce one example record per topic, read each back with read_committed, compare."""
    serde = TopicSerde(settings.schema_registry_url)
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    sent: dict[str, tuple[bytes, object]] = {}
    placed: dict[str, tuple[int, int]] = {}

    def delivered(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            raise RuntimeError(f"delivery to {msg.topic()} failed: {err}")
        placed[msg.topic()] = (msg.partition(), msg.offset())

    for topic, record in examples.example_records().items():
        value = serde.encode(topic, record)
        sent[topic] = (value, record)
        producer.produce(
            topic, value=value, key=key_bytes(getattr(record, "camera_id", "demo")), on_delivery=delivered
        )
    if producer.flush(30) != 0:
        raise RuntimeError("not every demo record was acknowledged within 30 s")

    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"its-demo-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    consumer.assign([TopicPartition(topic, p, o) for topic, (p, o) in placed.items()])
    received: dict[str, object] = {}
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(placed) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and (msg.partition(), msg.offset()) == placed[msg.topic()]:
                received[msg.topic()] = msg
    finally:
        consumer.close()
    missing = sorted(set(placed) - set(received))
    if missing:
        raise RuntimeError(f"could not read back {missing} within 30 s")
    results = []
    for topic, msg in received.items():
        value, record = sent[topic]
        partition, offset = placed[topic]
        results.append(
            RoundTrip(
                topic,
                type(record).__name__,
                partition,
                offset,
                int.from_bytes(msg.value()[1:5], "big"),
                len(value),
                msg.value() == value and serde.decode(msg) == record,
            )
        )
    return results


def run_demo(settings: Settings, keep_running: bool = False, console: Console | None = None) -> bool:
    """Run the demo; returns True when every check held."""
    console = console or Console(width=max(Console().width, 120))
    stack = Stack(settings)
    ok = True
    try:
        with console.status("starting Kafka and the schema registry"):
            stack.up()
        console.print(
            f"[green]✓[/] Kafka at {settings.kafka_bootstrap}, registry at {settings.schema_registry_url}"
            + (f" (started: {', '.join(stack.started)})" if stack.started else " (already running)")
        )

        changes = ensure_topics(settings.kafka_config())
        console.print("[green]✓[/] topics: " + ", ".join(f"{c.topic} {c.action}" for c in changes))

        from connectors.clickhouse.client import connect
        from connectors.clickhouse.migrate import migrate

        client = connect(settings.clickhouse_dsn)
        try:
            applied = migrate(client)
            tables = client.command("SELECT count() FROM system.tables WHERE database = currentDatabase()")
        finally:
            client.close()
        console.print(
            f"[green]✓[/] ClickHouse {settings.clickhouse_dsn}: {len(applied)} migrations applied, "
            f"{tables} tables"
        )

        table = Table(title="one record of every contract, produced and read back (read_committed)")
        for col in ("topic", "record", "partition@offset", "schema id", "bytes", "byte-exact"):
            table.add_column(col)
        for rt in round_trip_examples(settings):
            ok &= rt.identical
            table.add_row(
                rt.topic,
                rt.record,
                f"{rt.partition}@{rt.offset}",
                str(rt.schema_id),
                str(rt.size),
                "[green]yes[/]" if rt.identical else "[red]NO[/]",
            )
        console.print(table)
    finally:
        if not keep_running:
            stopped = stack.down()
            if stopped:
                console.print(f"stopped: {', '.join(stopped)}")
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo failed[/]")
    return ok
