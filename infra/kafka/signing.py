"""Record signatures: what enforces "an edge site writes only its own cameras", which ACLs cannot.

Kafka ACLs see topic names, not record keys. So every record on an edge topic (frames, detections,
health) carries two headers:

    its-signer  the signer's name: ``edge-<camera prefix>`` for a site, ``svc-<processor>`` for the
                platform's own producers (the inference processor writes cloud detections)
    its-sig     HMAC-SHA256(signer key, "its-sig-v1" | topic | key | SHA-256(value)), hex

A signer's key is derived from one platform secret: ``HMAC-SHA256(secret, "its-site-key-v1" | name)``.
A site is handed only its own key when it is registered; the consuming processors hold the secret and
re-derive any signer's key. A record on an edge topic is rejected to the DLQ when it is unsigned, its
signature does not verify, or its key (the camera id) does not start with the site's prefix.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message, Producer

from infra.kafka.acls import EDGE_PREFIX, EDGE_TOPICS

SIGNER_HEADER = "its-signer"
SIG_HEADER = "its-sig"
SERVICE_PREFIX = "svc-"


def derive_key(secret: bytes, signer: str) -> bytes:
    """The signing key of ``signer`` under the platform secret."""
    return hmac.new(secret, b"its-site-key-v1\0" + signer.encode(), hashlib.sha256).digest()


def _mac(key: bytes, topic: str, record_key: bytes | None, value: bytes | None) -> str:
    # The value enters as its digest: one pass over a multi-MB frame, and the MAC input stays small.
    digest = hashlib.sha256(value or b"").digest()
    body = b"its-sig-v1\0" + topic.encode() + b"\0" + (record_key or b"") + b"\0" + digest
    return hmac.new(key, body, hashlib.sha256).hexdigest()


class Signer:
    """Signs records as ``name`` with ``key`` (a site's issued key, or one derived for a service)."""

    def __init__(self, name: str, key: bytes) -> None:
        self.name = name
        self.key = key

    def headers(self, topic: str, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        return [(SIGNER_HEADER, self.name.encode()), (SIG_HEADER, _mac(self.key, topic, key, value).encode())]

    @classmethod
    def from_settings(cls, settings: Any, service: str | None = None) -> Signer | None:
        """The signer configured in ``settings.kafka_security``; None when signing is off.

        An edge site has ``signer`` and ``signing_key``; a processor holding the platform secret signs
        as ``svc-<service>``.
        """
        sec = settings.kafka_security
        if sec.signer and sec.signing_key is not None:
            return cls(sec.signer, bytes.fromhex(sec.signing_key.get_secret_value()))
        if service and sec.signing_secret is not None:
            name = SERVICE_PREFIX + service
            return cls(name, derive_key(sec.signing_secret.get_secret_value().encode(), name))
        return None


def _to_bytes(data: Any) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    return str(data).encode()


class SignedProducer(Producer):
    """A ``confluent_kafka.Producer`` that adds the signature headers to every edge-topic record."""

    def __init__(self, conf: dict[str, Any], signer: Signer, **kwargs: Any) -> None:
        super().__init__(conf, **kwargs)
        self._signer = signer

    def produce(self, topic: str, value: Any = None, key: Any = None, *args: Any, **kwargs: Any) -> None:
        if topic in EDGE_TOPICS:
            value, key = _to_bytes(value), _to_bytes(key)
            extra = self._signer.headers(topic, key, value)
            kwargs["headers"] = [*(kwargs.get("headers") or []), *extra]
        super().produce(topic, value, key, *args, **kwargs)


def make_producer(conf: dict[str, Any], signer: Signer | None = None, **kwargs: Any) -> Producer:
    """A plain producer, or a signing one when a signer is configured."""
    return SignedProducer(conf, signer, **kwargs) if signer is not None else Producer(conf, **kwargs)


class Verifier:
    """Checks the signature and the camera prefix of records on the edge topics."""

    def __init__(self, secret: bytes, topics: Sequence[str] = EDGE_TOPICS) -> None:
        self._secret = secret
        self._topics = frozenset(topics)
        self._keys: dict[str, bytes] = {}  # signer -> derived key (a handful of sites per processor)

    @classmethod
    def from_settings(cls, settings: Any) -> Verifier | None:
        secret = settings.kafka_security.signing_secret
        return None if secret is None else cls(secret.get_secret_value().encode())

    def check(self, msg: Message) -> str | None:
        """None when ``msg`` may be processed, else the reason to dead-letter it."""
        topic = msg.topic() or ""
        if topic not in self._topics:
            return None
        headers = dict(msg.headers() or [])  # a repeated header: the last one counts
        signer_raw, sig = headers.get(SIGNER_HEADER), headers.get(SIG_HEADER)
        if not signer_raw or not sig:
            return f"unsigned record on {topic}: every edge record must carry {SIGNER_HEADER}/{SIG_HEADER}"
        signer = signer_raw.decode(errors="replace")
        if not (signer.startswith(EDGE_PREFIX) and len(signer) > len(EDGE_PREFIX)) and not signer.startswith(
            SERVICE_PREFIX
        ):
            return f"unknown signer {signer!r}"
        key = self._keys.get(signer)
        if key is None:
            key = self._keys[signer] = derive_key(self._secret, signer)
        record_key = msg.key()
        expected = _mac(key, topic, record_key, msg.value())
        if not hmac.compare_digest(expected.encode(), sig):
            return f"bad signature from {signer!r}"
        if signer.startswith(EDGE_PREFIX):
            prefix = signer[len(EDGE_PREFIX) :]
            camera = (record_key or b"").decode(errors="replace")
            if not camera.startswith(prefix):
                return f"camera {camera!r} is outside the prefix {prefix!r} of signer {signer!r}"
        return None
