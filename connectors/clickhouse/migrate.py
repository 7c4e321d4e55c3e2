"""Versioned schema migrations: ``migrations/NNNN_name.sql`` in order, recorded in ``schema_migrations``.

The same SQL runs on chdb and on a ClickHouse server. ClickHouse DDL is not transactional: a
migration that fails half-way leaves its earlier statements applied and is not recorded, so write
every statement to be re-runnable (``IF NOT EXISTS``) and simply run ``migrate`` again after a fix.
One migrator at a time per database (the sink or an operator runs it at deploy time).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.clickhouse.errors import ChecksumMismatchError, MigrationError
from connectors.clickhouse.sql import split_statements

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

HISTORY_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# ``${name:default}`` in a migration: a deploy-time value (TTL days...); the checksum covers the template.
_VARIABLE = re.compile(r"\$\{([a-z_][a-z0-9_]*)(?::([^}]*))?\}")
# A MergeTree-family engine clause, for turning it into its Replicated twin.
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*)MergeTree\b(\s*\(([^)]*)\))?", re.IGNORECASE)

_HISTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE}
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        # Line endings normalised so a Windows checkout does not look like an edited file.
        return hashlib.sha256(self.sql.replace("\r\n", "\n").encode()).hexdigest()

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class MigrationState:
    """A migration's standing in one database: applied, pending, changed (file edited) or orphan (no file)."""

    version: int
    name: str
    state: str
    applied_at: datetime | None = None


def default_directory() -> Traversable:
    """The migrations shipped with the package."""
    return resources.files("connectors.clickhouse").joinpath("migrations")


def discover(directory: Traversable | Path | None = None) -> list[Migration]:
    """The migrations in ``directory``, ordered by version; bad names and duplicate versions are errors."""
    folder = directory if directory is not None else default_directory()
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_lower_snake_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations have version {version:04d}: {found[version].label}, {entry.name}"
            )
        migration = Migration(version=version, name=match.group(2), sql=entry.read_text(encoding="utf-8"))
        if not migration.statements:
            raise MigrationError(f"migration {entry.name} contains no statements")
        found[version] = migration
    return [found[v] for v in sorted(found)]


def render(
    statement: str, variables: Mapping[str, object] | None = None, replica: tuple[str, str] | None = None
) -> str:
    """``statement`` with ``${name:default}`` filled from ``variables`` and, given ``replica`` =
    (keeper path, replica name), every ``*MergeTree(args)`` engine turned into ``Replicated*MergeTree``."""
    values = variables or {}

    def fill(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in values:
            return str(values[name])
        if default is None:
            raise MigrationError(f"migration variable ${{{name}}} has no value and no default")
        return default

    out = _VARIABLE.sub(fill, statement)
    if replica:
        path, name = replica

        def replicate(match: re.Match[str]) -> str:
            family, args = match.group(1), (match.group(3) or "").strip()
            if family.lower().startswith("replicated"):
                return match.group(0)
            head = f"'{path}', '{name}'"
            return f"ENGINE = Replicated{family}MergeTree({head}{', ' + args if args else ''})"

        out = _ENGINE.sub(replicate, out)
    return out


def migrate(
    client: Client,
    database: str | None = None,
    directory: Traversable | Path | None = None,
    *,
    variables: Mapping[str, object] | None = None,
    replica: tuple[str, str] | None = None,
) -> list[Migration]:
    """Apply pending migrations in order and return them; ones already applied are skipped.

    ``database`` (created if missing) defaults to the client's current one. Raises
    :class:`ChecksumMismatchError` before applying anything if an applied migration's file changed.
    ``variables`` and ``replica`` are passed to :func:`render` for every statement.
    """
    migrations = discover(directory)
    with _in_database(client, database):
        client.command(_HISTORY_DDL)
        applied = _applied(client)
        verify_checksums(migrations, {v: row[1] for v, row in applied.items()})
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                try:
                    client.command(render(statement, variables, replica))
                except Exception as exc:
                    raise MigrationError(f"migration {migration.label} failed: {exc}") from exc
            client.insert(
                HISTORY_TABLE,
                [[migration.version, migration.name, migration.checksum]],
                column_names=["version", "name", "checksum"],
            )
            done.append(migration)
        return done


def migration_status(
    client: Client, database: str | None = None, directory: Traversable | Path | None = None
) -> list[MigrationState]:
    """Every known migration (files and history rows) with its state, ordered by version."""
    migrations = {m.version: m for m in discover(directory)}
    with _in_database(client, database, create=False):
        exists = client.command(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": HISTORY_TABLE},
        )
        applied = _applied(client) if int(exists) else {}
    states: list[MigrationState] = []
    for version in sorted(migrations.keys() | applied.keys()):
        row = applied.get(version)
        migration = migrations.get(version)
        if migration is None:
            assert row is not None
            states.append(MigrationState(version, row[0], "orphan", row[2]))
        elif row is None:
            states.append(MigrationState(version, migration.name, "pending"))
        else:
            state = "applied" if row[1] == migration.checksum else "changed"
            states.append(MigrationState(version, migration.name, state, row[2]))
    return states


def _applied(client: Client) -> dict[int, tuple[str, str, datetime]]:
    # GROUP BY: a version recorded twice (two racing migrators) still reads as one row.
    result = client.query(
        f"SELECT version, any(name), any(checksum), min(applied_at) FROM {HISTORY_TABLE} GROUP BY version"
    )
    return {int(v): (name, checksum, at) for v, name, checksum, at in result.result_rows}


def verify_checksums(migrations: list[Migration], recorded: Mapping[int, str]) -> None:
    """Raise :class:`ChecksumMismatchError` if a recorded version's file no longer has its checksum."""
    for migration in migrations:
        checksum = recorded.get(migration.version)
        if checksum is not None and checksum != migration.checksum:
            raise ChecksumMismatchError(migration.version, migration.name, checksum, migration.checksum)


@contextmanager
def _in_database(client: Client, database: str | None, create: bool = True) -> Iterator[None]:
    """Temporarily point ``client`` at ``database`` (created if missing), then restore the previous one."""
    if not database:
        yield
        return
    from connectors.clickhouse.client import use_database

    # chdb keeps USE state per handle, so restore an explicit name rather than None.
    previous = client.database or str(client.command("SELECT currentDatabase()"))
    use_database(client, database, create=create)
    try:
        yield
    finally:
        client.database = previous
