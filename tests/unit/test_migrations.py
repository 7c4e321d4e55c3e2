"""Migration files, statement splitting and checksum checks, on plain data (no ClickHouse)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.clickhouse.errors import ChecksumMismatchError, MigrationError
from connectors.clickhouse.migrate import Migration, discover, verify_checksums
from connectors.clickhouse.sql import returns_rows, split_statements

pytestmark = pytest.mark.unit


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_discover_orders_by_version_and_ignores_other_files(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "0010_later.sql": "SELECT 10",
            "0002_second.sql": "SELECT 2",
            "0001_first.sql": "SELECT 1",
            "README.md": "not a migration",
        },
    )
    found = discover(tmp_path)
    assert [(m.version, m.name) for m in found] == [(1, "first"), (2, "second"), (10, "later")]


def test_shipped_migrations_start_with_sink_state() -> None:
    found = discover()
    assert found[0].label == "0001_sink_state"
    assert [m.version for m in found] == sorted({m.version for m in found})
    text = " ".join(found[0].statements)
    assert "sink_offsets" in text and "dead_letters" in text


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "abcd_x.sql"])
def test_badly_named_file_is_an_error(tmp_path: Path, name: str) -> None:
    _write(tmp_path, {name: "SELECT 1"})
    with pytest.raises(MigrationError, match="NNNN_"):
        discover(tmp_path)


def test_duplicate_version_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, {"0001_a.sql": "SELECT 1", "0001_b.sql": "SELECT 2"})
    with pytest.raises(MigrationError, match="two migrations have version 0001"):
        discover(tmp_path)


def test_comment_only_migration_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, {"0001_empty.sql": "-- nothing here;\n/* nor; here */\n"})
    with pytest.raises(MigrationError, match="no statements"):
        discover(tmp_path)


def test_split_ignores_comments_blanks_and_quoted_semicolons() -> None:
    script = """
    -- leading comment; with a semicolon
    CREATE TABLE t (s String DEFAULT 'a;b') ENGINE = Memory;

    /* block; comment */
    INSERT INTO t VALUES ('it''s; fine'), ('back\\'slash;');
    SELECT `odd;name` FROM t -- trailing; comment
    ;
    ;
    """
    assert split_statements(script) == [
        "CREATE TABLE t (s String DEFAULT 'a;b') ENGINE = Memory",
        "INSERT INTO t VALUES ('it''s; fine'), ('back\\'slash;')",
        "SELECT `odd;name` FROM t",
    ]


def test_split_rejects_unterminated_quote() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_statements("SELECT 'oops")


def test_checksum_ignores_line_endings_but_not_content() -> None:
    unix = Migration(1, "a", "CREATE TABLE t (x UInt8) ENGINE = Memory;\n")
    windows = Migration(1, "a", "CREATE TABLE t (x UInt8) ENGINE = Memory;\r\n")
    edited = Migration(1, "a", "CREATE TABLE t (x UInt16) ENGINE = Memory;\n")
    assert unix.checksum == windows.checksum != edited.checksum


def test_changed_applied_migration_is_a_clear_error() -> None:
    original = Migration(1, "sink_state", "CREATE TABLE a (x UInt8) ENGINE = Memory")
    edited = Migration(1, "sink_state", "CREATE TABLE a (x UInt64) ENGINE = Memory")
    pending = Migration(2, "next", "SELECT 1")
    verify_checksums([original, pending], {1: original.checksum})  # unchanged: fine
    with pytest.raises(ChecksumMismatchError, match="0001_sink_state was applied with checksum") as info:
        verify_checksums([edited, pending], {1: original.checksum})
    assert info.value.version == 1


@pytest.mark.parametrize(
    ("statement", "rows"),
    [
        ("SELECT 1", True),
        ("  with x as (select 1) select * from x", True),
        ("(SELECT 1)", True),
        ("SHOW TABLES", True),
        ("CREATE TABLE t (x UInt8) ENGINE = Memory", False),
        ("INSERT INTO t VALUES (1)", False),
    ],
)
def test_returns_rows(statement: str, rows: bool) -> None:
    assert returns_rows(statement) is rows
