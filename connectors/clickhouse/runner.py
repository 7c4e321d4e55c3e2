"""Running the sink as a process: open the store, migrate, serve metrics and the query endpoint, loop."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from connectors.clickhouse.client import connect, use_database
from connectors.clickhouse.dsn import MEMORY, parse_dsn
from connectors.clickhouse.endpoint import ENDPOINT_FILE, QueryServer, write_endpoint_file
from connectors.clickhouse.migrate import migrate
from connectors.clickhouse.sink import ClickHouseSink
from its.service import Service

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

    from connectors.settings import SinkSettings
    from its.settings import Settings

log = logging.getLogger(__name__)


def schema_variables(cfg: SinkSettings) -> dict[str, object]:
    """The ``${...}`` values of the analytics migrations, from the sink settings."""
    return {
        "ttl_detections_days": cfg.ttl_detections_days,
        "ttl_events_days": cfg.ttl_events_days,
        "ttl_health_days": cfg.ttl_health_days,
        "ttl_hourly_days": cfg.ttl_hourly_days,
        "ttl_aggregates_days": cfg.ttl_aggregates_days,
    }


def ensure_schema(client: Client, cfg: SinkSettings, database: str) -> None:
    """Apply pending migrations to ``database`` with the settings' TTLs and engine family."""
    replica = (cfg.replica_path, cfg.replica_name) if cfg.replicated else None
    migrate(client, database, variables=schema_variables(cfg), replica=replica)


def sink_database(settings: Settings) -> str:
    """The analytics database: the sink setting, else the DSN's, else ``default``."""
    return settings.sink.database or parse_dsn(settings.clickhouse_dsn).database or "default"


def run_sink(settings: Settings, exit_when_idle: float | None = None) -> dict[str, Any]:
    """Run until SIGTERM (or, with ``exit_when_idle``, until caught up and idle that long)."""
    cfg = settings.sink
    target = parse_dsn(settings.clickhouse_dsn)
    database = sink_database(settings)
    client = connect(settings.clickhouse_dsn)
    with ExitStack() as stack:
        stack.callback(client.close)
        use_database(client, database)
        ensure_schema(client, cfg, database)
        sink = ClickHouseSink(settings, client, database)
        stack.callback(sink.writer.close)
        service = stack.enter_context(Service("clickhouse-sink", port=cfg.metrics_port, health=sink.health))
        if target.embedded and target.path not in (None, MEMORY) and cfg.query_enabled:
            server = QueryServer(
                target.path,  # type: ignore[arg-type]
                cfg.query_host,
                cfg.query_port,
                (cfg.query_user, cfg.query_password),
                cfg.query_max_rows,
                backup=lambda sql: _backup(sink, sql),
            ).start()
            stack.callback(server.close)
            endpoint = write_endpoint_file(target.path, server.url, cfg.query_user, service.url)  # type: ignore[arg-type]
            stack.callback(lambda: endpoint.unlink(missing_ok=True))
            log.info("query endpoint", extra={"url": server.url, "file": str(endpoint)})
        sink.subscribe()
        idle_since = time.monotonic()
        try:
            while not service.stopping:
                if sink.poll_once(0.5):
                    idle_since = time.monotonic()
                idle = time.monotonic() - idle_since
                if exit_when_idle is not None and sink.caught_up() and idle >= exit_when_idle:
                    log.info("caught up and idle: exiting", extra={"rows": dict(sink.rows_by_table)})
                    break
        finally:
            sink.close()
        return {"rows": dict(sink.rows_by_table), "flushes": sink.flushes}


def _backup(sink: ClickHouseSink, sql: str) -> bytes:
    """A BACKUP through the endpoint, between two flushes: the backup holds whole batches only."""
    with sink.lock:
        result = sink.client.command(sql)
    return ("\t".join(map(str, result)) if isinstance(result, list) else str(result)).encode() + b"\n"


__all__ = ["ENDPOINT_FILE", "ensure_schema", "run_sink", "schema_variables", "sink_database"]
