"""The secure local broker (``its kafka start --secure``): authentication, ACLs, mutual TLS, signatures.

One real Kafka 3.9 broker per module with SASL_SSL (SCRAM-SHA-512), mutual TLS, StandardAuthorizer
and the project's ACL table; certificates from the project's throwaway CA. Each component connects
as its own principal; the pipeline test runs analytics and the ClickHouse sink as separate processes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.kafka import LocalKafka
from infra.kafka.acls import EDGE_TOPICS, SUPER_USERS, Grant, acl_table
from infra.kafka.certs import self_signed_identity
from infra.kafka.security import Via
from infra.kafka.signing import SIG_HEADER, SIGNER_HEADER, Signer, Verifier, derive_key
from infra.schema_registry.runner import serve_in_thread
from infra.topics import ensure_topics
from its.settings import KafkaSecurity, Settings
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import ALERTS, AUDIT, BY_NAME, DETECTIONS, DLQ, FRAMES, HEALTH
from tests.fixtures.kafka import _cache_dir, _free_port

pytestmark = [pytest.mark.security, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
ITS = str(Path(sys.executable).with_name("its"))
EDGE = "north-"  # the edge site onboarded before start: principal edge-north-
DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> LocalKafka:
    """A secure broker on free ports for this module, with one edge site and every catalogue topic."""
    ports = {_free_port() for _ in range(6)}
    port, controller, mtls = sorted(ports)[:3]
    broker = LocalKafka(
        tmp_path_factory.mktemp("kafka-secure"),
        _cache_dir(),
        Settings().kafka_version,
        port,
        controller,
        secure=True,
        mtls_port=mtls,
        # C1 only: a broker that lives one module starts ~40% faster (measured 59 s vs 97 s side by side).
        jvm_options=("-XX:TieredStopAtLevel=1",),
    )
    broker.add_edge_site(EDGE)  # not running yet: its ACLs are applied by start()
    request.addfinalizer(lambda: broker.stop(timeout=2))  # a throwaway broker: no controlled shutdown
    broker.start(timeout=240)
    ensure_topics(broker.client_config("admin"))
    return broker


@pytest.fixture(scope="module")
def secure_registry(secure_kafka: LocalKafka) -> Iterator[str]:
    """The schema registry persisting to the secure broker as its own principal."""
    conf = secure_kafka.client_config("schema-registry")
    with serve_in_thread(str(conf["bootstrap.servers"]), "_its_schemas", kafka_config=conf) as handle:
        yield handle.url


def _conf(broker: LocalKafka, principal: str, via: Via = "sasl", **extra: object) -> dict[str, object]:
    return {**broker.client_config(principal, via), **extra}


def _settings(broker: LocalKafka, principal: str, registry: str) -> Settings:
    """Settings of a component that connects as ``principal`` (what its ITS_* environment gives)."""
    env = broker.client_env(principal)
    sec = {
        k.removeprefix("ITS_KAFKA_SECURITY__").lower(): v
        for k, v in env.items()
        if k.startswith("ITS_KAFKA_SECURITY__")
    }
    return Settings(
        kafka_bootstrap=env["ITS_KAFKA_BOOTSTRAP"],
        kafka_security=KafkaSecurity(**sec),
        schema_registry_url=registry,
    )


class _Lines(logging.Handler):
    """Collects a client's librdkafka log lines (authentication failures are logged, not raised)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _try_connect(
    conf: dict[str, object], timeout: float = 2.0, lines: _Lines | None = None
) -> tuple[bool, list[KafkaError]]:
    """(metadata answered, errors librdkafka reported) for one client configuration."""
    errors: list[KafkaError] = []
    logger = logging.getLogger(f"test.rdkafka.{uuid.uuid4().hex[:6]}")
    if lines is not None:
        logger.addHandler(lines)
    admin = AdminClient({**conf, "error_cb": errors.append, "socket.timeout.ms": 2000}, logger=logger)
    try:
        admin.list_topics(timeout=timeout)
        return True, errors
    except KafkaException as exc:
        errors.append(exc.args[0])
        return False, errors
    finally:
        admin.poll(0.2)  # serves the queued log lines and error callbacks


