"""The exactly-once ClickHouse sink: Kafka topics -> analytics tables, with offsets stored in ClickHouse.

How a batch is written (``flush``), so that a kill at any moment neither loses nor doubles a row:

1. Undecodable records were already sent to the DLQ topic; the DLQ producer is flushed.
2. **Intent**: one ``sink_offsets`` row per (topic, partition) of the batch — min and max offset and
   the table's token ``topic-partition-min-max[,...]`` — is inserted *before* any data. The batch's
   boundaries are now fixed in ClickHouse, whatever triggered the flush (rows, bytes or time).
3. One columnar insert per table, carrying that token as ``insert_deduplication_token``.
4. Kafka offsets are committed (asynchronously) only so that Kafka tooling shows the lag.

On start and on every assignment, each partition is positioned at its last intent's max + 1, and
that last intent is **redone**: its exact offset range is re-read, rebuilt, and inserted again with
the same token unless all its rows are already there (``_partition``/``_offset`` columns). A block
that did land is dropped by the deduplication window; one that did not is written now.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from connectors.clickhouse.rows import (
    COLUMNAR,
    TABLES,
    ColumnarRows,
    TableBuffer,
    keep_detection,
    keep_detections,
    reader_schema_check,
)
from connectors.clickhouse.writer import ArrowWriter
from infra.kafka.signing import Verifier
from schemas import records as r
from schemas import topics as t
from schemas.errors import RecordDecodeError
from schemas.serde import AvroDeserializer, TopicSerde, registry_client

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

    from its.settings import Settings

log = logging.getLogger(__name__)

COMPONENT = "clickhouse-sink"

ROWS = Counter("its_sink_rows_total", "Rows inserted per table", ["table"])
BYTES = Counter("its_sink_bytes_total", "Arrow bytes inserted per table", ["table"])
BATCH_SECONDS = Histogram(
    "its_sink_batch_seconds",
    "Wall time of one flush (intent + inserts)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCHES = Counter("its_sink_batches_total", "Flushed batches")
LAG = Gauge("its_sink_lag", "Records behind the high watermark", ["topic", "partition"])
DEDUP_HITS = Counter(
    "its_sink_dedup_hits_total", "Redone batches whose rows were already in ClickHouse", ["table"]
)
REDOS = Counter("its_sink_redo_total", "Last batches re-read and re-inserted on assignment", ["table"])
DLQ = Counter("its_sink_dlq_total", "Records sent to the dead-letter topic", ["topic"])

DEAD_LETTER_COLUMNS = ["topic", "partition", "offset", "key", "reason", "error_type", "payload"]


def table_token(ranges: Iterable[tuple[str, int, int, int]]) -> str:
    """``topic-partition-min-max`` of each range, sorted, comma-joined: the batch's dedup token."""
    return ",".join(f"{tp}-{p}-{lo}-{hi}" for tp, p, lo, hi in sorted(ranges))


@dataclass
class _Batch:
    """What the sink buffered since its last flush."""

    tables: dict[str, TableBuffer] = field(default_factory=dict)
    ranges: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # -> [min, max, count]
    dead: list[tuple[Any, ...]] = field(default_factory=list)
    bytes: int = 0
    records: int = 0
    started: float = 0.0

    def note_many(self, topic: str, partitions: np.ndarray, offsets: np.ndarray, size: int) -> None:
        """Record a chunk of one topic's records: ranges per partition, count and ``size`` value bytes."""
        if not offsets.size:
            return
        if not self.records:
            self.started = time.monotonic()
        parts = np.unique(partitions)
        for p in parts.tolist():
            sel = offsets if parts.size == 1 else offsets[partitions == p]
            lo, hi, n = int(sel.min()), int(sel.max()), int(sel.size)
            span = self.ranges.get((topic, p))
            if span is None:
                self.ranges[(topic, p)] = [lo, hi, n]
            else:
                span[0], span[1], span[2] = min(span[0], lo), max(span[1], hi), span[2] + n
        self.records += int(offsets.size)
        self.bytes += size


