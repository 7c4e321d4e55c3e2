"""Erasing one camera's data from ClickHouse for a time range (``its privacy erase``).

Raw tables lose the camera's rows whose time falls in ``[start, end)``. Rollups (hourly/daily
aggregates fed by materialized views) cannot lose part of an aggregate, so every bucket that
overlaps the range is deleted and the buckets at the two edges are rebuilt, through the view's own
SELECT, from the raw rows that remain: the result is what the views would have produced had the
erased rows never arrived, as long as the raw rows of those edge buckets are still within their
retention (older edge buckets are erased whole, which errs toward erasure).

Deletes are ``ALTER TABLE ... DELETE`` with ``mutations_sync = 2``: parts are rewritten (the data is
physically gone, not only masked) and the call returns when every replica has done it. The audit
table is never touched: it is append-only and records the erasure itself.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from connectors.clickhouse.client import quote_identifier

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

# table -> WHERE template on {cam}, {lo}, {hi} (SQL literals); half-open ranges [lo, hi).
RAW: dict[str, str] = {
    "detections": "camera_id = {cam} AND capture_ts >= {lo} AND capture_ts < {hi}",
    "events": "camera_id = {cam} AND ts >= {lo} AND ts < {hi}",
    # An alert spans first_ts..last_ts (one row per revision): erased when its span meets the range.
    "alerts": "camera_id = {cam} AND first_ts < {hi} AND last_ts >= {lo}",
    "traffic_stats": "camera_id = {cam} AND window_start >= {lo} AND window_start < {hi}",
    "camera_health": "camera_id = {cam} AND ts >= {lo} AND ts < {hi}",
    # Dead letters keep the raw record (frames too); the Kafka key is the camera id.
    "dead_letters": "key = {cam} AND received_at >= {lo} AND received_at < {hi}",
}


@dataclasses.dataclass(frozen=True)
class Rollup:
    """An aggregate table filled by a materialized view; ``bucket`` is its time column."""

    table: str
    view: str
    bucket: str
    start_of: str  # SQL function: a time -> the start of its bucket

    def where(self, cam: str, lo: str, hi: str) -> str:
        # Every bucket that overlaps [lo, hi): from the bucket holding lo up to, not including, hi.
        return f"camera_id = {cam} AND {self.bucket} >= {self.start_of}({lo}) AND {self.bucket} < {hi}"


ROLLUPS: tuple[Rollup, ...] = (
    Rollup("detections_hourly", "detections_hourly_mv", "hour", "toStartOfHour"),
    Rollup("events_hourly", "events_hourly_mv", "hour", "toStartOfHour"),
    Rollup("traffic_hourly", "traffic_hourly_mv", "hour", "toStartOfHour"),
    Rollup("traffic_daily", "traffic_daily_mv", "day", "toDate"),
)

# Tables with a camera_id that hold no observation of the scene: kept on purpose.
EXEMPT: dict[str, str] = {
    "cameras": "the camera's registration (location, scene config), not what it recorded",
}
# Never part of an erase: the append-only trail that records the erase.
PROTECTED = frozenset({"audit", "sink_offsets", "schema_migrations"})
assert not PROTECTED & (set(RAW) | {r.table for r in ROLLUPS}), "an erase must never touch the audit trail"


@dataclasses.dataclass
class TableErase:
    """What an erase did (or would do) to one table."""

    table: str
    kind: str  # raw or rollup
    before: int  # rows of the camera in the range (rollups: in the overlapping buckets)
    after: int = 0  # the same count afterwards (dry run: unchanged)
    rebuilt: int = 0  # rollup rows recomputed for the edge buckets
    removed: int = 0  # dry run: what would be removed


@dataclasses.dataclass
class EraseReport:
    camera_id: str
    start: datetime
    end: datetime
    dry_run: bool
    tables: list[TableErase]
    missing: list[str]  # planned tables this database does not have (older schema)
    uncovered: list[str]  # tables with a camera_id column the plan does not know

    @property
    def removed(self) -> int:
        """Rows gone in all (rollup rows rebuilt for the edge buckets do not count)."""
        return sum(t.removed - t.rebuilt for t in self.tables)

    def as_dict(self) -> dict[str, object]:
        tables = {
            t.table: {"kind": t.kind, "before": t.before, "after": t.after, "removed": t.removed,
                      "rebuilt": t.rebuilt}
            for t in self.tables
        }  # fmt: skip
        return {
            "camera_id": self.camera_id,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "dry_run": self.dry_run,
            "removed": self.removed,
            "tables": tables,
            "missing_tables": self.missing,
            "uncovered_tables": self.uncovered,
        }


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ts(value: datetime) -> str:
    return f"toDateTime64('{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}', 3, 'UTC')"


def _tables(client: Client, database: str) -> dict[str, set[str]]:
    rows = client.query(
        "SELECT table, groupArray(name) FROM system.columns WHERE database = {db:String} GROUP BY table",
        parameters={"db": database},
    ).result_rows
    return {table: set(cols) for table, cols in rows}


def uncovered_tables(tables: dict[str, set[str]]) -> list[str]:
    """Tables holding a camera_id that are neither erased, exempt nor protected: a plan to extend."""
    known = set(RAW) | {r.table for r in ROLLUPS} | set(EXEMPT) | PROTECTED
    views = {r.view for r in ROLLUPS}
    return sorted(t for t, cols in tables.items() if "camera_id" in cols and t not in known | views)


def erase(
    client: Client, database: str, camera_id: str, start: datetime, end: datetime, *, dry_run: bool = False
) -> EraseReport:
    """Remove ``camera_id``'s rows in ``[start, end)`` from every data table; count before and after."""
    if end <= start:
        raise ValueError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    db = quote_identifier(database)
    tables = _tables(client, database)
    cam, lo, hi = _str(camera_id), _ts(start), _ts(end)
    plan: list[tuple[str, str, str, Rollup | None]] = [
        (name, "raw", where.format(cam=cam, lo=lo, hi=hi), None) for name, where in RAW.items()
    ] + [(r.table, "rollup", r.where(cam, lo, hi), r) for r in ROLLUPS]
    present = [p for p in plan if p[0] in tables]
    missing = [p[0] for p in plan if p[0] not in tables]
    if not present:
        raise LookupError(f"database {database!r} holds none of the analytics tables (run `its db migrate`?)")

    def count(name: str, where: str) -> int:
        return int(client.command(f"SELECT count() FROM {db}.{quote_identifier(name)} WHERE {where}"))

    results = {name: TableErase(name, kind, count(name, where)) for name, kind, where, _ in present}
    if not dry_run:
        # Raw first: the edge buckets are rebuilt from what the raw tables keep.
        for name, _kind, where, _rollup in present:
            client.command(
                f"ALTER TABLE {db}.{quote_identifier(name)} DELETE WHERE {where}",
                settings={"mutations_sync": 2},
            )
        for name, _kind, where, rollup in present:
            if rollup is not None:
                results[name].rebuilt = _rebuild(client, database, rollup, where)
    for name, _kind, where, _ in present:
        res = results[name]
        res.after = count(name, where) if not dry_run else res.before
        res.removed = res.before if dry_run else res.before - res.after + res.rebuilt
    return EraseReport(
        camera_id, start, end, dry_run, list(results.values()), missing, uncovered_tables(tables)
    )


