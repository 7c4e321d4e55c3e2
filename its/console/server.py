"""Run the console: Kafka feed thread + uvicorn, stopped cleanly by SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from its.console.app import Console, create_app
from its.settings import Settings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after its graceful shutdown, so the process would die by the
    signal (status -15) before the feed is closed; here the signal only stops the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's own handlers: open requests finish, streams close)."""
    cfg = settings.console
    console = Console(settings)
    app = create_app(console)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_config=None,  # keep the project's structured log handler
        access_log=False,
        timeout_graceful_shutdown=3,  # server-sent event streams never end by themselves
    )
    server = _Server(config)
    console.start()
    log.info(
        "console started",
        extra={"url": f"http://{cfg.host}:{cfg.port}/", "read_only": console.read_only,
               "kafka": settings.kafka_bootstrap, "clickhouse": console.traffic.target.describe()},
    )  # fmt: skip
    try:
        server.run()
    finally:
        console.close()
        log.info("console stopped")
