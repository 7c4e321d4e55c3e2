"""``its replay``: rebuild analytics tables from Kafka retention into another database.

The live tables are not touched: the full schema is migrated into ``--into`` and the chosen
topics' records between ``--from`` and ``--to`` are decoded and inserted with the sink's own row
building and columnar writer. A time bound selects by the record's Kafka timestamp (producers
set it to the event time); an integer bound is an offset, the same on every partition. Inserts
carry ``replay-topic-partition-min-max`` tokens, so running the same replay twice adds nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.clickhouse.client import quote_identifier, use_database
from connectors.clickhouse.rows import TABLES, TableBuffer, keep_detection
from connectors.clickhouse.runner import ensure_schema
from connectors.clickhouse.writer import ArrowWriter
from schemas import records as r
from schemas.errors import RecordDecodeError
from schemas.serde import AvroDeserializer, TopicSerde, registry_client

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

    from its.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bound:
    """A replay bound: a Kafka timestamp in ms, or an offset."""

    ms: int | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str) -> Bound:
        """``2026-11-27T08:00:00Z`` (time, UTC when no zone), or ``12345`` (offset)."""
        text = text.strip()
        if text.isdigit():
            return cls(offset=int(text))
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{text!r} is neither an ISO time nor an offset") from exc
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls(ms=int(when.timestamp() * 1000))


def _positions(consumer: Consumer, topic: str, bound: Bound | None, default: str) -> dict[int, int]:
    """Partition -> offset where ``bound`` falls (``default``: 'low' or 'high' watermark)."""
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    if meta.error is not None:
        raise LookupError(f"topic {topic}: {meta.error}")
    out: dict[int, int] = {}
    parts = sorted(meta.partitions)
    if bound is not None and bound.ms is not None:
        found = consumer.offsets_for_times([TopicPartition(topic, p, bound.ms) for p in parts], timeout=30)
        for tp in found:
            if tp.offset < 0:  # no record at or after the time: the partition's end
                tp.offset = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=30)[1]
            out[tp.partition] = tp.offset
        return out
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if bound is not None and bound.offset is not None:
            out[p] = min(max(bound.offset, low), high)
        else:
            out[p] = low if default == "low" else high
    return out


def replay(
    settings: Settings,
    client: Client,
    topics: list[str],
    into: str,
    start: Bound,
    end: Bound | None = None,
    batch_rows: int = 50_000,
) -> dict[str, int]:
    """Replay ``topics`` (catalogue names) from ``start`` to ``end`` (exclusive) into database ``into``.

    Returns rows per table of ``into`` afterwards (rollups included).
    """
    cfg = settings.sink
    live = cfg.database or client.database or "default"
    if into == live:
        raise ValueError(f"--into {into!r} is the live database; replay rebuilds into another one")
    use_database(client, into)
    ensure_schema(client, cfg, into)
    writer = ArrowWriter(client, into)
    registry = registry_client(settings.schema_registry_url)
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"its-replay-{into}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        for name in topics:
            if name not in TABLES:
                raise ValueError(f"no analytics table for topic {name!r}; choose from {sorted(TABLES)}")
            real = cfg.topic_prefix + name
            decode: AvroDeserializer[Any] = AvroDeserializer(registry, TopicSerde.record_type(name))
            first = _positions(consumer, real, start, "low")
            last = _positions(consumer, real, end, "high")
            _replay_topic(consumer, writer, real, name, decode, first, last, start, end, batch_rows, cfg)
    finally:
        consumer.close()
        writer.close()
    rows: dict[str, int] = {}
    for (table,) in client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} "
        "AND engine NOT LIKE '%View' ORDER BY name",
        parameters={"db": into},
    ).result_rows:
        rows[table] = int(
            client.command(f"SELECT count() FROM {quote_identifier(into)}.{quote_identifier(table)}")
        )
    return rows


def _replay_topic(
    consumer: Consumer,
    writer: ArrowWriter,
    real: str,
    name: str,
    decode: AvroDeserializer[Any],
    first: dict[int, int],
    last: dict[int, int],
    start: Bound,
    end: Bound | None,
    batch_rows: int,
    cfg: Any,
) -> None:
    spec = TABLES[name]
    todo = {p: (first[p], last[p]) for p in first if first[p] < last.get(p, 0)}
    if not todo:
        return
    consumer.assign([TopicPartition(real, p, lo) for p, (lo, _hi) in todo.items()])
    buf, span = TableBuffer(spec), {}

    def flush() -> None:
        nonlocal buf, span
        if buf.rows:
            token = "replay-" + ",".join(f"{real}-{p}-{lo}-{hi}" for p, (lo, hi) in sorted(span.items()))
            writer.insert(spec.table, buf.to_arrow(), token)
        buf, span = TableBuffer(spec), {}

    pending = set(todo)
    while pending:
        for msg in consumer.consume(num_messages=10_000, timeout=1.0):
            p = msg.partition() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(p)
                continue
            offset = msg.offset() or 0
            if p not in pending or offset >= todo[p][1]:
                pending.discard(p)
                continue
            ts = msg.timestamp()[1]
            if (start.ms is not None and ts < start.ms) or (
                end is not None and end.ms is not None and ts >= end.ms
            ):
                continue
            try:
                record = decode(msg.value(), real, p, offset)
            except RecordDecodeError:
                continue  # the live sink sent it to the DLQ; a replay rebuilds tables only
            if isinstance(record, r.Detections) and not keep_detection(record, cfg.detections_sample):
                continue
            buf.add(record, p, offset)
            lo_hi = span.get(p)
            span[p] = (lo_hi[0], offset) if lo_hi else (offset, offset)
            if offset + 1 >= todo[p][1]:
                pending.discard(p)
            if buf.rows >= batch_rows:
                flush()
    flush()
    consumer.unassign()