def _produce_errors(conf: dict[str, object], topic: str, n: int = 1) -> list[KafkaError | None]:
    """Delivery outcome of ``n`` records produced to ``topic`` (None = delivered)."""
    results: list[KafkaError | None] = []
    producer = Producer({**conf, "message.timeout.ms": 60000})  # a loaded CI machine is slow
    for i in range(n):
        # Partition 0: where ``_consume_errors`` reads.
        producer.produce(topic, b"x", f"k{i}".encode(), 0, on_delivery=lambda e, _m: results.append(e))
    producer.flush(70)
    return results


def _consume_errors(conf: dict[str, object], topic: str, timeout: float = 15.0) -> tuple[list[Message], set]:
    """Records and error codes a consumer sees reading partition 0 of ``topic`` from the start."""
    consumer = Consumer({**conf, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[Message] = []
    codes: set = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not got and not codes & DENIED:
            for msg in consumer.consume(10, 0.5):
                (codes.add(msg.error().code()) if msg.error() else got.append(msg))
    finally:
        consumer.close()
    return got, codes


def test_clients_without_credentials_cannot_connect(secure_kafka: LocalKafka) -> None:
    host = secure_kafka.host
    attempts = {
        "plaintext to SASL_SSL": {"bootstrap.servers": secure_kafka.bootstrap},
        "TLS without SASL": {
            "bootstrap.servers": secure_kafka.bootstrap,
            "security.protocol": "ssl",
            "ssl.ca.location": str(secure_kafka.security.ca_file),
        },
        "TLS without client cert to mTLS": {
            "bootstrap.servers": secure_kafka.mtls_bootstrap,
            "security.protocol": "ssl",
            "ssl.ca.location": str(secure_kafka.security.ca_file),
        },
        "plaintext to controller": {"bootstrap.servers": f"{host}:{secure_kafka.controller_port}"},
    }
    with ThreadPoolExecutor(len(attempts)) as pool:
        outcomes = dict(zip(attempts, pool.map(_try_connect, attempts.values()), strict=True))
    for name, (ok, errors) in outcomes.items():
        assert not ok, f"{name}: metadata answered without credentials"
        assert errors, name
    # The same listener answers a client with credentials: the refusals are about credentials.
    assert _try_connect(_conf(secure_kafka, "admin"))[0]


def test_wrong_password_is_refused(secure_kafka: LocalKafka) -> None:
    conf = _conf(secure_kafka, "analytics", **{"sasl.password": "not-the-password"})
    lines = _Lines()
    ok, _ = _try_connect(conf, lines=lines)
    assert not ok
    assert any("invalid credentials" in line for line in lines.lines), lines.lines


def test_edge_principal_writes_its_topics_only_and_reads_nothing(secure_kafka: LocalKafka) -> None:
    edge = _conf(secure_kafka, f"edge-{EDGE}")
    assert _produce_errors(edge, HEALTH) == [None]  # its own topics: allowed
    denied = _produce_errors(edge, ALERTS)
    assert [e.code() if e else None for e in denied] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert _produce_errors(_conf(secure_kafka, "admin"), ALERTS) == [None]  # something to read
    reader = {**edge, "group.id": f"edge-{uuid.uuid4().hex[:6]}"}
    consumer = Consumer(reader)
    try:  # not even the existence of the alerts topic is disclosed to an edge site
        meta = consumer.list_topics(ALERTS, timeout=10).topics[ALERTS]
    finally:
        consumer.close()
    assert meta.error is not None and meta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    for topic in (ALERTS, HEALTH):  # it writes health, and still cannot read it back
        got, codes = _consume_errors(reader, topic, timeout=8)
        assert not got and codes & DENIED, (topic, codes)


def test_integrator_reads_alerts_but_cannot_write(secure_kafka: LocalKafka) -> None:
    assert _produce_errors(_conf(secure_kafka, "admin"), ALERTS) == [None]
    integrator = _conf(secure_kafka, "integrator", **{"group.id": f"integrator-{uuid.uuid4().hex[:6]}"})
    got, codes = _consume_errors(integrator, ALERTS)
    assert got and not codes, codes
    denied = _produce_errors(integrator, ALERTS)
    assert [e.code() if e else None for e in denied] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_mutual_tls_accepts_ca_signed_and_refuses_self_signed(secure_kafka: LocalKafka, tmp_path) -> None:
    ok, errors = _try_connect(_conf(secure_kafka, "integrator", via="mtls"))
    assert ok, errors
    impostor = self_signed_identity(tmp_path, "integrator")  # same CN, no CA signature
    conf = {
        "bootstrap.servers": secure_kafka.mtls_bootstrap,
        "security.protocol": "ssl",
        "ssl.ca.location": str(secure_kafka.security.ca_file),
        "ssl.certificate.location": str(impostor.cert),
        "ssl.key.location": str(impostor.key),
    }
    ok, errors = _try_connect(conf)
    assert not ok
    codes = {e.code() for e in errors}
    assert codes & {KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}, errors


class _Msg:
    """The parts of a ``confluent_kafka.Message`` that ``Verifier.check`` reads."""

    def __init__(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self._t, self._k, self._v, self._h = topic, key, value, headers

    def topic(self) -> str:
        return self._t

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v

    def headers(self) -> list[tuple[str, bytes]]:
        return self._h


@pytest.mark.unit
def test_verifier_rules() -> None:
    secret = b"s" * 32
    verify = Verifier(secret)
    site = Signer("edge-north-", derive_key(secret, "edge-north-"))

    def signed(signer: Signer, key: bytes, topic: str = DETECTIONS, value: bytes = b"v") -> Any:
        return _Msg(topic, key, value, signer.headers(topic, key, value))

    assert verify.check(signed(site, b"north-01")) is None
    assert "outside the prefix" in str(verify.check(signed(site, b"south-01")))
    assert "unsigned" in str(verify.check(_Msg(DETECTIONS, b"north-01", b"v", [])))
    forged = Signer("edge-south-", derive_key(b"guess" * 8, "edge-south-"))  # wrong key
    assert "bad signature" in str(verify.check(signed(forged, b"south-01")))
    tampered = signed(site, b"north-01")
    tampered._v = b"changed"
    assert "bad signature" in str(verify.check(tampered))
    moved = signed(site, b"north-01")
    moved._t = HEALTH  # a signature is bound to its topic
    assert "bad signature" in str(verify.check(moved))
    service = Signer("svc-inference", derive_key(secret, "svc-inference"))
    assert verify.check(signed(service, b"any-camera")) is None
    assert "unknown signer" in str(
        verify.check(_Msg(DETECTIONS, b"x", b"v", [(SIGNER_HEADER, b"root"), (SIG_HEADER, b"00")]))
    )
    assert verify.check(_Msg(ALERTS, b"x", b"v", [])) is None  # only edge topics carry signatures


def _wait(what: str, cond: Callable[[], Any], timeout: float, procs: list[subprocess.Popen]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        for p in procs:
            assert p.poll() is None, f"{p.args} exited {p.returncode} while waiting for {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_pipeline_runs_green_with_per_component_principals(
    secure_kafka: LocalKafka, secure_registry: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from producers.simulator import simulate
    from producers.simulator.publish import publish

    env = {**os.environ, "ITS_SCHEMA_REGISTRY_URL": secure_registry, "ITS_LOG_LEVEL": "WARNING"}
    env.pop("ITS_CONFIG", None)
    store = tmp_path / "store"
    analytics_env = {**env, **secure_kafka.client_env("analytics"), "ITS_DATA_DIR": str(tmp_path / "a")}
    sink_env = {
        **env,
        **secure_kafka.client_env("sink"),
        "ITS_DATA_DIR": str(tmp_path / "s"),
        "ITS_CLICKHOUSE_URL": f"chdb://{store}",
        "ITS_SINK__METRICS_PORT": "0",
        "ITS_SINK__QUERY_PORT": "0",
    }
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("analytics", "sink")}  # noqa: SIM115
    # The sink starts first: its start-up (imports, the embedded ClickHouse) overlaps the simulation.
    procs = [
        subprocess.Popen(
            [ITS, "sink", "clickhouse"], env=sink_env, cwd=REPO, stdout=logs["sink"], stderr=subprocess.STDOUT
        )
    ]

    def kill_leftovers() -> None:  # a failure before the try block below must not leak processes
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        for f in logs.values():
            f.close()

    request.addfinalizer(kill_leftovers)
    # Edge side: the simulator principal signs as edge site "sim-" (camera ids sim-highway-NNNN).
    # Capture times of now: the detections table's 7-day TTL would drop a 2026-01-01 simulation.
    start = int(time.time() * 1000) - 75_000
    sim = simulate("highway", seed=3, noise="default", duration_s=70, fps=5, cameras=1, start_ms=start)
    report = publish(sim, _settings(secure_kafka, "simulator", secure_registry), realtime=False)
    n_dets = report.produced[DETECTIONS]
    assert report.delivery_errors == 0 and n_dets == 350
    # Site north- tries to speak for a camera outside its prefix, once signed and once unsigned.
    north = _settings(secure_kafka, f"edge-{EDGE}", secure_registry)
    value = TopicSerde(secure_registry).encode(DETECTIONS, replace(sim.detections[0], frame_seq=10**6))
    forged = Producer(north.kafka_config())
    site = Signer.from_settings(north)
    assert site is not None
    key = b"sim-highway-0000"
    forged.produce(DETECTIONS, value, key, headers=site.headers(DETECTIONS, key, value))
    forged.produce(DETECTIONS, value, key)
    assert forged.flush(15) == 0

    # Analytics starts once the camera registration is on Kafka (it reads registrations on assignment).
    procs.append(
        subprocess.Popen(
            [ITS, "process", "analytics", "--instance-id", "sec", "--metrics-port", "0"],
            env=analytics_env, cwd=REPO, stdout=logs["analytics"], stderr=subprocess.STDOUT,
        )
    )  # fmt: skip
    endpoint: dict[str, Any] = {}
    serde = TopicSerde(secure_registry)
    letters: list[r.DeadLetter] = []
    dlq_reader = Consumer(_conf(secure_kafka, "admin", **{"group.id": f"t-{uuid.uuid4().hex[:6]}"}))
    dlq_reader.assign([TopicPartition(DLQ, p, 0) for p in range(BY_NAME[DLQ].partitions)])

    def dlq(into: list[r.DeadLetter]) -> list[r.DeadLetter]:
        for msg in dlq_reader.consume(100, 0.2):
            letter = serde.decode(msg) if msg.error() is None else None
            if isinstance(letter, r.DeadLetter) and letter.component == "analytics":
                into.append(letter)
        return into

    def counts() -> dict[str, int]:
        sql = (
            "SELECT (SELECT count() FROM detections) AS detections,"
            " (SELECT count() FROM events) AS events, (SELECT count() FROM traffic_stats) AS stats,"
            " (SELECT count() FROM dead_letters WHERE topic = 'its.detections.v1'"
            "  AND error_type = 'RecordSignatureError') AS dead"
            " FORMAT JSONEachRow"
        )
        try:
            reply = httpx.post(endpoint["url"], content=sql, timeout=10)
        except (httpx.HTTPError, KeyError):
            return {}
        if reply.status_code != 200:
            return {}  # the tables appear with the sink's first flush
        return {k: int(v) for k, v in json.loads(reply.text).items()}

    def done() -> dict[str, int] | None:
        # The sink's /healthz row counts are cheap to poll; each SQL query opens a chdb handle.
        try:
            rows = httpx.get(f"{endpoint['metrics']}/healthz", timeout=5).json().get("rows", {})
        except (httpx.HTTPError, ValueError):
            return None
        if rows.get("detections", 0) < n_dets or not rows.get("events") or not rows.get("traffic_stats"):
            return None
        c = counts()  # then what ClickHouse itself holds
        return (
            c if c and c["detections"] >= n_dets and c["events"] and c["stats"] and c["dead"] >= 2 else None
        )

    try:
        endpoint_file = store / "its-endpoint.json"
        endpoint.update(
            _wait(
                "the sink's query endpoint",
                lambda: endpoint_file.is_file() and json.loads(endpoint_file.read_text()),
                120,
                procs,
            )
        )
        got = _wait("analytics outputs in ClickHouse", done, 300, procs)
        # The forged records follow the simulation on its partition: wait for analytics to reach them.
        letters = _wait("the analytics dead letters", lambda: len(dlq(letters)) >= 2 and letters, 120, procs)
    except AssertionError as exc:
        tails = {n: (tmp_path / f"{n}.log").read_text(errors="replace")[-3000:] for n in logs}
        raise AssertionError(f"{exc}; counts {counts()}; logs {tails}") from None
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
    # Every signed edge detection stored; both records of site north- about sim-highway-0000 refused.
    assert got["detections"] == n_dets and got["dead"] == 2, got
    assert all(p.returncode == 0 for p in procs), [(tmp_path / f"{n}.log").read_text()[-2000:] for n in logs]
    dlq_reader.close()
    # The analytics processor dead-lettered the same two records, with the reason.
    reasons = sorted(letter.reason for letter in letters)
    assert len(reasons) == 2 and "outside the prefix" in reasons[0] and "unsigned" in reasons[1], reasons
    assert {letter.error_type for letter in letters} == {"RecordSignatureError"}


@pytest.mark.unit
def test_acl_table_is_least_privilege() -> None:
    grants = acl_table(edge_prefixes=[EDGE])
    edge = [g for g in grants if g.principal == f"edge-{EDGE}"]
    assert {(g.resource, g.name, g.operations) for g in edge} == {
        ("topic", name, ("write", "describe")) for name in EDGE_TOPICS
    }
    readers = {
        topic: {g.principal for g in grants if g.name == topic and "read" in g.operations}
        for topic in (ALERTS, AUDIT, FRAMES)
    }
    assert readers[ALERTS] == {"sink", "webhook-sink", "integrator", "console"}
    assert readers[AUDIT] == {"sink"}  # append-only trail: written by operators, read back by the sink only
    assert readers[FRAMES] == {"inference", "console"}
    assert not any(g.operations != ("read", "describe") for g in grants if g.principal == "integrator"
                   and g.resource == "topic")  # fmt: skip
    # The transactional processors' ids are "<name>-<instance>" (processors.runtime).
    for name in ("inference", "analytics"):
        assert Grant(name, "transactional_id", f"{name}-", ("write", "describe"), prefixed=True) in grants
    assert not any(g.principal in SUPER_USERS for g in grants)


@pytest.mark.unit
def test_typed_security_settings_map_to_librdkafka(tmp_path: Path) -> None:
    sec = KafkaSecurity(
        protocol="SASL_SSL", sasl_username="sink", sasl_password="pw", ssl_ca_location=tmp_path / "ca.pem"
    )
    conf = Settings(kafka_bootstrap="b:1", kafka_security=sec, kafka_client={}).kafka_config(
        **{"group.id": "g"}
    )
    assert conf == {
        "bootstrap.servers": "b:1",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "sink",
        "sasl.password": "pw",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
        "group.id": "g",
    }
    mtls = KafkaSecurity(
        protocol="SSL", ssl_certificate_location=tmp_path / "c.pem", ssl_key_location=tmp_path / "k"
    )
    assert Settings(kafka_security=mtls).kafka_config()["ssl.key.location"] == str(tmp_path / "k")
    # The raw escape hatch wins; plaintext adds nothing.
    raw = Settings(kafka_security=sec, kafka_client={"sasl.username": "other"}).kafka_config()
    assert raw["sasl.username"] == "other"
    plain = Settings(kafka_bootstrap="b:1", kafka_security=KafkaSecurity(), kafka_client={})
    assert plain.kafka_config() == {"bootstrap.servers": "b:1"}
