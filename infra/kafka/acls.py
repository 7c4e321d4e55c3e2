"""Who may do what on the secure broker: the principals of the platform and their least-privilege ACLs.

One row per grant. Broker ACLs name topics, consumer groups and transactional ids; they cannot see
record keys, so "an edge site writes only its own cameras" is enforced by record signatures instead
(``infra.kafka.signing``): the ACL lets ``edge-<prefix>`` write the three edge topics, the processors
reject any record whose key lies outside the signer's prefix.

``admin`` (operators, topic management) and ``broker`` (the broker's own certificate) are super users
and need no rows. Everything not granted here is denied (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from schemas import topics as t

SUPER_USERS = ("admin", "broker")
EDGE_PREFIX = "edge-"
EDGE_TOPICS = (t.FRAMES, t.DETECTIONS, t.HEALTH)
TOKENS_TOPIC = "its.camera-tokens.v1"  # its.onboarding.TOKENS_TOPIC (not imported: keeps this module light)
SCRAM_ITERATIONS = 8192  # Kafka's minimum for SCRAM-SHA-512 is 4096


@dataclass(frozen=True, slots=True)
class Grant:
    """ALLOW ``operations`` on one resource (a literal name or a name prefix) to ``User:principal``."""

    principal: str
    resource: str  # "topic", "group" or "transactional_id"
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False

    def bindings(self) -> list[AclBinding]:
        restype = {
            "topic": ResourceType.TOPIC,
            "group": ResourceType.GROUP,
            "transactional_id": ResourceType.TRANSACTIONAL_ID,
        }[self.resource]
        pattern = ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL
        return [
            AclBinding(
                restype,
                self.name,
                pattern,
                f"User:{self.principal}",
                "*",
                AclOperation[op.upper()],
                AclPermissionType.ALLOW,
            )
            for op in self.operations
        ]


def _read(principal: str, *topics: str) -> list[Grant]:
    return [Grant(principal, "topic", name, ("read", "describe")) for name in topics]


def _write(principal: str, *topics: str) -> list[Grant]:
    return [Grant(principal, "topic", name, ("write", "describe")) for name in topics]


def _group(principal: str, name: str, *, prefixed: bool = False) -> Grant:
    return Grant(principal, "group", name, ("read", "describe"), prefixed)


def _transactions(principal: str, prefix: str) -> Grant:
    # transactional.id = "<processor name>-<instance id>" (processors.runtime): one prefix per role.
    return Grant(principal, "transactional_id", prefix, ("write", "describe"), prefixed=True)


def edge_principal(camera_prefix: str) -> str:
    """The principal of the edge site whose cameras' ids start with ``camera_prefix``."""
    if not camera_prefix or any(c in camera_prefix for c in " ,;=*/\\"):
        raise ValueError(f"camera prefix {camera_prefix!r} must be non-empty without ' ,;=*/\\'")
    return EDGE_PREFIX + camera_prefix


