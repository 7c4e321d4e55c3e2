"""Camera onboarding: one-time registration tokens exchanged for the camera's Kafka credentials.

* ``issue``: a random 256-bit token (shown once); only its SHA-256 is stored, on the compacted
  topic ``its.camera-tokens.v1`` (key = the hash), as the audit entry that created it
  (``camera.token.create``, expiry in ``details``). Kafka, not ClickHouse: every process and host
  reaches the broker, while the embedded ClickHouse store belongs to the sink process alone; and
  Kafka transactions give the single-use guarantee that ClickHouse (no compare-and-set) cannot.
* ``redeem``: a transactional producer whose ``transactional.id`` is derived from the token hash
  fences every other redemption of the same token; it reads the token's state (read_committed),
  refuses an unknown, used or expired token, and commits a ``camera.token.use`` entry under the same
  key. Of two concurrent redemptions at most one commits.
* ``create_scram_user``: the camera's principal ``edge-<camera>`` with a random password, through
  ``AdminClient.alter_user_scram_credentials`` (SCRAM-SHA-512, stored by the KRaft controller).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from schemas import records as r
from schemas import topics as t
from schemas.serde import AvroDeserializer, AvroSerializer, registry_client

if TYPE_CHECKING:
    from its.settings import Settings

TOKENS_TOPIC = "its.camera-tokens.v1"
TOKEN_PREFIX = "itsct_"  # recognisable by secret scanners
DEFAULT_TTL_S = 24 * 3600
SCRAM_ITERATIONS = 8192
CREATE, USE = "camera.token.create", "camera.token.use"
_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenRefused(Exception):
    """A token that may not be redeemed: unknown, already used, expired or being used concurrently."""

    def __init__(self, reason: str, camera_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.camera_id = camera_id


@dataclasses.dataclass(frozen=True)
class IssuedToken:
    """What ``issue`` returns: the secret (only here) and its stored record."""

    token: str
    camera_id: str
    expires_ts_ms: int
    record: r.AuditEntry

    @property
    def digest(self) -> str:
        return token_hash(self.token)


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``24h``, ``7d`` -> seconds (> 0)."""
    match = _TTL.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"TTL must be a positive number with an optional unit s, m, h or d; got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def check_camera_id(camera_id: str) -> str:
    """Camera ids become principal names (``edge-<id>``): letters, digits, '.', '_' and '-' only."""
    if not _CAMERA_ID.match(camera_id):
        raise ValueError(
            f"camera id {camera_id!r} must be 1-63 characters of letters, digits, '.', '_' or '-'"
        )
    return camera_id


def token_hash(token: str) -> str:
    """SHA-256 of the token: enough with 256 random bits (nothing to brute-force, unlike a password)."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


def principal(camera_id: str) -> str:
    return f"edge-{camera_id}"


class TokenStore:
    """The token hashes on their compacted topic (one partition: a total order, one read to fold)."""

    def __init__(self, settings: Settings, topic: str = TOKENS_TOPIC) -> None:
        self.settings = settings
        self.topic = topic
        registry = registry_client(settings.schema_registry_url)
        # Same contract as the audit trail: a token's state is the last audited fact about it.
        self._encode = AvroSerializer(registry, r.AuditEntry, f"{topic}-value")
        self._decode = AvroDeserializer(registry, r.AuditEntry)

    def ensure_topic(self, timeout: float = 30.0) -> None:
        """Create the compacted topic if missing (replicated up to 3 where the cluster has the brokers)."""
        from infra.topics import ensure_topics

        admin = AdminClient(self.settings.kafka_config())
        meta = admin.list_topics(timeout=timeout)
        if self.topic in meta.topics and meta.topics[self.topic].error is None:
            return  # exists: nothing to check, so the operator needs no DescribeConfigs right on it
        brokers = len(meta.brokers)
        spec = t.TopicSpec(
            self.topic,
            1,
            r.AuditEntry.AVRO_NAME,
            "one-time camera registration tokens: latest state per token hash",
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "min.insync.replicas": "1"},
        )
        ensure_topics(
            self.settings.kafka_config(), [spec], replication_factor=min(3, brokers), timeout=timeout
        )

    def issue(self, camera_id: str, ttl_s: int, actor: str) -> IssuedToken:
        """A new token for ``camera_id`` valid ``ttl_s`` seconds; its hash is stored, the token returned."""
        check_camera_id(camera_id)
        self.ensure_topic()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time_ns() // 1_000_000
        expires = now + ttl_s * 1000
        rec = r.AuditEntry(
            audit_id=str(uuid.uuid4()), ts_ms=now, actor=actor, action=CREATE, target=camera_id,
            outcome="ok", details={"expires_ts_ms": str(expires), "ttl_s": str(ttl_s)},
            component="onboarding",
        )  # fmt: skip
        producer = Producer(self.settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
        errors: list[KafkaError] = []
        producer.produce(
            self.topic,
            key=token_hash(token).encode(),
            value=self._encode(rec),
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        if producer.flush(15) or errors:
            raise RuntimeError(f"the token could not be stored: {errors or 'not confirmed within 15 s'}")
        return IssuedToken(token, camera_id, expires, rec)

    def states(self, timeout: float = 15.0) -> dict[str, r.AuditEntry]:
        """Every token hash -> its latest committed record (the topic folded to its current end)."""
        consumer = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"its-token-reader-{uuid.uuid4().hex[:8]}",  # assign only, never commits
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                }
            )
        )
        out: dict[str, r.AuditEntry] = {}
        try:
            meta = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if meta is None or meta.error is not None:
                return out  # no token was ever issued on this cluster
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {self.topic} took over {timeout:g} s")
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise KafkaException(err)
                key = (msg.key() or b"").decode()
                if msg.value() is None:
                    out.pop(key, None)
                else:
                    out[key] = self._decode.decode(msg)
        finally:
            consumer.close()

    @staticmethod
    def _check(state: r.AuditEntry | None, actor: str, now: int, expect_camera: str | None) -> r.AuditEntry:
        """The use record for a redeemable token's ``state``, or :class:`TokenRefused`."""
        if state is None:
            raise TokenRefused("unknown token")
        camera = state.target
        if state.action == USE:
            used_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.ts_ms / 1000))
            raise TokenRefused(f"token already used at {used_at} by {state.actor}", camera)
        if expect_camera is not None and expect_camera != camera:
            raise TokenRefused(f"token is for camera {camera}, not {expect_camera}", camera)
        expires = int(state.details.get("expires_ts_ms", "0"))
        if now >= expires:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires / 1000))
            raise TokenRefused(f"token expired at {at}", camera)
        return r.AuditEntry(
            audit_id=str(uuid.uuid4()), ts_ms=now, actor=actor, action=USE, target=camera, outcome="ok",
            details={**state.details, "issued_by": state.actor, "issued_ts_ms": str(state.ts_ms)},
            component="onboarding",
        )  # fmt: skip

    def redeem(
        self, token: str, actor: str, *, expect_camera: str | None = None, now_ms: int | None = None
    ) -> r.AuditEntry:
        """Mark ``token`` used and return the committed use record, or raise :class:`TokenRefused`.

        ``expect_camera``: refuse (without using the token up) when it was issued for another camera.
        """
        digest = token_hash(token)
        if not token.strip().startswith(TOKEN_PREFIX):
            raise TokenRefused("not a camera registration token")
        producer: Producer | None = Producer(
            self.settings.kafka_config(
                **{"transactional.id": f"its-camera-token-{digest[:40]}", "transaction.timeout.ms": 60_000}
            )
        )
        try:
            # Fences any other producer redeeming this token: its commit now fails.
            producer.init_transactions(30)
            state = self.states().get(digest)
            now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
            use = self._check(state, actor, now, expect_camera)
            producer.begin_transaction()
            producer.produce(self.topic, key=digest.encode(), value=self._encode(use))
            try:
                producer.commit_transaction(30)
            except KafkaException as exc:
                err = exc.args[0]
                if not err.fatal():  # fenced is fatal: the newer instance already aborted this one
                    with contextlib.suppress(KafkaException):
                        producer.abort_transaction(10)  # an open transaction would hold back readers
                if err.code() == KafkaError._FENCED:
                    raise TokenRefused("token is being redeemed concurrently", use.target) from None
                raise
        finally:
            # A refusal's traceback keeps this frame alive: drop the producer (and its threads) now.
            producer = None
        return use


