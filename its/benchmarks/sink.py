"""``its bench sink``: rows/s through the exactly-once sink next to a plain bulk insert (the ceiling).

Ours: the same records produced to a fresh topic, then consumed by ``ClickHouseSink`` in this
process (read_committed, Avro decode, Arrow build, intent, deduplicated insert, rollup views,
Kafka commit) until every row is in ClickHouse. Peer: one ``clickhouse-connect`` column-oriented
``insert`` of the same rows, already as Python columns, into a table of the same schema in the
same engine (no Kafka, no decode, no bookkeeping). Both write to the embedded store; the same two
cases run against a ClickHouse server over HTTP (``--clickhouse-url``, else an ``http(s)://``
``ITS_CLICKHOUSE_URL``), and print null with the reason when none is given or none answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.clickhouse import sample_data
from connectors.clickhouse.client import connect, quote_identifier, use_database
from connectors.clickhouse.dsn import parse_dsn
from connectors.clickhouse.rows import TABLES, TableBuffer
from connectors.clickhouse.runner import ensure_schema
from connectors.clickhouse.sink import ClickHouseSink
from infra.topics import ensure_topics
from its.benchmarks.report import BenchReport, Case, machine
from its.settings import Settings
from schemas import topics as t

PEER = "clickhouse-connect bulk insert (no Kafka)"
TARGET = "ratio >= 0.7"
SERVER = "ClickHouse server"
TOPICS = ((t.DETECTIONS, "detections"), (t.EVENTS, "events"))


@dataclass(slots=True)
class SinkCase(Case):
    """A case of this bench; ``reason`` says why ``ours``/``peer`` are null (nothing measured)."""

    reason: str | None = None


def _records(n: int) -> dict[str, list[Any]]:
    """``n`` simulated records of each benched topic, from one pass of the generator."""
    out: dict[str, list[Any]] = {topic: [] for topic, _ in TOPICS}
    for name, record in sample_data.generate(n * 8, seed=99):
        rows = out.get(name)
        if rows is not None and len(rows) < n:
            rows.append(record)
            if all(len(v) >= n for v in out.values()):
                break
    return out


def _ceiling(client: Any, database: str, topic: str, records: list[Any]) -> float:
    """Rows/s of one column-oriented insert of ``records`` (columns built before the clock starts)."""
    spec = TABLES[topic]
    buf = TableBuffer(spec)
    for i, rec in enumerate(records):
        buf.add(rec, 0, i)
    # The same values the sink starts from, minus Kafka and Avro, in the shapes clickhouse-connect takes.
    columns: list[list[Any]] = []
    for col, field in zip(buf._cols, spec.schema, strict=True):
        if pa.types.is_map(field.type):
            col = [dict(v) for v in col]
        elif pa.types.is_timestamp(field.type):
            col = [None if v is None else datetime.fromtimestamp(v / 1000, UTC) for v in col]
        columns.append(col)
    table = f"{quote_identifier(database)}.{quote_identifier(spec.table)}"
    client.command(f"TRUNCATE TABLE {table}")
    started = time.perf_counter()
    client.insert(spec.table, columns, column_names=spec.names, database=database, column_oriented=True)
    return len(records) / (time.perf_counter() - started)


def _through_sink(settings: Settings, client: Any, database: str, topic: str, expected: int) -> float:
    """Rows/s from the first record in the sink's hands (consumer started and fetching: startup is
    not throughput) to the last row written, every record's decode and insert included."""
    with contextlib.suppress(ImportError):
        # pyarrow imports pandas on its first array built from numpy: a running sink has paid that
        # long ago, so it is paid here, outside the clock (as report.rate warms up its function).
        import pandas  # noqa: F401
    sink = ClickHouseSink(settings, client, database)
    try:
        sink.subscribe()
        started: float | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            sink.poll_once(0.2)
            started = sink.first_record_at
            if started is not None and sink.rows_by_table.get(TABLES[topic].table, 0) >= expected:
                return expected / (time.perf_counter() - started)
        raise TimeoutError(f"the sink wrote {dict(sink.rows_by_table)} of {expected} rows in 600 s")
    finally:
        sink.close()