class _Chunk:
    """The fields of consumed records, read once from the Message objects."""

    __slots__ = ("_groups", "msgs", "offsets", "partitions", "topics", "values")

    def __init__(self, msgs: list[Message]) -> None:
        self.msgs = msgs
        # Plain list comprehensions: the cheapest way through 10,000 Message objects (no `or` per item:
        # a consumed record always has its topic, partition and offset).
        self.topics = [m.topic() for m in msgs]
        self.partitions = np.array([m.partition() for m in msgs], np.int64)
        self.offsets = np.array([m.offset() for m in msgs], np.int64)
        self.values = [m.value() for m in msgs]
        self._groups: dict[str, np.ndarray] | None = None

    def pick(self, items: list[Any], idx: np.ndarray) -> list[Any]:
        """``items`` at ``idx`` (the list itself when ``idx`` is every record, the usual case)."""
        return items if idx.size == len(items) else [items[i] for i in idx.tolist()]

    def by_topic(self) -> dict[str, np.ndarray]:
        """Topic -> indexes of its records, in consumption order."""
        if self._groups is None:
            if not self.topics or self.topics.count(self.topics[0]) == len(self.topics):
                self._groups = {self.topics[0]: np.arange(len(self.topics))} if self.topics else {}
            else:
                names = sorted(set(self.topics))
                code = np.array([names.index(tp) for tp in self.topics])
                self._groups = {tp: np.flatnonzero(code == i) for i, tp in enumerate(names)}
        return self._groups


