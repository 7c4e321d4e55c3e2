"""``python -m infra.schema_registry``: serve the registry until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from urllib.parse import urlparse

from infra.schema_registry.kafkalog import KafkaLog, LogError
from infra.schema_registry.server import serve
from infra.schema_registry.service import Registry
from its.logs import configure_logging
from its.settings import get_settings

log = logging.getLogger("infra.schema_registry")


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    default = urlparse(settings.schema_registry_url)
    parser = argparse.ArgumentParser(prog="python -m infra.schema_registry", description=__doc__)
    parser.add_argument("--host", default=default.hostname or "127.0.0.1")
    parser.add_argument("--port", type=int, default=default.port or 8081)
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap, help="Kafka bootstrap servers")
    parser.add_argument(
        "--topic", default=settings.schema_registry_topic, help="compacted topic for the state"
    )
    args = parser.parse_args(argv)
    configure_logging(settings.log_level, settings.log_format)

    stop = threading.Event()
    # The handlers only set a flag: shutting the server down is done here, outside its serving thread.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    registry = Registry(KafkaLog(settings.kafka_config(**{"bootstrap.servers": args.bootstrap}), args.topic))
    try:
        registry.load()
    except LogError as exc:
        log.error("cannot load the registry state", extra={"error": str(exc), "bootstrap": args.bootstrap})
        return 1
    server, thread = serve(registry, args.host, args.port)
    while not stop.wait(0.5):
        pass
    log.info("shutting down")
    server.shutdown()
    server.server_close()
    thread.join(10)
    registry.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