def _run_target(
    settings: Settings, dsn: str, label: str, records: dict[str, list[Any]], report: BenchReport
) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    specs = [
        dataclasses.replace(s, name=prefix + s.name)
        for s in t.CATALOGUE
        if s.name in (t.DETECTIONS, t.EVENTS)
    ]
    ensure_topics(settings.kafka_config(), specs)
    client = connect(dsn)
    try:
        for topic, name in TOPICS:
            rows = records[topic]
            sample_data.produce(
                settings.kafka_config(), settings.schema_registry_url, [(topic, r) for r in rows], prefix
            )
            db_sink, db_peer = f"bench_sink_{uuid.uuid4().hex[:6]}", f"bench_peer_{uuid.uuid4().hex[:6]}"
            for db in (db_sink, db_peer):
                use_database(client, db)
                ensure_schema(client, settings.sink, db)
            group = f"bench-{uuid.uuid4().hex[:6]}"
            # A batch ends at the backlog's end at the latest: the batch timer (batch_ms) would add
            # idle time, not work, to the figure.
            batch_rows = min(settings.sink.batch_rows, len(rows))
            sink_cfg = settings.sink.model_copy(
                update={"topics": [topic], "topic_prefix": prefix, "group_id": group, "database": db_sink,
                        "batch_rows": batch_rows}
            )  # fmt: skip
            sink_settings = settings.model_copy(update={"sink": sink_cfg})
            ours = _through_sink(sink_settings, client, db_sink, topic, len(rows))
            peer = _ceiling(client, db_peer, topic, rows)
            got = int(client.command(f"SELECT count() FROM {quote_identifier(db_sink)}.{name}"))
            assert got == len(rows), f"sink wrote {got} of {len(rows)} {name} rows"
            report.cases.append(
                SinkCase(
                    f"{name} into {label}", "throughput", "rows/s", round(ours), round(peer), PEER, TARGET
                )
            )
            for db in (db_sink, db_peer):
                client.command(f"DROP DATABASE IF EXISTS {quote_identifier(db)} SYNC")
    finally:
        client.close()


def _server_url(settings: Settings, server: str | None) -> str | None:
    """The server leg's URL: ``server``, else the configured DSN when it names an HTTP(S) server."""
    if server:
        return server
    return settings.clickhouse_dsn if not parse_dsn(settings.clickhouse_dsn).embedded else None


def _unreachable(url: str | None) -> str | None:
    """Why the server leg cannot run (None: it can)."""
    if url is None:
        return "no ClickHouse server URL given (--clickhouse-url or ITS_CLICKHOUSE_URL=http://...)"
    try:
        target = parse_dsn(url)
    except ValueError as exc:
        return f"not a ClickHouse URL: {exc}"
    if target.embedded:
        return f"{target.describe()} is not an http(s):// server URL"
    try:
        client = connect(url, connect_timeout=5)
    except Exception as exc:  # clickhouse-connect's errors vary: connection refused, auth, DNS ...
        return f"no ClickHouse server reachable at {target.describe()}: {exc}"[:500]
    client.close()
    return None


def run(
    settings: Settings, records: int = 50_000, server: str | None = None, store: Path | None = None
) -> BenchReport:
    """Detections and events through the sink vs the bulk-insert ceiling, embedded and on a server."""
    report = BenchReport("sink", machine())
    rows = _records(records)
    path = store or settings.data_path / f"bench-sink-{uuid.uuid4().hex[:6]}"
    _run_target(settings, f"chdb://{path}", "embedded chdb", rows, report)
    url = _server_url(settings, server)
    why = _unreachable(url)
    if why is None:
        assert url is not None
        _run_target(settings, url, SERVER, rows, report)
    else:
        for _topic, name in TOPICS:
            # ours/peer are null on purpose: nothing was measured, and ``reason`` says why.
            nothing: Any = None
            case = SinkCase(f"{name} into {SERVER}", "throughput", "rows/s", nothing, None, PEER, TARGET)
            case.reason = why
            report.cases.append(case)
    return report
