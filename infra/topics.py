"""Making a Kafka cluster's topics match the catalogue (``schemas.topics.CATALOGUE``), idempotently.

Only what the catalogue names is enforced: missing topics are created, catalogue configs whose
effective value differs are set, partitions grow when the catalogue asks for more. Nothing is ever
deleted and partitions never shrink (Kafka cannot; a smaller count in the catalogue is a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from schemas.topics import CATALOGUE, TopicSpec

log = logging.getLogger(__name__)

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True, slots=True)
class TopicChange:
    """What ``ensure_topics`` did to one topic."""

    topic: str
    action: Action
    partitions: tuple[int, int] | None = None  # (before, after) when partitions were added
    configs: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # key -> (before, after)
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        parts = []
        if self.partitions:
            parts.append(f"partitions {self.partitions[0]} -> {self.partitions[1]}")
        parts += [f"{k} {old} -> {new}" for k, (old, new) in self.configs.items()]
        parts += list(self.warnings)
        return "; ".join(parts)


def _admin(admin_conf: dict[str, Any]) -> AdminClient:
    # librdkafka's own log lines go through Python logging (structured), not raw stderr.
    return AdminClient(dict(admin_conf), logger=logging.getLogger("infra.kafka.librdkafka"))


def _describe_configs(
    admin: AdminClient, names: Sequence[str], timeout: float
) -> dict[str, dict[str, ConfigEntry]]:
    if not names:
        return {}
    futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, n) for n in names], request_timeout=timeout
    )
    return {res.name: fut.result(timeout=timeout + 5) for res, fut in futures.items()}


def ensure_topics(
    admin_conf: dict[str, Any],
    catalogue: Iterable[TopicSpec] = CATALOGUE,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> list[TopicChange]:
    """Create or update every catalogue topic; returns one ``TopicChange`` per topic, in catalogue order.

    ``replication_factor`` applies to topics this call creates (1 for the local broker, 3 in production);
    an existing topic's replication is reported, not changed.
    """
    specs = list(catalogue)
    admin = _admin(admin_conf)
    meta = admin.list_topics(timeout=timeout)
    missing = [s for s in specs if s.name not in meta.topics]
    created: set[str] = set()

    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, replication_factor, config=dict(s.configs)) for s in missing],
            request_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout + 5)
                created.add(name)
                log.info("topic created", extra={"topic": name})
            except KafkaException as exc:
                # Someone else created it between our list and our create: treat it as existing.
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        if set(s.name for s in missing) - created:
            meta = admin.list_topics(timeout=timeout)

    existing = [s for s in specs if s.name not in created]
    described = _describe_configs(admin, [s.name for s in existing], timeout)
    changes: dict[str, TopicChange] = {n: TopicChange(n, "created") for n in created}

    config_updates: list[ConfigResource] = []
    partition_updates: list[NewPartitions] = []
    pending: dict[str, dict[str, Any]] = {}
    for spec in existing:
        current = described[spec.name]
        diff = {
            key: (current[key].value if key in current else None, value)
            for key, value in spec.configs.items()
            if key not in current or current[key].value != value
        }
        have = len(meta.topics[spec.name].partitions)
        warnings: list[str] = []
        grow = None
        if have < spec.partitions:
            grow = (have, spec.partitions)
            partition_updates.append(NewPartitions(spec.name, spec.partitions))
        elif have > spec.partitions:
            warnings.append(
                f"has {have} partitions, catalogue says {spec.partitions}; partitions never shrink"
            )
            log.warning(
                "topic has more partitions than the catalogue", extra={"topic": spec.name, "have": have}
            )
        if diff:
            entries = [
                ConfigEntry(k, new, incremental_operation=AlterConfigOpType.SET)
                for k, (_, new) in diff.items()
            ]
            config_updates.append(ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=entries))
        pending[spec.name] = {"configs": diff, "partitions": grow, "warnings": tuple(warnings)}

    if config_updates:
        for res, fut in admin.incremental_alter_configs(config_updates, request_timeout=timeout).items():
            fut.result(timeout=timeout + 5)
            log.info(
                "topic configs updated", extra={"topic": res.name, "configs": pending[res.name]["configs"]}
            )
    if partition_updates:
        for name, fut in admin.create_partitions(partition_updates, request_timeout=timeout).items():
            fut.result(timeout=timeout + 5)
            log.info(
                "topic partitions increased", extra={"topic": name, "partitions": pending[name]["partitions"]}
            )

    for name, p in pending.items():
        action: Action = "updated" if p["configs"] or p["partitions"] else "unchanged"
        changes[name] = TopicChange(name, action, p["partitions"], p["configs"], p["warnings"])
    return [changes[s.name] for s in specs]


def describe_topics(
    admin_conf: dict[str, Any], names: Iterable[str] | None = None, *, timeout: float = 15.0
) -> dict[str, dict[str, Any]]:
    """Partitions, replication and topic-level (non-default) configs of ``names`` (default: catalogue).

    A topic that does not exist maps to ``{"exists": False}``.
    """
    wanted = list(names) if names is not None else [s.name for s in CATALOGUE]
    admin = _admin(admin_conf)
    meta = admin.list_topics(timeout=timeout)
    present = [n for n in wanted if n in meta.topics]
    described = _describe_configs(admin, present, timeout)
    out: dict[str, dict[str, Any]] = {}
    for name in wanted:
        if name not in meta.topics:
            out[name] = {"exists": False}
            continue
        partitions = meta.topics[name].partitions
        out[name] = {
            "exists": True,
            "partitions": len(partitions),
            "replication_factor": min((len(p.replicas) for p in partitions.values()), default=0),
            # Topic-level overrides only: what an operator (or the catalogue) set on this topic.
            "configs": {
                key: entry.value
                for key, entry in sorted(described[name].items())
                if _source(entry) == ConfigSource.DYNAMIC_TOPIC_CONFIG
            },
            # Every config in force, overrides and inherited broker defaults alike.
            "effective": {key: entry.value for key, entry in sorted(described[name].items())},
        }
    return out


def _source(entry: ConfigEntry) -> ConfigSource:
    # Described entries carry the source as a plain int in some client versions, an enum in others.
    return ConfigSource(entry.source) if not isinstance(entry.source, ConfigSource) else entry.source


def list_topics(
    admin_conf: dict[str, Any], *, timeout: float = 15.0, internal: bool = False
) -> dict[str, int]:
    """Every topic in the cluster with its partition count (internal ``__*`` topics left out by default)."""
    meta = _admin(admin_conf).list_topics(timeout=timeout)
    return {
        name: len(t.partitions)
        for name, t in sorted(meta.topics.items())
        if internal or not name.startswith("__")
    }


def drift(spec: TopicSpec, info: dict[str, Any]) -> list[str]:
    """How a described topic differs from its catalogue entry (empty: it matches)."""
    if not info.get("exists"):
        return ["missing"]
    out = []
    if info["partitions"] < spec.partitions:
        out.append(f"partitions {info['partitions']} < {spec.partitions}")
    configs = info.get("effective") or info.get("configs", {})
    out += [f"{k}={configs.get(k)} (want {v})" for k, v in spec.configs.items() if configs.get(k) != v]
    return out
