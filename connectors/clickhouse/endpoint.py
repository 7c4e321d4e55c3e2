"""Read-only SQL over ClickHouse's HTTP interface, served by the process that owns an embedded store.

chdb lets one process open a store; while the sink runs, analysts reach the store through it:
``clickhouse_connect.get_client(host=..., port=...)``, ``curl 'http://host:8124/?query=SELECT+1'``
and ``its sql`` (which finds the endpoint in ``<store>/its-endpoint.json``) work unchanged.

Enough of the protocol is spoken for clickhouse-connect: the query in the ``query`` parameter
and/or the body, ``database``, ``default_format``, ``param_*`` bindings, other parameters as
settings, Basic or ``X-ClickHouse-User``/``X-ClickHouse-Key`` authentication, errors as HTTP 500
with ``X-ClickHouse-Exception-Code``. Read-only twice over: only SELECT, WITH, SHOW, DESCRIBE,
EXPLAIN and EXISTS statements are accepted, and each runs on a fresh engine handle with
``readonly = 2`` (settings may change, data and schema may not). ``BACKUP`` is the one exception:
it reads tables and writes only its destination, and runs under the sink's flush lock so the
backup holds whole batches (``its dr backup``).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from connectors.clickhouse.sql import split_statements

log = logging.getLogger(__name__)

ENDPOINT_FILE = "its-endpoint.json"
READ_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
_TRANSPORT = frozenset(
    {
        "query", "database", "default_format", "user", "password", "session_id", "session_timeout",
        "session_check", "query_id", "quota_key", "compress", "decompress", "wait_end_of_query",
        "client_protocol_version", "role", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "enable_http_compression", "buffer_size", "readonly",
    }
)  # fmt: skip
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE = re.compile(r"Code:\s*(\d+)")

BackupRunner = Callable[[str], bytes]


def first_keyword(statement: str) -> str:
    """The statement's first word, upper-cased, after comments, blanks and opening parentheses."""
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    return words[0].upper() if words else ""


def is_read_only(sql: str) -> tuple[bool, str]:
    """Whether ``sql`` is exactly one read statement; else why not."""
    try:
        statements = split_statements(sql)
    except ValueError as exc:
        return False, str(exc)
    if len(statements) != 1:
        return False, f"exactly one statement per request, got {len(statements)}"
    keyword = first_keyword(statements[0])
    if keyword not in READ_KEYWORDS:
        return False, f"{keyword or 'empty'} statements are not allowed: this endpoint is read-only"
    return True, ""


class _Error(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class _Handler(BaseHTTPRequestHandler):
    server: QueryServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length) if length else b"")

    def _serve(self, body: bytes) -> None:
        url = urlsplit(self.path)
        if url.path in ("/ping", "/") and not url.query and not body:
            self._reply(200, b"Ok.\n", "text/plain; charset=UTF-8")
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            self._authenticate(params)
            sql = "\n".join(p for p in (params.get("query", ""), body.decode("utf-8")) if p.strip())
            data, fmt = self.server.run(sql, params)
            self._reply(200, data, "application/octet-stream", {"X-ClickHouse-Format": fmt})
        except _Error as exc:
            msg = f"Code: {exc.code}. DB::Exception: {exc}\n".encode()
            self._reply(
                exc.status, msg, "text/plain; charset=UTF-8", {"X-ClickHouse-Exception-Code": str(exc.code)}
            )
        except Exception as exc:  # the engine's error text already reads "Code: N. DB::Exception: ..."
            text = str(exc).strip()
            code = _CODE.search(text)
            self._reply(
                500,
                (text + "\n").encode(),
                "text/plain; charset=UTF-8",
                {"X-ClickHouse-Exception-Code": code.group(1) if code else "1002"},
            )

    def _authenticate(self, params: dict[str, str]) -> None:
        user, password = params.get("user", "default"), params.get("password", "")
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError as exc:
                raise _Error(401, 516, "malformed Basic authorization") from exc
        user = self.headers.get("X-ClickHouse-User", user)
        password = self.headers.get("X-ClickHouse-Key", password)
        want_user, want_password = self.server.credentials
        if user != want_user or not hmac.compare_digest(password.encode(), want_password.encode()):
            raise _Error(401, 516, f"{user}: Authentication failed: password is incorrect or no such user")

    def _reply(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Server-Display-Name", "its-sink")
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("X-ClickHouse-Query-Id", str(uuid.uuid4()))
        self.send_header("X-ClickHouse-Summary", json.dumps({"read_rows": "0", "written_rows": "0"}))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("query endpoint: " + format, *args)


class QueryServer(ThreadingHTTPServer):
    """The endpoint: an HTTP server running each request on a fresh read-only chdb handle."""

    daemon_threads = True

    def __init__(
        self,
        store_path: Path,
        host: str,
        port: int,
        credentials: tuple[str, str],
        max_rows: int = 10_000_000,
        backup: BackupRunner | None = None,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.store_path = str(Path(os.path.realpath(store_path)))
        self.credentials = credentials
        self.max_rows = max_rows
        self.backup = backup
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def run(self, sql: str, params: dict[str, str]) -> tuple[bytes, str]:
        """Execute one read statement (or a BACKUP) and return its bytes and format."""
        import chdb

        if not sql.strip():
            raise _Error(400, 62, "empty query")
        if first_keyword(sql) == "BACKUP" and len(split_statements(sql)) == 1:
            if self.backup is None:
                raise _Error(403, 164, "BACKUP is not enabled on this endpoint")
            return self.backup(sql), "TabSeparated"
        ok, why = is_read_only(sql)
        if not ok:
            raise _Error(403, 164, why)
        match = _TRAILING_FORMAT.search(sql)
        fmt = match.group(1) if match else params.get("default_format", "TabSeparated")
        bind = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        conn = chdb.connect(self.store_path)
        try:
            conn.query(f"SET max_result_rows = {int(self.max_rows)}, result_overflow_mode = 'throw'")
            for key, value in params.items():
                if key in _TRANSPORT or key.startswith("param_"):
                    continue
                if not _SETTING.match(key):
                    raise _Error(400, 115, f"invalid setting name {key!r}")
                conn.query(f"SET {key} = '" + value.replace("\\", "\\\\").replace("'", "\\'") + "'")
            conn.query("SET readonly = 2")  # last: from here on no write, no DDL, no SET readonly
            database = params.get("database")
            if database:
                conn.query("USE `" + database.replace("`", "\\`") + "`")
            result = conn.query(sql, fmt, params=bind) if bind else conn.query(sql, fmt)
            return result.bytes(), fmt
        finally:
            conn.close()

    def start(self) -> QueryServer:
        self._thread = threading.Thread(target=self.serve_forever, name="query-endpoint", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def write_endpoint_file(store_path: Path, url: str, user: str, metrics_url: str | None = None) -> Path:
    """Advertise the endpoint (and the owner's /metrics) next to the store, for ``its sql`` and others."""
    path = Path(store_path) / ENDPOINT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "user": user, "metrics": metrics_url}))
    tmp.replace(path)
    return path


def read_endpoint_file(store_path: Path) -> dict[str, Any] | None:
    """The endpoint advertised next to the store, if any (the owner's pid is checked by the caller)."""
    try:
        return json.loads((Path(store_path) / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
