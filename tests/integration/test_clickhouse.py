"""The ClickHouse connector on the real engine (embedded chdb): migrations, dedup inserts, CLI, store lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from connectors.clickhouse.dsn import MEMORY, parse_dsn
from connectors.clickhouse.errors import EngineInUseError, InvalidDsnError
from connectors.clickhouse.migrate import discover, migrate, migration_status

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

    from tests.fixtures.clickhouse import EmbeddedStore

ROOT = Path(__file__).resolve().parents[2]
ITS = Path(sys.executable).with_name("its")


def _tables(client: Client) -> list[tuple[str, str, str]]:
    return client.query(
        "SELECT name, engine, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() ORDER BY name"
    ).result_rows


def _history(client: Client) -> list[tuple[int, str, str, object]]:
    return client.query(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    ).result_rows


def _its(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ITS_DATA_DIR": str(data_dir), "ITS_LOG_FORMAT": "text"}
    env.pop("ITS_CLICKHOUSE_URL", None)
    return subprocess.run(
        [str(ITS), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("dsn", "fields"),
    [
        ("chdb:///var/lib/its/ch", {"kind": "chdb", "path": "/var/lib/its/ch", "database": None}),
        ("chdb://memory", {"kind": "chdb", "path": MEMORY}),
        ("chdb://memory/analytics", {"kind": "chdb", "path": MEMORY, "database": "analytics"}),
        (
            "http://its:s%40cret@ch.local:8123/traffic",
            {
                "kind": "http",
                "host": "ch.local",
                "port": 8123,
                "username": "its",
                "password": "s@cret",
                "database": "traffic",
                "secure": False,
            },
        ),
        ("https://ch.example.org", {"kind": "http", "port": 8443, "secure": True, "database": None}),
    ],
)
def test_parse_dsn(dsn: str, fields: dict[str, object]) -> None:
    target = parse_dsn(dsn)
    assert {k: getattr(target, k) for k in fields} == fields
    assert "cret" not in target.describe()


@pytest.mark.unit
@pytest.mark.parametrize("dsn", ["chdb://relative/path", "chdb:relative", "mysql://x", "http:///nohost"])
def test_parse_dsn_rejects(dsn: str) -> None:
    with pytest.raises(InvalidDsnError):
        parse_dsn(dsn)


@pytest.mark.integration
def test_migrate_twice_is_idempotent(clickhouse: Client) -> None:
    first = migrate(clickhouse)
    assert [m.label for m in first] == [m.label for m in discover()]
    tables, history = _tables(clickhouse), _history(clickhouse)
    assert {"schema_migrations", "sink_offsets", "dead_letters"} <= {t[0] for t in tables}

    assert migrate(clickhouse) == []
    assert _tables(clickhouse) == tables
    assert _history(clickhouse) == history
    assert {s.state for s in migration_status(clickhouse)} == {"applied"}


@pytest.mark.integration
def test_migrate_into_named_database_restores_current(
    clickhouse: Client, clickhouse_store: EmbeddedStore
) -> None:
    current = clickhouse.command("SELECT currentDatabase()")
    other = f"{current}_other"
    try:
        assert migrate(clickhouse, database=other)
        assert clickhouse.command("SELECT currentDatabase()") == current
        assert [s.state for s in migration_status(clickhouse, database=other)] == ["applied"] * len(
            discover()
        )
        assert [s.state for s in migration_status(clickhouse)] == ["pending"] * len(discover())
    finally:
        clickhouse_store.client.command(f"DROP DATABASE IF EXISTS `{other}` SYNC")


@pytest.mark.integration
def test_edited_migration_is_refused(clickhouse: Client, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text(
        "CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = MergeTree ORDER BY x;"
    )
    assert len(migrate(clickhouse, directory=tmp_path)) == 1
    (tmp_path / "0001_a.sql").write_text(
        "CREATE TABLE IF NOT EXISTS a (x UInt64) ENGINE = MergeTree ORDER BY x;"
    )
    (tmp_path / "0002_b.sql").write_text(
        "CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = MergeTree ORDER BY x;"
    )
    with pytest.raises(Exception, match="never edit an applied migration"):
        migrate(clickhouse, directory=tmp_path)
    assert "b" not in {t[0] for t in _tables(clickhouse)}  # nothing applied after the mismatch
    assert [s.state for s in migration_status(clickhouse, directory=tmp_path)] == ["changed", "pending"]


@pytest.mark.integration
def test_insert_and_read_offsets(clickhouse: Client) -> None:
    migrate(clickhouse)
    rows = [
        ["sink", "its.detections.v1", 0, 0, 99, 100, "its.detections.v1-0-0-99"],
        ["sink", "its.detections.v1", 0, 100, 199, 100, "its.detections.v1-0-100-199"],
        ["sink", "its.detections.v1", 1, 0, 49, 50, "its.detections.v1-1-0-49"],
    ]
    columns = ["consumer_group", "topic", "partition", "min_offset", "max_offset", "rows", "dedup_token"]
    clickhouse.insert("sink_offsets", rows, column_names=columns)
    resume = clickhouse.query(
        "SELECT partition, max(max_offset) FROM sink_offsets WHERE consumer_group = 'sink' "
        "GROUP BY partition ORDER BY partition"
    ).result_rows
    assert resume == [(0, 199), (1, 49)]


@pytest.mark.integration
def test_deduplication_token_drops_a_repeated_batch(clickhouse: Client) -> None:
    migrate(clickhouse)
    columns = ["topic", "partition", "offset", "key", "reason", "error_type", "payload"]
    batch = [["its.frames.v1", 0, n, "cam-1", "bad", "ValueError", "AAEC"] for n in range(100)]

    def insert(token: str) -> int:
        clickhouse.insert(
            "dead_letters", batch, column_names=columns, settings={"insert_deduplication_token": token}
        )
        return int(clickhouse.command("SELECT count() FROM dead_letters"))

    assert insert("t-0-0-99") == 100
    assert insert("t-0-0-99") == 100  # the replayed batch is dropped
    assert insert("t-0-100-199") == 200  # a different token counts again


@pytest.mark.integration
def test_one_store_per_process(clickhouse_store: EmbeddedStore, tmp_path: Path) -> None:
    from connectors.clickhouse.client import connect

    with pytest.raises(EngineInUseError, match="one store per process"):
        connect(f"chdb://{tmp_path / 'other'}")
    # A second client of the open store is fine.
    second = connect(clickhouse_store.dsn)
    try:
        assert second.command("SELECT 1") == 1
    finally:
        second.close()


@pytest.mark.integration
def test_cli_sql_prints_a_number(tmp_path: Path) -> None:
    data_dir = tmp_path / "its"
    migrated = _its("db", "migrate", data_dir=data_dir)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied" in migrated.stdout and "0001_sink_state" in migrated.stdout

    again = _its("db", "migrate", data_dir=data_dir)
    assert again.returncode == 0 and "skipped" in again.stdout

    result = _its(
        "sql",
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('schema_migrations', 'sink_offsets', 'dead_letters')",
        data_dir=data_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "3" in result.stdout.split()  # schema_migrations, sink_offsets, dead_letters

    as_json = _its(
        "sql",
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('schema_migrations', 'sink_offsets', 'dead_letters') ORDER BY name",
        "--format",
        "json",
        data_dir=data_dir,
    )
    assert as_json.stdout.splitlines() == [
        '{"name":"dead_letters"}',
        '{"name":"schema_migrations"}',
        '{"name":"sink_offsets"}',
    ]


@pytest.mark.integration
def test_cli_bad_sql_exits_1_with_clickhouse_message(tmp_path: Path) -> None:
    result = _its("sql", "SELEC 1", data_dir=tmp_path / "its")
    assert result.returncode == 1
    assert "Syntax error" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_second_process_gets_clear_locked_error(clickhouse_store: EmbeddedStore) -> None:
    # This pytest process holds the session store; another process must be told who owns it.
    script = textwrap.dedent(
        f"""
        from connectors.clickhouse.client import connect
        from connectors.clickhouse.errors import StoreLockedError
        try:
            connect({clickhouse_store.dsn!r})
        except StoreLockedError as exc:
            print(exc)
            raise SystemExit(3)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 3, result.stderr
    assert f"process {os.getpid()}" in result.stdout
    assert "the sink owns it" in result.stdout and str(clickhouse_store.path) in result.stdout

    cli = subprocess.run(
        [str(ITS), "sql", "SELECT 1", "--dsn", clickhouse_store.dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 1
    assert "is open in process" in cli.stderr and "Traceback" not in cli.stderr
