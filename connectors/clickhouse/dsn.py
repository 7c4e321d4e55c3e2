"""One ClickHouse setting, parsed: an embedded chdb store or an HTTP(S) server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from connectors.clickhouse.errors import InvalidDsnError

MEMORY = ":memory:"


@dataclass(frozen=True)
class Target:
    """Where ClickHouse lives. ``path`` is set for chdb (absolute, or ``:memory:``), ``host`` for HTTP."""

    kind: str  # "chdb" or "http"
    path: str | None = None
    host: str | None = None
    port: int | None = None
    username: str = "default"
    password: str = ""
    database: str | None = None
    secure: bool = False

    @property
    def embedded(self) -> bool:
        return self.kind == "chdb"

    def describe(self) -> str:
        """The target without its password, for messages and logs."""
        if self.embedded:
            return f"chdb://{'memory' if self.path == MEMORY else self.path}"
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database or ''}"


def parse_dsn(dsn: str) -> Target:
    """Parse ``chdb:///abs/path``, ``chdb://memory[/db]`` or ``http(s)://user:pass@host:port/database``."""
    parts = urlsplit(dsn.strip())
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "chdb":
        if parts.netloc in ("memory", ":memory:"):
            database = unquote(parts.path.strip("/")) or query.get("database")
            return Target(kind="chdb", path=MEMORY, database=database)
        if parts.netloc:
            raise InvalidDsnError(
                f"chdb DSN {dsn!r} names {parts.netloc!r}; use chdb:///absolute/path (three slashes) "
                "or chdb://memory"
            )
        if not parts.path.startswith("/"):
            raise InvalidDsnError(f"chdb DSN {dsn!r} needs an absolute path: chdb:///absolute/path")
        return Target(kind="chdb", path=str(Path(unquote(parts.path))), database=query.get("database"))
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise InvalidDsnError(f"ClickHouse DSN {dsn!r} has no host")
        secure = parts.scheme == "https"
        database = unquote(parts.path.strip("/")) or query.get("database")
        return Target(
            kind="http",
            host=parts.hostname,
            port=parts.port or (8443 if secure else 8123),
            username=unquote(parts.username) if parts.username else "default",
            password=unquote(parts.password) if parts.password else "",
            database=database or None,
            secure=secure,
        )
    raise InvalidDsnError(
        f"unsupported ClickHouse DSN {dsn!r}: use chdb:///abs/path, chdb://memory or http(s)://user:pass@host:port/db"
    )