def _rebuild(client: Client, database: str, rollup: Rollup, where: str) -> int:
    """Re-aggregate the erased buckets from the raw rows left, with the view's own SELECT."""
    # query, not command: command returns TSV text, with the quotes inside the SELECT escaped.
    found = client.query(
        "SELECT as_select FROM system.tables WHERE database = {db:String} AND name = {v:String}",
        parameters={"db": database, "v": rollup.view},
    ).result_rows
    select = str(found[0][0]) if found else ""
    if not select.strip():
        raise RuntimeError(
            f"materialized view {database}.{rollup.view} not found: cannot rebuild {rollup.table}"
        )
    names = ", ".join(quote_identifier(c) for c in _column_order(client, database, rollup.table))
    table = f"{quote_identifier(database)}.{quote_identifier(rollup.table)}"
    # The filter sits outside the view's GROUP BY, on its keys: ClickHouse pushes it down to the source.
    before = int(client.command(f"SELECT count() FROM {table} WHERE {where}"))
    client.command(f"INSERT INTO {table} ({names}) SELECT {names} FROM ({select}) WHERE {where}")
    return int(client.command(f"SELECT count() FROM {table} WHERE {where}")) - before


def _column_order(client: Client, database: str, table: str) -> list[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
        "ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows
    return [name for (name,) in rows]
