"""What every long-running process shares: ``/metrics`` + ``/healthz`` over HTTP and a clean SIGTERM.

    with Service("inference", port=settings.metrics_port, health=lambda: (consumer_alive, {...})) as svc:
        while not svc.stopping:
            ...

``Service`` installs SIGTERM/SIGINT handlers that set ``stopping`` (the loop finishes its batch and
exits), serves Prometheus metrics from the default registry and a JSON health document.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    server: _ObservabilityServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, status, ctype = generate_latest(self.server.registry), 200, CONTENT_TYPE_LATEST
        elif path in ("/healthz", "/health"):
            try:
                ok, details = self.server.health()
            except Exception as exc:  # a failing check is itself unhealthy, never a crash
                ok, details = False, {"error": repr(exc)}
            doc = {"status": "ok" if ok else "unhealthy", "service": self.server.name, **details}
            body, status, ctype = (
                json.dumps(doc, default=str).encode(),
                200 if ok else 503,
                "application/json",
            )
        else:
            body, status, ctype = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(
        self, format: str, *args: Any
    ) -> None:  # scrapes every few seconds: keep them out of the log
        return


class _ObservabilityServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, addr: tuple[str, int], name: str, health: HealthCheck, registry: CollectorRegistry
    ) -> None:
        super().__init__(addr, _Handler)
        self.name, self.health, self.registry = name, health, registry


class Service:
    """Metrics + health endpoint and graceful-stop flag for one process (a context manager)."""

    def __init__(
        self,
        name: str,
        port: int = 0,
        host: str | None = None,
        health: HealthCheck | None = None,
        registry: CollectorRegistry = REGISTRY,
        handle_signals: bool = True,
    ) -> None:
        self.name = name
        self._stop = threading.Event()
        self._health = health or (lambda: (True, {}))
        # Loopback by default; ITS_METRICS_HOST=0.0.0.0 in containers so Prometheus and probes reach it.
        host = host or os.environ.get("ITS_METRICS_HOST", "127.0.0.1")
        self._server = _ObservabilityServer((host, port), name, self._checked_health, registry)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{name}-http", daemon=True)
        self._handle_signals = handle_signals
        self.started_at = time.time()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was requested meanwhile."""
        return self._stop.wait(seconds)

    def _checked_health(self) -> tuple[bool, dict[str, Any]]:
        ok, details = self._health()
        return ok and not self.stopping, {"uptime_s": round(time.time() - self.started_at, 1), **details}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stop requested", extra={"service": self.name, "signal": signal.Signals(signum).name})
        self._stop.set()

    def __enter__(self) -> Service:
        if self._handle_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._thread.start()
        log.info("service started", extra={"service": self.name, "metrics": f"{self.url}/metrics"})
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        log.info("service stopped", extra={"service": self.name})