def service_grants(registry_topic: str = "_its_schemas") -> list[Grant]:
    """The platform's own components, each reading and writing only its topics."""
    return [
        # Schema registry: its compacted state topic (created on first start) and throwaway groups
        # it never joins (assign() only), whose FindCoordinator still needs DESCRIBE.
        Grant("schema-registry", "topic", registry_topic, ("read", "write", "describe", "create")),
        _group("schema-registry", "its-schema-registry-", prefixed=True),
        # Inference: frames in, detections and dead letters out, in transactions; reads the model registry.
        *_read("inference", t.FRAMES, t.MODELS),
        *_write("inference", t.DETECTIONS, t.DLQ),
        _group("inference", "its-inference"),
        _group("inference", "its-model-registry-", prefixed=True),
        _transactions("inference", "inference-"),
        # Analytics: detections, signals, registrations, acknowledgements and its own snapshots in.
        *_read("analytics", t.DETECTIONS, t.SIGNALS, t.CAMERAS, t.ALERT_ACKS, t.ANALYTICS_STATE),
        *_write("analytics", t.EVENTS, t.ALERTS, t.TRAFFIC_STATS, t.ANALYTICS_STATE, t.DLQ),
        _group("analytics", "its-analytics", prefixed=True),  # its-analytics and its-analytics-bootstrap
        _transactions("analytics", "analytics-"),
        # ClickHouse sink: reads what it stores; undecodable records go to the DLQ, never dropped.
        *_read("sink", t.CAMERAS, t.DETECTIONS, t.EVENTS, t.ALERTS, t.TRAFFIC_STATS, t.HEALTH, t.AUDIT),
        *_write("sink", t.DLQ),
        _group("sink", "its-clickhouse-sink", prefixed=True),  # the sink group and its -redo reader
        _group("sink", "its-replay-", prefixed=True),
        # Webhook sink: alerts to integrators' endpoints, failures to the DLQ.
        *_read("webhook-sink", t.ALERTS),
        *_write("webhook-sink", t.DLQ),
        _group("webhook-sink", "its-webhook-sink", prefixed=True),
        # Integrators subscribe to alerts, nothing else, in groups named after themselves.
        *_read("integrator", t.ALERTS),
        _group("integrator", "integrator-", prefixed=True),
        # Operators' tooling without super-user rights: camera registrations, model promotion, acks.
        *_read("operator", t.CAMERAS, t.MODELS, t.ALERT_ACKS),
        *_write("operator", t.CAMERAS, t.MODELS, t.ALERT_ACKS),
        *_write("operator", t.AUDIT),  # append-only for everyone but the super users: no READ, no DELETE
        _group("operator", "its-camera-cli-", prefixed=True),
        _group("operator", "its-model-registry-", prefixed=True),
        # Camera onboarding (its/onboarding.py): one-time token hashes, used up in a transaction.
        *_read("operator", TOKENS_TOPIC),
        *_write("operator", TOKENS_TOPIC),
        _group("operator", "its-token-reader-", prefixed=True),
        _transactions("operator", "its-camera-token-"),
        # Operator console (its/console): a read-only view of every partition, plus acknowledgements.
        *_read("console", t.CAMERAS, t.ALERTS, t.ALERT_ACKS, t.EVENTS, t.HEALTH, t.DETECTIONS, t.FRAMES),
        *_write("console", t.ALERT_ACKS, t.AUDIT),
        _group("console", "its-console", prefixed=True),
        # Signal controllers' gateway: phases only.
        *_write("signals", t.SIGNALS),
        # The camera simulator plays a whole city (registrations, signals and edge sites) in demos and
        # tests; it signs its records as an edge site like a real one (see ``infra.kafka.signing``).
        *_write("simulator", t.CAMERAS, t.SIGNALS, *EDGE_TOPICS),
    ]


def edge_grants(camera_prefix: str) -> list[Grant]:
    """An edge site: WRITE on frames, detections and health; no READ anywhere, no group."""
    return _write(edge_principal(camera_prefix), *EDGE_TOPICS)


def acl_table(registry_topic: str = "_its_schemas", edge_prefixes: Iterable[str] = ()) -> list[Grant]:
    """Every grant of the platform: the services plus one edge principal per camera prefix."""
    grants = service_grants(registry_topic)
    for prefix in edge_prefixes:
        grants += edge_grants(prefix)
    return grants


def service_principals() -> list[str]:
    """The non-super principals of ``service_grants`` in table order."""
    return list(dict.fromkeys(g.principal for g in service_grants()))


def create_acls(admin: AdminClient, grants: Iterable[Grant], timeout: float = 30.0) -> int:
    """Create the bindings of ``grants`` (idempotent: an existing binding is left as it is)."""
    # A topic both read and written gets DESCRIBE twice; the broker refuses duplicates in one request.
    bindings = list({str(b): b for g in grants for b in g.bindings()}.values())
    if not bindings:
        return 0
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        future.result(timeout=timeout)
    return len(bindings)


def upsert_scram_users(admin: AdminClient, passwords: dict[str, str], timeout: float = 30.0) -> None:
    """Create or update SCRAM-SHA-512 credentials (librdkafka salts and hashes the password)."""
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(user, info, pw.encode()) for user, pw in passwords.items()]
    if not upserts:
        return
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).values():
        future.result(timeout=timeout)
