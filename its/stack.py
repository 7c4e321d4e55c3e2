"""The local stack every command and the demo stand on: the Kafka broker and the schema registry.

``up`` starts whatever is not running yet and remembers what it started, so ``down`` stops only that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

from infra.kafka.broker import LocalKafka
from infra.schema_registry import runner as registry
from its.settings import Settings

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def registry_is_local(settings: Settings) -> bool:
    """True when the configured registry is the one this project runs (not Confluent's, not Karapace)."""
    return (urlparse(settings.schema_registry_url).hostname or "") in LOCAL_HOSTS


@dataclass(slots=True)
class Stack:
    settings: Settings
    started: list[str] = field(default_factory=list)

    def up(self, timeout: float = 180.0) -> Stack:
        """Start the local broker and registry if they are not running (idempotent)."""
        kafka = LocalKafka.from_settings(self.settings)
        if not kafka.is_running():
            kafka.start(timeout=timeout)
            self.started.append("kafka")
        url = urlparse(self.settings.schema_registry_url)
        if registry_is_local(self.settings) and not registry.healthy(self.settings.schema_registry_url):
            registry.start_background(self.settings, host=url.hostname or "127.0.0.1", port=url.port or 8081)
            self.started.append("registry")
        return self

    def down(self, everything: bool = False) -> list[str]:
        """Stop what ``up`` started (or everything local with ``everything``); returns what was stopped."""
        stopped = []
        if (everything or "registry" in self.started) and registry.stop_background(self.settings):
            stopped.append("registry")
        if (everything or "kafka" in self.started) and LocalKafka.from_settings(self.settings).stop():
            stopped.append("kafka")
        self.started.clear()
        return stopped
