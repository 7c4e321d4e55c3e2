"""HTTP front of the registry: the Confluent REST subset of confluent-kafka's clients, health, metrics."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from infra.schema_registry.service import Registry, RegistryError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
MAX_BODY = 16 * 1024 * 1024

Query = dict[str, str]
Handler = Callable[["Request"], Any]


class Request:
    """What a route handler sees: path parameters, query, JSON body."""

    def __init__(self, params: dict[str, str], query: Query, body: bytes) -> None:
        self.params = params
        self.query = query
        self._body = body

    def flag(self, name: str) -> bool:
        # The Python client sends Python booleans ("True"), Java ones send "true".
        return self.query.get(name, "false").lower() == "true"

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self._body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(400, 400, f"Request body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise RegistryError(400, 400, "Request body must be a JSON object")
        return doc


class Metrics:
    """Per-server Prometheus collectors (a registry of their own, so tests can run several servers)."""

    def __init__(self, registry: Registry) -> None:
        self.collectors = CollectorRegistry()
        self.requests = Counter(
            "its_schema_registry_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.collectors,
        )
        self.registered = Counter(
            "its_schema_registry_schemas_registered",
            "Register calls that created a new subject version",
            registry=self.collectors,
        )
        subjects = Gauge("its_schema_registry_subjects", "Live subjects", registry=self.collectors)
        subjects.set_function(lambda: len(registry.subjects()))
        schemas = Gauge("its_schema_registry_schema_ids", "Distinct schema ids", registry=self.collectors)
        schemas.set_function(lambda: len(registry.store.schemas))


class Router:
    """Maps (method, path) to handlers; path templates use ``{name}`` for one segment."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], str, Handler]] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.routes.append((method, re.compile(f"^{pattern}/?$"), template, handler))

    def match(self, method: str, path: str) -> tuple[str, Handler, dict[str, str]] | None:
        """The endpoint template, handler and decoded parameters; raises 405 if only the method differs."""
        path_matched = False
        for route_method, pattern, template, handler in self.routes:
            m = pattern.match(path)
            if m is None:
                continue
            path_matched = True
            if route_method == method:
                return template, handler, {k: unquote(v) for k, v in m.groupdict().items()}
        if path_matched:
            raise RegistryError(405, 405, f"Method {method} not allowed on {path}")
        return None


def build_router(registry: Registry, metrics: Metrics) -> Router:
    """Every endpoint; handlers return the JSON body of a 200 answer."""
    r = Router()

    def register(req: Request) -> dict[str, Any]:
        schema_id, created = registry.register(req.params["subject"], req.json())
        if created:
            metrics.registered.inc()
        return {"id": schema_id}

    def compat_result(ok: bool, messages: list[str], verbose: bool) -> dict[str, Any]:
        return {"is_compatible": ok, "messages": messages} if verbose else {"is_compatible": ok}

    def subject_of(req: Request) -> str:
        return req.params["subject"]

    def schema_id(req: Request) -> int:
        try:
            return int(req.params["id"])
        except ValueError:
            raise RegistryError(404, 40403, f"Schema {req.params['id']} not found") from None

    r.add("GET", "/", lambda req: {})
    r.add("GET", "/schemas/types", lambda req: ["AVRO"])
    r.add("GET", "/schemas/ids/{id}", lambda req: {"schema": registry.schema_by_id(schema_id(req))})
    r.add("GET", "/schemas/ids/{id}/schema", lambda req: json.loads(registry.schema_by_id(schema_id(req))))
    r.add(
        "GET",
        "/schemas/ids/{id}/versions",
        lambda req: registry.id_versions(schema_id(req), req.flag("deleted")),
    )
    r.add(
        "GET",
        "/schemas/ids/{id}/subjects",
        lambda req: registry.id_subjects(schema_id(req), req.flag("deleted")),
    )
    r.add(
        "GET",
        "/subjects",
        lambda req: registry.subjects(
            req.flag("deleted") or req.flag("deleted_only"), req.query.get("subjectPrefix", "")
        ),
    )
    r.add(
        "POST",
        "/subjects/{subject}",
        lambda req: registry.lookup(subject_of(req), req.json(), req.flag("deleted")),
    )
    r.add(
        "DELETE",
        "/subjects/{subject}",
        lambda req: registry.delete_subject(subject_of(req), req.flag("permanent")),
    )
    r.add(
        "GET",
        "/subjects/{subject}/versions",
        lambda req: registry.versions(subject_of(req), req.flag("deleted")),
    )
    r.add("POST", "/subjects/{subject}/versions", register)
    r.add(
        "GET",
        "/subjects/{subject}/versions/{version}",
        lambda req: registry.get_version(subject_of(req), req.params["version"], req.flag("deleted")),
    )
    r.add(
        "GET",
        "/subjects/{subject}/versions/{version}/schema",
        lambda req: json.loads(registry.get_version(subject_of(req), req.params["version"])["schema"]),
    )
    r.add(
        "DELETE",
        "/subjects/{subject}/versions/{version}",
        lambda req: registry.delete_version(subject_of(req), req.params["version"], req.flag("permanent")),
    )
    r.add(
        "POST",
        "/compatibility/subjects/{subject}/versions/{version}",
        lambda req: compat_result(
            *registry.test_compatibility(subject_of(req), req.params["version"], req.json()),
            req.flag("verbose"),
        ),
    )
    r.add(
        "POST",
        "/compatibility/subjects/{subject}/versions",
        lambda req: compat_result(
            *registry.test_compatibility(subject_of(req), None, req.json()), req.flag("verbose")
        ),
    )
    r.add("GET", "/config", lambda req: {"compatibilityLevel": registry.get_config(None)})
    r.add(
        "PUT",
        "/config",
        lambda req: {"compatibility": registry.set_config(None, req.json().get("compatibility"))},
    )
    r.add("DELETE", "/config", lambda req: {"compatibilityLevel": registry.delete_config(None)})
    r.add(
        "GET",
        "/config/{subject}",
        lambda req: {"compatibilityLevel": registry.get_config(subject_of(req), req.flag("defaultToGlobal"))},
    )
    r.add(
        "PUT",
        "/config/{subject}",
        lambda req: {"compatibility": registry.set_config(subject_of(req), req.json().get("compatibility"))},
    )
    r.add(
        "DELETE",
        "/config/{subject}",
        lambda req: {"compatibilityLevel": registry.delete_config(subject_of(req))},
    )
    # Modes (IMPORT, READONLY) are not implemented: the registry is always read-write.
    r.add("GET", "/mode", lambda req: {"mode": "READWRITE"})
    r.add("GET", "/mode/{subject}", lambda req: {"mode": "READWRITE"})
    return r


class RegistryHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server holding the registry, its router and metrics."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: Registry) -> None:
        self.registry = registry
        self.metrics = Metrics(registry)
        self.router = build_router(registry, self.metrics)
        super().__init__(address, RegistryRequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class RegistryRequestHandler(BaseHTTPRequestHandler):
    """One request: route, run, answer JSON; every answer is counted."""

    server: RegistryHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: the Python client reuses connections

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        endpoint = "unmatched"
        try:
            body = self._read_body()
            if path == "/healthz" and method == "GET":
                endpoint = "/healthz"
                self._health()
                return
            if path == "/metrics" and method == "GET":
                endpoint = "/metrics"
                self._send(200, generate_latest(self.server.metrics.collectors), CONTENT_TYPE_LATEST)
                return
            found = self.server.router.match(method, path)
            if found is None:
                raise RegistryError(404, 404, f"HTTP 404 Not Found: {path}")
            endpoint, handler, params = found
            result = handler(Request(params, query, body))
            self._send_json(200, result)
        except RegistryError as exc:
            self._send_json(exc.status, {"error_code": exc.code, "message": exc.message})
        except Exception as exc:
            log.exception("request failed", extra={"method": method, "path": path})
            self._send_json(500, {"error_code": 50001, "message": f"Internal error: {exc}"})
        finally:
            self.server.metrics.requests.labels(endpoint, method, str(self._status)).inc()

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise RegistryError(413, 413, f"Request body larger than {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _health(self) -> None:
        ok = self.server.registry.healthy()
        self._send_json(200 if ok else 503, {"status": "ok" if ok else "unavailable"})

    def _send_json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode(), CONTENT_TYPE)

    _status = 0

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self._status = status
        self.send_response(
            status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else None
        )
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are logged as structured records at debug level instead of the stdlib's stderr lines.
        log.debug("http", extra={"client": self.client_address[0], "line": format % args})


def serve(registry: Registry, host: str, port: int) -> tuple[RegistryHTTPServer, threading.Thread]:
    """Start serving on a daemon thread; the caller owns ``server.shutdown()``."""
    server = RegistryHTTPServer((host, port), registry)
    thread = threading.Thread(target=server.serve_forever, name="schema-registry-http", daemon=True)
    thread.start()
    log.info("schema registry listening", extra={"url": server.url, "topic": registry.log.topic})
    return server, thread