class ClickHouseSink:
    """Consumes the sink topics and writes them to ClickHouse exactly once (see the module doc)."""

    def __init__(self, settings: Settings, client: Client, database: str, *, columnar: bool = True) -> None:
        self.settings = settings
        self.cfg = settings.sink
        self.client = client
        self.database = database
        self.writer = ArrowWriter(client, database)
        self.lock = threading.RLock()  # held by a flush; a backup through the endpoint takes it too
        registry = registry_client(settings.schema_registry_url)
        prefix = self.cfg.topic_prefix
        # Real topic name -> catalogue name; records are decoded by the catalogue's contract.
        self.catalogue: dict[str, str] = {prefix + name: name for name in self.cfg.topics}
        unknown = [n for n in self.cfg.topics if n not in TABLES]
        if unknown:
            raise ValueError(f"no analytics table for topic(s) {unknown}; sinkable: {sorted(TABLES)}")
        self.decoders: dict[str, AvroDeserializer[Any]] = {
            real: AvroDeserializer(registry, TopicSerde.record_type(name))
            for real, name in self.catalogue.items()
        }
        # The high-volume topics are decoded a whole chunk at a time, straight to Arrow (rows.COLUMNAR).
        self.columnar: dict[str, ColumnarRows] = {
            real: ColumnarRows(name, reader_schema_check(self.decoders[real]))
            for real, name in self.catalogue.items()
            if columnar and name in COLUMNAR
        }
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": self.cfg.group_id,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                    "statistics.interval.ms": 5000,
                    # A killed sink's partitions are reassigned after this long, not the 45 s default.
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 2_000,
                    **({"group.instance.id": self.cfg.instance_id} if self.cfg.instance_id else {}),
                    "stats_cb": self._on_stats,
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    "max.partition.fetch.bytes": 8 * 1024 * 1024,
                }
            ),
            logger=logging.getLogger("connectors.clickhouse.librdkafka"),
        )
        self.dlq = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
        self.verifier = Verifier.from_settings(settings)  # secure deployments: signed edge records only
        self.dlq_serde = TopicSerde(registry)
        self.batch = _Batch()
        self.assigned: set[tuple[str, int]] = set()
        self.at_eof: set[tuple[str, int]] = set()
        self.flushes = 0
        self.last_flush_ok = time.time()
        self.last_error: str | None = None
        self.rows_by_table: dict[str, int] = defaultdict(int)
        self.first_record_at: float | None = None  # perf_counter when a record was first in hand

    # --- life cycle ------------------------------------------------------------------------------

    def subscribe(self) -> None:
        self.consumer.subscribe(list(self.catalogue), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def poll_once(self, timeout: float = 0.5) -> int:
        """Consume what is there (up to ~10k records), flush when a trigger fires; returns records seen."""
        # Never more than the batch has room for: a batch holds at most batch_rows records.
        room = max(1, min(10_000, self.cfg.batch_rows - self.batch.records))
        msgs = self.consumer.consume(num_messages=room, timeout=timeout)
        consumed_at = time.perf_counter()
        with self.lock:
            records = []
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self.at_eof.add((msg.topic() or "", msg.partition() or 0))
                        continue
                    log.warning("consumer error", extra={"error": str(err)})
                    continue
                records.append(msg)
                if self.at_eof:  # in order: an EOF later in this chunk still counts
                    self.at_eof.discard((msg.topic() or "", msg.partition() or 0))
            if records:
                if self.first_record_at is None:
                    self.first_record_at = consumed_at
                self._add_many(records)
            if self._due():
                self.flush()
        return len(records)

    def caught_up(self) -> bool:
        """Every assigned partition reached its end and nothing is buffered."""
        return bool(self.assigned) and self.assigned <= self.at_eof and not self.batch.records

    def close(self) -> None:
        """Flush what is buffered, commit and leave the group."""
        with self.lock:
            if self.batch.records:
                self.flush()
        self.consumer.close()
        self.dlq.flush(10)
        self.writer.close()

    # --- consuming -------------------------------------------------------------------------------

    def _add_many(self, msgs: list[Message]) -> None:
        """Note a consumed chunk in the batch and build its rows (``_build_many``)."""
        chunk = _Chunk(msgs)
        seq0 = self.batch.records
        for topic, idx in chunk.by_topic().items():
            parts = chunk.partitions[idx]
            size = sum(map(len, filter(None, chunk.pick(chunk.values, idx))))
            self.batch.note_many(topic, parts, chunk.offsets[idx], size)
        # note_many numbers records topic by topic; rows keep their order within the chunk (seq0 + i).
        self._build_many(self.batch, chunk, send_dlq=True, seq0=seq0)

    def _build_many(self, batch: _Batch, chunk: _Chunk, *, send_dlq: bool, seq0: int = 0) -> None:
        """Build a chunk's rows: columnar for the ``COLUMNAR`` topics, record by record for the rest."""
        for topic, idx in chunk.by_topic().items():
            slow = idx
            columnar = self.columnar.get(topic)
            if columnar is not None:
                if self.verifier is not None:  # refused records: the record path dead-letters them
                    fine = np.array([self.verifier.check(chunk.msgs[i]) is None for i in idx.tolist()], bool)
                    idx, refused = idx[fine], idx[~fine]
                else:
                    refused = idx[:0]
                table, rows, rest = columnar.build(
                    chunk.pick(chunk.values, idx), chunk.partitions[idx], chunk.offsets[idx]
                )
                if table is not None:
                    rows = idx[rows]
                    if self.catalogue[topic] == t.DETECTIONS and self.cfg.detections_sample < 1.0:
                        keep = keep_detections(table, self.cfg.detections_sample)
                        table, rows = table.filter(keep), rows[keep]
                    spec = TABLES[self.catalogue[topic]]
                    buf = batch.tables.get(spec.table)
                    if buf is None:
                        buf = batch.tables[spec.table] = TableBuffer(spec)
                    buf.add_table(table, seq0 + rows)
                slow = np.sort(np.concatenate([refused, idx[rest]]))
            for i in slow.tolist():
                self._build(batch, chunk.msgs[i], send_dlq=send_dlq, seq=seq0 + i)

    def _build(self, batch: _Batch, msg: Message, *, send_dlq: bool, seq: int = -1) -> None:
        """Decode ``msg`` into ``batch``'s table buffer, or into its dead letters."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        refused = self.verifier.check(msg) if self.verifier is not None else None
        if refused is not None:
            self._dead(batch, msg, refused, "RecordSignatureError", send_dlq)
            return
        try:
            record = self.decoders[topic](msg.value(), topic, partition, offset)
        except RecordDecodeError as exc:
            self._dead(batch, msg, exc.reason, type(exc).__name__, send_dlq)
            return
        if isinstance(record, r.Detections) and not keep_detection(record, self.cfg.detections_sample):
            return
        spec = TABLES[self.catalogue[topic]]
        buf = batch.tables.get(spec.table)
        if buf is None:
            buf = batch.tables[spec.table] = TableBuffer(spec)
        try:
            buf.add(record, partition, offset, seq)
        except (TypeError, ValueError, AttributeError) as exc:  # decoded but does not fit the table
            self._dead(batch, msg, f"does not fit table {spec.table}: {exc!r}", type(exc).__name__, send_dlq)

    def _dead(self, batch: _Batch, msg: Message, reason: str, error_type: str, send: bool) -> None:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        key, value = msg.key() or b"", msg.value() or b""
        batch.dead.append(
            (topic, partition, offset, key.decode("utf-8", "replace"), reason, error_type,
             base64.b64encode(value).decode())
        )  # fmt: skip
        if not send:
            return  # a redo: the first pass already sent it
        letter = r.DeadLetter(
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            reason=reason,
            error_type=error_type,
            component=COMPONENT,
            ts_ms=int(time.time() * 1000),
            key=key or None,
            payload=value or None,
        )
        self.dlq.produce(self.cfg.dlq_topic, self.dlq_serde.encode(t.DLQ, letter), key=key or None)
        DLQ.labels(topic).inc()
        log.warning("record sent to the DLQ", extra={"topic": topic, "partition": partition, "offset": offset,
                                                     "reason": reason})  # fmt: skip

    def _due(self) -> bool:
        b = self.batch
        if not b.records:
            return False
        return (
            b.records >= self.cfg.batch_rows
            or b.bytes >= self.cfg.batch_bytes
            or (time.monotonic() - b.started) * 1000 >= self.cfg.batch_ms
        )

    # --- writing ---------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the buffered batch: intent, then one insert per table, then the Kafka commit."""
        with self.lock:
            batch, self.batch = self.batch, _Batch()
            if not batch.records:
                return
            started = time.perf_counter()
            self.flushes += 1
            if batch.dead and self.dlq.flush(30) > 0:
                raise RuntimeError("the DLQ producer could not deliver within 30 s; not committing the batch")
            tokens = self._tokens(batch.ranges)
            self._insert_intents(batch.ranges, tokens)
            self._maybe_crash("after_intent")
            self._write_tables(batch, tokens, redo=False)
            self._insert_intents(batch.ranges, tokens, landed=True)
            self._maybe_crash("after_insert")
            self.consumer.commit(
                offsets=[TopicPartition(tp, p, span[1] + 1) for (tp, p), span in batch.ranges.items()],
                asynchronous=True,
            )
            elapsed = time.perf_counter() - started
            BATCH_SECONDS.observe(elapsed)
            BATCHES.inc()
            log.info(
                "batch written",
                extra={"flush": self.flushes, "records": batch.records, "ms": round(elapsed * 1000, 1),
                       "rows": {k: v.rows for k, v in batch.tables.items()}},
            )  # fmt: skip
            self.last_flush_ok = time.time()

    def _tokens(self, ranges: dict[tuple[str, int], list[int]]) -> dict[str, str]:
        per_topic: dict[str, list[tuple[str, int, int, int]]] = defaultdict(list)
        for (tp, p), (lo, hi, _n) in ranges.items():
            per_topic[tp].append((tp, p, lo, hi))
        return {tp: table_token(rs) for tp, rs in per_topic.items()}

    def _insert_intents(
        self, ranges: dict[tuple[str, int], list[int]], tokens: dict[str, str], *, landed: bool = False
    ) -> None:
        """One sink_offsets row per range: the intent before the inserts, ``landed`` after them all."""
        rows = [
            [self.cfg.group_id, tp, p, lo, hi, n, tokens[tp], int(landed)]
            for (tp, p), (lo, hi, n) in sorted(ranges.items())
        ]
        digest = hashlib.sha1("|".join(sorted(tokens.values())).encode()).hexdigest()
        self.client.insert(
            "sink_offsets",
            rows,
            column_names=[
                "consumer_group",
                "topic",
                "partition",
                "min_offset",
                "max_offset",
                "rows",
                "dedup_token",
                "landed",
            ],
            database=self.database,
            settings={"insert_deduplication_token": f"{'landed' if landed else 'intent'}-{digest}"},
        )

    def _write_tables(
        self, batch: _Batch, tokens: dict[str, str], *, redo: bool, refill: bool = False
    ) -> None:
        """One insert per table. ``redo``: skip tables whose rows are all there, unless ``refill``."""
        first = True
        for table, buf in batch.tables.items():
            topic = next(real for real, name in self.catalogue.items() if TABLES[name].table == table)
            token = tokens[topic]
            data = buf.to_arrow()
            if redo and self._already_there(table, buf, batch.ranges, topic):
                DEDUP_HITS.labels(table).inc()
                if not refill:
                    continue
                # Rows there, batch not landed: killed inside the INSERT, maybe before the rollup
                # views took their part. The same token: the table drops it, each view takes what
                # it lacks (migration 0004).
                log.info("re-inserting a batch that did not land", extra={"table": table, "token": token})
                self.writer.insert(table, data, token)
                continue
            self.writer.insert(table, data, token)
            ROWS.labels(table).inc(data.num_rows)
            BYTES.labels(table).inc(data.nbytes)
            self.rows_by_table[table] += data.num_rows
            if first:
                first = False
                self._maybe_crash("mid_insert")
        by_topic: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in batch.dead:
            by_topic[row[0]].append(row)
        for topic, rows in by_topic.items():  # per topic: a redo of one topic's range gets the same token
            if redo:
                rows = self._dead_letters_missing(topic, rows)
                if not rows:
                    continue
            dead = pa.table(list(zip(*rows, strict=True)), names=DEAD_LETTER_COLUMNS)
            self.writer.insert("dead_letters", dead, "dlq-" + tokens[topic])

    def _dead_letters_missing(self, topic: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The dead letters of a redone range that the first pass did not store yet."""
        keys = ", ".join(f"({int(row[1])}, {int(row[2])})" for row in rows)
        present = self.client.query(
            f"SELECT partition, offset FROM {self.database}.dead_letters "
            f"WHERE topic = {{t:String}} AND (partition, offset) IN ({keys})",
            parameters={"t": topic},
        ).result_rows
        seen = {(int(p), int(o)) for p, o in present}
        return [row for row in rows if (int(row[1]), int(row[2])) not in seen]

    def _already_there(
        self, table: str, buf: TableBuffer, ranges: dict[tuple[str, int], list[int]], topic: str
    ) -> bool:
        conds = " OR ".join(
            f"(_partition = {p} AND _offset BETWEEN {lo} AND {hi})"
            for (tp, p), (lo, hi, _n) in ranges.items()
            if tp == topic
        )
        present = int(self.client.command(f"SELECT count() FROM {self.database}.{table} WHERE {conds}"))
        if present > buf.rows:
            log.error("more rows than the batch holds", extra={"table": table, "present": present,
                                                                "batch": buf.rows})  # fmt: skip
        return present >= buf.rows

    def _maybe_crash(self, point: str) -> None:
        """TEST ONLY: die by SIGKILL at ``point`` of the configured flush (ITS_SINK__CRASH_AT)."""
        if self.cfg.crash_at == point and self.flushes == self.cfg.crash_after_batches:
            log.warning("test hook: SIGKILL", extra={"point": point, "flush": self.flushes})
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    # --- assignment: position at the stored offsets and redo the last batch -----------------------

    def stored_intents(self) -> dict[tuple[str, int], tuple[int, int, str, bool]]:
        """(topic, partition) -> (min, max, token, landed) of the last batch recorded for this group."""
        result = self.client.query(
            # (max_offset, landed): the last batch, its landed row when there is one.
            "SELECT topic, partition, argMax(min_offset, (max_offset, landed)), max(max_offset), "
            "argMax(dedup_token, (max_offset, landed)), argMax(landed, (max_offset, landed)) "
            "FROM sink_offsets WHERE consumer_group = {g:String} AND topic IN {topics:Array(String)} "
            "GROUP BY topic, partition",
            parameters={"g": self.cfg.group_id, "topics": list(self.catalogue)},
        )
        return {
            (tp, int(p)): (int(lo), int(hi), tok, bool(landed))
            for tp, p, lo, hi, tok, landed in result.result_rows
        }

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self.lock:
            stored = self.stored_intents()
            mine = {(tp.topic, tp.partition) for tp in partitions}
            self.redo({k: v for k, v in stored.items() if k in mine})
            for tp in partitions:
                last = stored.get((tp.topic, tp.partition))
                # ClickHouse is the truth: no intent means nothing of it is stored, so from the start.
                tp.offset = last[1] + 1 if last else OFFSET_BEGINNING
            consumer.assign(partitions)
            self.assigned = mine
            self.at_eof -= mine
            known = sum(1 for k in mine if k in stored)
            log.info("partitions assigned", extra={"partitions": len(partitions), "stored": known})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self.lock:
            if self.batch.records:
                self.flush()
            self.assigned -= {(tp.topic, tp.partition) for tp in partitions}

    def redo(self, last: dict[tuple[str, int], tuple[int, int, str, bool]]) -> None:
        """Re-read each partition's last intent range and write it again where rows are missing.

        Ranges are grouped by their recorded token (one original insert each) and each group is
        rebuilt and written with that same token, so it collides with the original insert. A group
        that never landed is written again even where its rows are there (see migration 0004).
        """
        if not last:
            return
        groups: dict[str, _Batch] = defaultdict(_Batch)
        landed: dict[str, bool] = {}
        for (tp, p), (lo, hi, tok, done) in last.items():
            groups[tok].ranges[(tp, p)] = [lo, hi, 0]
            landed[tok] = landed.get(tok, True) and done
        reader = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"{self.cfg.group_id}-redo",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                }
            )
        )
        try:
            pending = {k: v[1] for k, v in last.items()}
            ranges: dict[str, list[Message]] = defaultdict(list)  # recorded token -> its records
            reader.assign([TopicPartition(tp, p, v[0]) for (tp, p), v in last.items()])
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                for msg in reader.consume(num_messages=10_000, timeout=0.5):
                    key = (msg.topic() or "", msg.partition() or 0)
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.pop(key, None)  # the range ends at a transaction marker
                        continue
                    hi = pending.get(key)
                    if hi is None or (msg.offset() or 0) > hi:
                        continue
                    ranges[last[key][2]].append(msg)
                    if (msg.offset() or 0) >= hi:
                        pending.pop(key, None)
            if pending:
                raise RuntimeError(f"could not re-read the last batch of {sorted(pending)} within 60 s")
        finally:
            reader.close()
        for token, msgs in ranges.items():
            self._build_many(groups[token], _Chunk(msgs), send_dlq=False)
        log.info(
            "redoing the last batch of each partition", extra={"groups": len(groups), "partitions": len(last)}
        )
        for recorded, batch in groups.items():
            topic = next(iter(batch.ranges))[0]
            owned = table_token((tp, p, lo, hi) for (tp, p), (lo, hi, _n) in batch.ranges.items())
            # The group's insert named every range; after a rebalance this sink may own only some.
            # Then the recorded token would be dropped as a duplicate of the other owner's redo,
            # so a subset goes in under its own token (the presence check still prevents doubles).
            token = recorded if owned == recorded else f"{recorded}#{owned}"
            for table in batch.tables:
                REDOS.labels(table).inc()
            self._write_tables(
                batch, {topic: token}, redo=True, refill=token == recorded and not landed[recorded]
            )

    # --- observability -----------------------------------------------------------------------------

    def _on_stats(self, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
            for topic, tstats in stats.get("topics", {}).items():
                for pid, pstats in tstats.get("partitions", {}).items():
                    lag = pstats.get("consumer_lag", -1)
                    if int(pid) >= 0 and lag is not None and lag >= 0:
                        LAG.labels(topic, pid).set(lag)
        except (ValueError, TypeError, AttributeError):
            log.debug("unreadable librdkafka statistics", exc_info=True)

    def health(self) -> tuple[bool, dict[str, Any]]:
        stale = time.time() - self.last_flush_ok
        busy = self.batch.records > 0
        ok = not (busy and stale > max(60.0, 10 * self.cfg.batch_ms / 1000))
        return ok, {
            "assigned_partitions": len(self.assigned),
            "buffered_records": self.batch.records,
            "seconds_since_flush": round(stale, 1),
            "flushes": self.flushes,
            "rows": dict(self.rows_by_table),
            "last_error": self.last_error,
        }
