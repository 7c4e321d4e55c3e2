"""Open a ClickHouse client from one DSN: the embedded chdb engine or an HTTP(S) server.

What chdb 4.4 (engine 26.9) does, measured on this project's machines:

* One engine per process, one store directory per engine. Any number of clients may share the open
  store (each client has its own ``USE``/``SET`` state). Opening a *different* path, or
  ``chdb://memory``, while any client is open fails with "EmbeddedServer already initialized with
  path X" -> :class:`EngineInUseError`.
* After every client of a store is closed, the same process may open another path, or reopen the
  first one (data persists). Reopening costs ~0.07 s; the very first open in a process ~0.8 s.
* A second *process* opening an open store fails. The engine prints "Cannot lock file X/status.
  Another server instance in same directory is already running" to stderr, but the Python
  exception only says "Error initializing EmbeddedServer". The ``status`` file holds the owner's
  PID and an exclusive ``flock``; we probe that lock ourselves (before opening, so the common case
  prints no engine noise, and after a failure) -> :class:`StoreLockedError`.
* A clean close removes ``status``; after ``kill -9`` the file stays but the lock is gone, and the
  next process opens the store normally.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.clickhouse.dsn import MEMORY, Target, parse_dsn
from connectors.clickhouse.errors import EngineInUseError, StoreLockedError

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

_OTHER_PATH = re.compile(r"already initialized with path '([^']*)'")


def connect(
    dsn: str,
    *,
    database: str | None = None,
    create_database: bool = True,
    via_endpoint: tuple[str, str] | None = None,
    **kw: Any,
) -> Client:
    """A clickhouse-connect client for ``dsn``; ``database`` overrides the DSN's and is created if missing.

    ``via_endpoint`` = (user, password): when another process holds the embedded store and
    advertises a query endpoint next to it (the sink does), connect to that endpoint instead of
    failing; its queries are read-only. Extra keyword arguments go to ``clickhouse_connect.get_client``.
    """
    target = parse_dsn(dsn)
    try:
        client = _connect_embedded(target, **kw) if target.embedded else _connect_http(target, **kw)
    except StoreLockedError as locked:
        client = _connect_owner_endpoint(locked, via_endpoint, **kw) if via_endpoint else None
        if client is None:
            raise
        create_database = False  # read-only: the owner created what exists
    database = database or target.database
    if database:
        try:
            use_database(client, database, create=create_database)
        except BaseException:
            client.close()
            raise
    return client


def use_database(client: Client, database: str, *, create: bool = True) -> None:
    """Point ``client`` at ``database``, creating it first when missing and ``create`` is set."""
    exists = client.command(
        "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database}
    )
    if not int(exists):
        if not create:
            raise LookupError(f"ClickHouse database {database!r} does not exist")
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
    client.database = database


def quote_identifier(name: str) -> str:
    """Backquote an identifier for ClickHouse SQL."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _connect_embedded(target: Target, **kw: Any) -> Client:
    import clickhouse_connect  # lazy: pulls in the 555 MB chdb engine on first use
    from clickhouse_connect.driver.exceptions import ProgrammingError

    path: Path | None = None
    if target.path and target.path != MEMORY:
        # chdb compares paths literally; clickhouse-connect resolves them the same way.
        path = Path(os.path.realpath(target.path))
        path.mkdir(parents=True, exist_ok=True)
        check_store_lock(path)
        kw.setdefault("chdb_options", {"config-file": str(engine_config(path))})
    try:
        return clickhouse_connect.get_client(interface="chdb", path=str(path) if path else None, **kw)
    except ProgrammingError as exc:
        other = _OTHER_PATH.search(str(exc))
        if other:
            raise EngineInUseError(target.describe(), other.group(1)) from exc
        if path:
            try:
                check_store_lock(path)
            except StoreLockedError as locked:  # lost a race with another process
                raise locked from exc
        raise


ENGINE_CONFIG = "its-config.xml"
# BACKUP/RESTORE to File(...) needs backups.allowed_path; chdb reads server config from this file.
_ENGINE_CONFIG_XML = """<clickhouse>
    <backups>
        <allowed_path>/</allowed_path>
    </backups>
</clickhouse>
"""


def engine_config(path: Path) -> Path:
    """The engine config file of an embedded store (written on first open): allows ``BACKUP ... File()``."""
    config = path / ENGINE_CONFIG
    if not config.exists() or config.read_text() != _ENGINE_CONFIG_XML:
        tmp = config.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_ENGINE_CONFIG_XML)
        tmp.replace(config)
    return config


def _connect_http(target: Target, **kw: Any) -> Client:
    import clickhouse_connect

    # Connect without a database: it may not exist yet, and connect() creates it afterwards.
    return clickhouse_connect.get_client(
        host=target.host,
        port=target.port,
        username=target.username,
        password=target.password,
        secure=target.secure,
        **kw,
    )


def _connect_owner_endpoint(locked: StoreLockedError, auth: tuple[str, str], **kw: Any) -> Client | None:
    """A client on the query endpoint the store's owner advertises, or None when there is none."""
    import clickhouse_connect

    from connectors.clickhouse.endpoint import read_endpoint_file
    from connectors.clickhouse.errors import EndpointUnavailableError

    info = read_endpoint_file(locked.path)
    if not info or (locked.pid and info.get("pid") != locked.pid):
        return None  # stale file from an earlier owner, or an owner without an endpoint
    target = parse_dsn(str(info["url"]))
    try:
        return clickhouse_connect.get_client(
            host=target.host, port=target.port, username=auth[0], password=auth[1], **kw
        )
    except Exception as exc:
        raise EndpointUnavailableError(locked.path, str(info["url"]), str(exc)) from exc


def check_store_lock(path: Path) -> None:
    """Raise :class:`StoreLockedError` if another process holds the embedded store at ``path``."""
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except FileNotFoundError:
        return  # never opened, or closed cleanly
    try:
        pid = _owner_pid(fd)
        if pid == os.getpid():
            return  # our own engine: chdb shares it between clients of this process
        try:
            # The engine holds an exclusive flock; a shared one fails while it is held.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(path, pid) from None
    finally:
        os.close(fd)  # also drops our probe lock


def _owner_pid(fd: int) -> int | None:
    head = os.pread(fd, 256, 0).decode("utf-8", "replace")
    match = re.search(r"^PID:\s*(\d+)", head, re.MULTILINE)
    return int(match.group(1)) if match else None
