"""Typed errors of the ClickHouse connector, each with a message an operator can act on."""

from __future__ import annotations

from pathlib import Path


class StoreError(RuntimeError):
    """The ClickHouse store cannot be opened as asked."""


class InvalidDsnError(StoreError, ValueError):
    """The DSN is neither ``chdb:///abs/path``, ``chdb://memory`` nor ``http(s)://...``."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store (chdb allows one process per store directory)."""

    def __init__(self, path: Path, pid: int | None = None) -> None:
        self.path = path
        self.pid = pid
        owner = f"process {pid}" if pid else "another process"
        super().__init__(
            f"the embedded ClickHouse store at {path} is open in {owner} (the sink owns it); "
            "query it through that process, or stop it first"
        )


class EndpointUnavailableError(StoreError):
    """The store's owner advertises a query endpoint that does not answer (or refuses us)."""

    def __init__(self, path: Path, url: str, reason: str) -> None:
        self.path, self.url = path, url
        super().__init__(
            f"the embedded ClickHouse store at {path} is held by the sink, whose query endpoint {url} "
            f"failed: {reason}"
        )


class EngineInUseError(StoreError):
    """This process already has a different embedded store open (chdb runs one engine per process)."""

    def __init__(self, wanted: str, open_path: str | None = None) -> None:
        self.wanted = wanted
        self.open_path = open_path
        held = f" at {open_path}" if open_path else ""
        super().__init__(
            f"cannot open the embedded ClickHouse store {wanted}: this process already has the store{held} "
            "open, and chdb runs one store per process; close every client of that store first"
        )


class MigrationError(RuntimeError):
    """The migration files or the recorded history are inconsistent."""


class ChecksumMismatchError(MigrationError):
    """An applied migration's file changed after it ran."""

    def __init__(self, version: int, name: str, recorded: str, current: str) -> None:
        self.version = version
        self.name = name
        super().__init__(
            f"migration {version:04d}_{name} was applied with checksum {recorded[:12]}... but the file now "
            f"has {current[:12]}...; never edit an applied migration, add a new one instead"
        )