def create_scram_user(settings: Settings, username: str, password: str, timeout: float = 30.0) -> None:
    """Create or replace ``username``'s SCRAM-SHA-512 credential on the cluster (KRaft stores it)."""
    admin = AdminClient(settings.kafka_config())
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(username, info, password.encode(), secrets.token_bytes(32))],
        request_timeout=timeout,
    )
    for fut in futures.values():
        fut.result(timeout=timeout + 5)


def scram_mechanisms(settings: Settings, username: str, timeout: float = 30.0) -> list[str]:
    """The SCRAM mechanisms the cluster holds for ``username`` (empty when none)."""
    admin = AdminClient(settings.kafka_config())
    futures = admin.describe_user_scram_credentials([username], request_timeout=timeout)
    try:
        desc = futures[username].result(timeout=timeout + 5)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
            return []
        raise
    return [str(info.mechanism.name) for info in desc.scram_credential_infos]


def credentials_config(settings: Settings, username: str, password: str) -> dict[str, object]:
    """The camera's settings file (``ITS_CONFIG``): its SCRAM principal and, when this process holds
    the platform signing secret, the site's own record-signing key (``infra.kafka.signing``)."""
    own = settings.kafka_config()
    protocol = str(own.get("security.protocol", "")).upper()
    sec: dict[str, str] = {
        # The secure broker's listener is SASL_SSL; keep the operator's own choice when it is SASL.
        "protocol": protocol if protocol.startswith("SASL") else "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": username,
        "sasl_password": password,
    }
    if own.get("ssl.ca.location"):
        sec["ssl_ca_location"] = str(own["ssl.ca.location"])
    secret = settings.kafka_security.signing_secret
    if secret is not None:
        from infra.kafka.signing import derive_key

        # The site signs as its principal's name; only this one key leaves, never the secret.
        sec["signer"] = username
        sec["signing_key"] = derive_key(secret.get_secret_value().encode(), username).hex()
    return {"kafka_bootstrap": settings.kafka_bootstrap, "kafka_security": sec}


def grant_edge_acls(settings: Settings, camera_id: str, timeout: float = 30.0) -> str:
    """WRITE on the edge topics for ``edge-<camera>``; a broker without an authorizer needs none."""
    from infra.kafka.acls import create_acls, edge_grants

    admin = AdminClient(settings.kafka_config())
    try:
        count = create_acls(admin, edge_grants(camera_id), timeout)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.SECURITY_DISABLED:
            return "none: the broker has no authorizer"
        raise
    return f"{count} bindings"


def write_credentials(path: Path, config: dict[str, object], camera_id: str) -> Path:
    """Write ``config`` as YAML readable by its owner only (0600, also when the file existed)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        body = f"# Kafka credentials of camera {camera_id} (its camera register). Secret: keep 0600.\n"
        os.write(fd, (body + yaml.safe_dump(config, sort_keys=False)).encode())
    finally:
        os.close(fd)
    return path
