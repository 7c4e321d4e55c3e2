"""Columnar inserts of Arrow tables with an ``insert_deduplication_token``, same call for both targets.

Over HTTP the table goes as Arrow with clickhouse-connect's ``insert_arrow``. On the embedded store
the same Arrow table is read in place by chdb's ``Python()`` table function on a handle of the open
engine: measured 0.27 s for 100k detection frames against 0.64 s through ``insert_arrow`` (which
writes a temporary file first). The SQL semantics (columns by name, token, views) are the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from connectors.clickhouse.client import quote_identifier

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ArrowWriter:
    """Inserts Arrow tables into ``database`` through ``client`` (or its chdb engine)."""

    def __init__(self, client: Client, database: str) -> None:
        self.client = client
        self.database = database
        self._chdb: Any = None
        path = getattr(client, "path", None)
        if type(client).__name__ == "ChdbClient" and path and path != ":memory:":
            import chdb

            self._chdb = chdb.connect(path)  # a second handle on the engine this process already runs

    def insert(self, table: str, data: pa.Table, token: str | None) -> int:
        """Insert ``data`` (columns named like the table's) as one block; returns its row count."""
        if not data.num_rows:
            return 0
        # The rollup views deduplicate by themselves: a batch inserted again (the sink's redo of a
        # batch killed mid-INSERT) reaches the views that missed it, not those that have it.
        settings: dict[str, Any] = (
            {"insert_deduplication_token": token, "deduplicate_blocks_in_dependent_materialized_views": 1}
            if token
            else {}
        )
        if self._chdb is None:
            self.client.insert_arrow(table, data, database=self.database, settings=settings)
            return data.num_rows
        names = ", ".join(quote_identifier(n) for n in data.column_names)
        clause = (
            f" SETTINGS insert_deduplication_token = {_quote(token)}, "
            "deduplicate_blocks_in_dependent_materialized_views = 1"
            if token
            else ""
        )
        its_arrow_batch = data  # noqa: F841 - chdb's Python() finds this local by name
        self._chdb.query(
            f"INSERT INTO {quote_identifier(self.database)}.{quote_identifier(table)} ({names}){clause} "
            f"SELECT {names} FROM Python(its_arrow_batch)"
        )
        return data.num_rows

    def close(self) -> None:
        if self._chdb is not None:
            self._chdb.close()
            self._chdb = None
