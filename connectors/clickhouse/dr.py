"""Disaster recovery: ClickHouse ``BACKUP``/``RESTORE`` of the analytics database, sink offsets included.

Backup: while the sink runs, the statement goes through its query endpoint and runs between two
batches (under the flush lock), so the backup holds whole batches and their intents; with the sink
stopped, the store is opened directly. Restore: the sink must be stopped; every table of the
database is dropped and the backup restored. On its next start the sink positions itself at the
restored offsets, finds the last batch's rows present, and Kafka refills everything after it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.clickhouse.client import quote_identifier

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

MANIFEST = "its-backup.json"


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def backup(client: Client, database: str, directory: Path) -> dict[str, Any]:
    """``BACKUP DATABASE`` to ``directory`` (must not exist yet); writes a manifest beside the data."""
    directory = Path(directory).resolve()
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty; a backup goes to a new directory")
    started = time.time()
    result = client.command(f"BACKUP DATABASE {quote_identifier(database)} TO File({_quote(str(directory))})")
    status = result[1] if isinstance(result, list) and len(result) > 1 else str(result)
    if "BACKUP_CREATED" not in str(status):
        raise RuntimeError(f"BACKUP did not complete: {result}")
    # The table state as of the backup: what the sink had written, per topic.
    offsets = client.query(
        f"SELECT topic, count() AS partitions, sum(m) AS through FROM (SELECT topic, partition, "
        f"max(max_offset) + 1 AS m FROM {quote_identifier(database)}.sink_offsets GROUP BY topic, partition) "
        "GROUP BY topic ORDER BY topic"
    ).result_rows
    manifest = {
        "database": database,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 3),
        "bytes": sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()),
        "offsets": {topic: {"partitions": int(n), "records_through": int(m)} for topic, n, m in offsets},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def restore(client: Client, directory: Path, database: str | None = None) -> dict[str, Any]:
    """Replace ``database`` (default: the backup's) by the backup in ``directory``; returns rows per table."""
    directory = Path(directory).resolve()
    manifest_path = directory / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{directory} holds no its backup ({MANIFEST} missing)")
    manifest = json.loads(manifest_path.read_text())
    database = database or manifest["database"]
    started = time.time()
    db = quote_identifier(database)
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    # Views first: a materialized view must not receive anything while its tables go.
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} "
        "ORDER BY engine = 'MaterializedView' DESC, name",
        parameters={"db": database},
    ).result_rows
    for (name,) in tables:
        client.command(f"DROP TABLE IF EXISTS {db}.{quote_identifier(name)} SYNC")
    source = manifest["database"]
    target = "" if source == database else f" AS {db}"
    client.command(f"RESTORE DATABASE {quote_identifier(source)}{target} FROM File({_quote(str(directory))})")
    rows = {
        name: int(client.command(f"SELECT count() FROM {db}.{quote_identifier(name)}"))
        for (name,) in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} "
            "AND engine NOT LIKE '%View' ORDER BY name",
            parameters={"db": database},
        ).result_rows
    }
    return {"database": database, "seconds": round(time.time() - started, 3), "rows": rows}
