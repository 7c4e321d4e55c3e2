"""The console's ClickHouse side: the last hour of traffic per camera (volume, speed, level of service).

Read-only. A server deployment (``http(s)://``) is queried directly. The embedded store is never
opened by the console (chdb allows one process per store and the sink must own it): the console
queries through the read-only endpoint the sink advertises next to the store
(connectors/clickhouse/endpoint.py), and reports the traffic view as unavailable while no sink runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.clickhouse.client import check_store_lock, connect, quote_identifier
from connectors.clickhouse.dsn import MEMORY, parse_dsn
from connectors.clickhouse.endpoint import read_endpoint_file
from connectors.clickhouse.errors import StoreLockedError
from its.settings import Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver import Client

log = logging.getLogger(__name__)


class TrafficUnavailable(RuntimeError):
    """ClickHouse cannot be queried now (no sink serving the embedded store, server down, no table)."""


class TrafficSource:
    """Per-minute traffic series of the last hour, cached for a few seconds across requests."""

    def __init__(self, settings: Settings, cache_s: float = 5.0) -> None:
        self.settings = settings
        self.target = parse_dsn(settings.clickhouse_dsn)
        self.database = settings.sink.database or self.target.database or "default"
        cfg = settings.console
        self.user = cfg.query_user if cfg.query_user is not None else settings.sink.query_user
        self.password = cfg.query_password if cfg.query_password is not None else settings.sink.query_password
        self.cache_s = cache_s
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def _connect(self) -> Client:
        import clickhouse_connect

        if not self.target.embedded:
            return connect(self.settings.clickhouse_dsn, database=self.database, create_database=False)
        if self.target.path in (None, MEMORY):
            raise TrafficUnavailable("an in-memory ClickHouse store is private to its process")
        path = Path(os.path.realpath(self.target.path))
        try:
            check_store_lock(path)
        except StoreLockedError as locked:
            info = read_endpoint_file(path)
            if not info or (locked.pid and info.get("pid") != locked.pid):
                raise TrafficUnavailable(
                    f"the store at {path} is open in process {locked.pid}, which serves no query endpoint"
                ) from None
            target = parse_dsn(str(info["url"]))
            return clickhouse_connect.get_client(
                host=target.host,
                port=target.port,
                username=self.user,
                password=self.password,
                database=self.database,
            )
        raise TrafficUnavailable(
            f"no sink owns the embedded store at {path}: start `its sink clickhouse` (the console never "
            "opens the store itself, so the sink can)"
        )

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        if self._client is None:
            self._client = self._connect()
        try:
            return list(self._client.query(sql).result_rows)
        except Exception:
            # The endpoint may have moved (sink restarted on another port): reconnect next time.
            self._client = None
            raise

    def series(self) -> dict[str, Any]:
        """``{"available", "reason", "window_s", "cameras": {id: {"t", "volume", "speed", "los"}}}``."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1]
            try:
                doc = self._series()
            except TrafficUnavailable as exc:
                doc = {"available": False, "reason": str(exc), "cameras": {}}
            except Exception as exc:  # server down, table missing: the page says so, the console stays up
                log.warning("traffic query failed", extra={"error": str(exc)[:500]})
                doc = {"available": False, "reason": str(exc).strip().splitlines()[0][:300], "cameras": {}}
            self._cached = (time.monotonic(), doc)
            return doc

    def _series(self) -> dict[str, Any]:
        table = f"{quote_identifier(self.database)}.traffic_stats"
        recent = "window_start >= now64(3) - INTERVAL 1 HOUR"
        # One window length (the shortest present), the whole-camera row (lane_id '') for volume and
        # speed when the processor wrote one, and the worst lane's level of service ('F' > 'A').
        sql = f"""
            SELECT camera_id,
                   toUnixTimestamp(toStartOfMinute(window_start)) AS t,
                   if(countIf(lane_id = '') > 0, sumIf(volume, lane_id = ''), sum(volume)) AS vol,
                   if(countIf(lane_id = '') > 0, avgIf(mean_speed_kmh, lane_id = ''), avg(mean_speed_kmh))
                       AS spd,
                   max(level_of_service) AS worst_los,
                   any(window_s) AS win
            FROM {table}
            WHERE {recent} AND window_s = (SELECT min(window_s) FROM {table} WHERE {recent})
            GROUP BY camera_id, t
            ORDER BY camera_id, t
        """
        cameras: dict[str, dict[str, list[Any]]] = {}
        window_s = None
        for camera_id, t, volume, speed, los, win in self._query(sql):
            c = cameras.setdefault(str(camera_id), {"t": [], "volume": [], "speed": [], "los": []})
            c["t"].append(int(t))
            c["volume"].append(int(volume))
            c["speed"].append(None if speed is None or speed != speed else round(float(speed), 1))
            c["los"].append(str(los))
            window_s = int(win)
        return {"available": True, "reason": None, "window_s": window_s, "cameras": cameras}

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
