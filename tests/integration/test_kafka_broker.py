"""The local Apache Kafka broker: catalogue topics, transactions, status, and the `its kafka` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from infra.topics import describe_topics, ensure_topics
from its.settings import Settings
from schemas.topics import BY_NAME, CAMERAS, CATALOGUE, DLQ, FRAMES, TopicSpec

pytestmark = pytest.mark.integration


def _eventually_config(admin_conf: dict, topic: str, key: str, value: str, timeout: float = 15.0) -> None:
    """Wait for a config to show: alters go to the KRaft controller, describes are served by the broker."""
    deadline = time.monotonic() + timeout
    while True:
        got = describe_topics(admin_conf, [topic])[topic]["configs"].get(key)
        if got == value or time.monotonic() > deadline:
            assert got == value, (topic, key)
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ensured(kafka_broker, kafka_admin_conf) -> list:
    """The result of the first ``ensure_topics`` of this module (other modules may have run one before)."""
    return ensure_topics(kafka_admin_conf)


def test_broker_reports_its_version(kafka_broker) -> None:
    if kafka_broker.local is None:
        pytest.skip("outside cluster: no local log to read the version from")
    status = kafka_broker.local.status()
    print(f"Kafka broker version {status.version} at {status.bootstrap}")
    assert status.running and status.pid
    assert status.version == Settings().kafka_version == "3.9.1"
    assert status.cluster_id


def test_ensure_creates_every_catalogue_topic(ensured, kafka_admin_conf) -> None:
    assert [c.topic for c in ensured] == [t.name for t in CATALOGUE]
    assert {c.action for c in ensured} <= {"created", "unchanged"}
    info = describe_topics(kafka_admin_conf, [t.name for t in CATALOGUE])
    for spec in CATALOGUE:
        topic = info[spec.name]
        assert topic["exists"], spec.name
        assert topic["partitions"] == spec.partitions, spec.name
        assert topic["replication_factor"] == 1
        for key, value in spec.configs.items():
            assert topic["configs"].get(key) == value, (spec.name, key)
    assert info[CAMERAS]["configs"]["cleanup.policy"] == "compact"
    assert int(info[FRAMES]["configs"]["max.message.bytes"]) == 8 * 1024 * 1024
    assert info[FRAMES]["configs"]["retention.ms"] == str(24 * 60 * 60 * 1000)


def test_second_ensure_is_a_no_op(ensured, kafka_admin_conf) -> None:
    again = ensure_topics(kafka_admin_conf)
    assert [c.action for c in again] == ["unchanged"] * len(CATALOGUE)
    assert all(not c.configs and c.partitions is None for c in again)


def test_drifted_config_is_corrected(ensured, kafka_admin_conf) -> None:
    admin = AdminClient(kafka_admin_conf)
    drifted = ConfigResource(
        ResourceType.TOPIC,
        FRAMES,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in admin.incremental_alter_configs([drifted]).values():
        fut.result(timeout=20)
    _eventually_config(kafka_admin_conf, FRAMES, "retention.ms", "3600000")

    changes = {c.topic: c for c in ensure_topics(kafka_admin_conf)}
    assert changes[FRAMES].action == "updated"
    assert changes[FRAMES].configs == {"retention.ms": ("3600000", BY_NAME[FRAMES].configs["retention.ms"])}
    assert all(c.action == "unchanged" for name, c in changes.items() if name != FRAMES)
    _eventually_config(kafka_admin_conf, FRAMES, "retention.ms", "86400000")


def test_partitions_grow_but_never_shrink(kafka_broker, kafka_admin_conf) -> None:
    name = f"its.test-grow-{uuid.uuid4().hex[:8]}.v1"
    assert ensure_topics(kafka_admin_conf, [TopicSpec(name, 2, "x", "test")])[0].action == "created"
    grown = ensure_topics(kafka_admin_conf, [TopicSpec(name, 4, "x", "test")])[0]
    assert (grown.action, grown.partitions) == ("updated", (2, 4))
    fewer = ensure_topics(kafka_admin_conf, [TopicSpec(name, 3, "x", "test")])[0]
    assert fewer.action == "unchanged" and fewer.warnings
    assert describe_topics(kafka_admin_conf, [name])[name]["partitions"] == 4


def test_read_committed_sees_only_committed_transactions(ensured, kafka_broker) -> None:
    topic = DLQ  # a catalogue topic; other tests write binary dead letters to it, so filter by run id
    run = uuid.uuid4().hex
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "transactional.id": f"its-test-{run}",
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    producer.init_transactions(30)

    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, key=b"cam-1", value=f"aborted-{run}-{i}".encode())
    producer.flush(10)
    producer.abort_transaction(30)

    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=b"cam-1", value=f"committed-{run}-{i}".encode())
    producer.commit_transaction(30)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"its-test-{run}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: list[str] = []
    try:
        # Both transactions went to one partition (same key); stop once the committed ones arrived.
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                if len([v for v in seen if v.startswith("committed")]) == 3:
                    break
                continue
            value = msg.value().decode(errors="replace")
            if run in value:
                seen.append(value)
    finally:
        consumer.close()
    assert seen == [f"committed-{run}-{i}" for i in range(3)]


def test_cli_status_prints_broker_and_topics(ensured, kafka_settings) -> None:
    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
        "ITS_KAFKA_CONTROLLER_PORT": str(kafka_settings.kafka_controller_port),
        "ITS_DATA_DIR": str(kafka_settings.data_path),
        "ITS_CACHE_DIR": str(kafka_settings.cache_path),
        "ITS_LOG_FORMAT": "text",
        "COLUMNS": "200",  # rich would otherwise wrap to 80 columns and cut topic names
    }
    env.pop("ITS_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from its.cli import main; main()", "kafka", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert "running" in proc.stdout
    assert kafka_settings.kafka_bootstrap in proc.stdout
    for spec in CATALOGUE:
        assert spec.name in proc.stdout
    assert "compact" in proc.stdout
    assert "missing" not in proc.stdout


def test_cli_status_fails_when_broker_is_down(tmp_path) -> None:
    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # nothing listens on port 1
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_LOG_FORMAT": "text",
        "COLUMNS": "200",
    }
    env.pop("ITS_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from its.cli import main; main()", "kafka", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "not running" in proc.stdout
    assert "Kafka is down" in proc.stdout


def test_start_is_a_no_op_when_running_and_refuses_a_taken_port(kafka_broker, tmp_path) -> None:
    from infra.kafka import KafkaRuntimeError, LocalKafka

    if kafka_broker.local is None:
        pytest.skip("outside cluster")
    local = kafka_broker.local
    pid = local.status().pid
    assert local.start(timeout=30).pid == pid  # already running: same process, nothing started

    other = LocalKafka(tmp_path, local.cache_dir, local.version, local.port, local.controller_port + 7)
    with pytest.raises(KafkaRuntimeError, match="in use by another process"):
        other.start(timeout=30)
    assert not other.is_running()
