"""The local broker's configuration files: KRaft ``server.properties`` and a log4j 1 config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# 8 MiB frames plus record/batch overhead; topics may raise max.message.bytes up to this.
MESSAGE_MAX_BYTES = 10 * 1024 * 1024


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dirs: Path,
    node_id: int = 1,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Properties of a single combined broker+controller node (KRaft), good for transactions."""
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(log_dirs),
        # One node: internal topics cannot have more replicas than brokers, or groups and
        # transactions never become available.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # 50 partitions each (the default) only slow the first group/transaction on a laptop.
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.num.partitions": "12",
        "num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Topics come from the catalogue only (`its topics ensure`); a typo must not create one.
        "auto.create.topics.enable": "false",
        "message.max.bytes": str(MESSAGE_MAX_BYTES),
        "replica.fetch.max.bytes": str(MESSAGE_MAX_BYTES),
        # The cleaner's 128 MiB default dedupe buffer is a sixth of a 768 MiB heap.
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        "num.network.threads": "3",
        "num.io.threads": "4",
    }
    props.update(extra or {})
    return props


def render_properties(props: Mapping[str, str]) -> str:
    lines = ["# Written by infra.kafka on every start; edit LocalKafka(extra_properties=...) instead."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def log4j_properties() -> str:
    """log4j 1 config: a rolling ``server.log`` under ``-Dkafka.logs.dir`` (a broker runs for weeks)."""
    return """\
log4j.rootLogger=INFO, server
log4j.appender.server=org.apache.log4j.RollingFileAppender
log4j.appender.server.File=${kafka.logs.dir}/server.log
log4j.appender.server.MaxFileSize=50MB
log4j.appender.server.MaxBackupIndex=5
log4j.appender.server.layout=org.apache.log4j.PatternLayout
log4j.appender.server.layout.ConversionPattern=[%d] %p %m (%c)%n
# Per-partition state changes and every request are too chatty for an operator's log.
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients.NetworkClient=WARN
"""
