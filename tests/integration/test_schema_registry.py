"""The local registry through confluent-kafka's real client and serdes, against a real broker."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from infra.schema_registry import runner
from its.settings import Settings

pytestmark = pytest.mark.integration

V1: dict[str, Any] = {
    "type": "record",
    "name": "Alert",
    "namespace": "its.test",
    "fields": [{"name": "camera_id", "type": "string"}, {"name": "severity", "type": "int"}],
}


def avro(doc: dict[str, Any]) -> Schema:
    return Schema(json.dumps(doc), "AVRO")


def with_fields(*extra: dict[str, Any], base: dict[str, Any] = V1) -> dict[str, Any]:
    return {**base, "fields": [*base["fields"], *extra]}


def subject() -> str:
    return f"its.test.{uuid.uuid4().hex[:10]}-value"


@pytest.fixture
def client(schema_registry: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": schema_registry})


def test_register_fetch_lookup_delete(client: SchemaRegistryClient) -> None:
    name = subject()
    schema_id = client.register_schema(name, avro(V1))
    assert json.loads(client.get_schema(schema_id).schema_str) == V1

    latest = client.get_latest_version(name)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, name)

    found = client.lookup_schema(name, avro(V1))
    assert (found.schema_id, found.version) == (schema_id, 1)
    assert name in client.get_subjects()
    assert client.get_versions(name) == [1]
    assert client.get_version(name, 1).schema_id == schema_id

    # Registering the same schema again is not a new version.
    assert client.register_schema(name, avro(V1)) == schema_id
    assert client.get_versions(name) == [1]

    assert client.delete_subject(name) == [1]
    assert name not in client.get_subjects()
    assert name in client.get_subjects(deleted=True)
    url = client._rest_client.base_urls[0]
    # Raw HTTP here: the client caches the latest version.
    assert httpx.get(f"{url}/subjects/{name}/versions/latest").json()["error_code"] == 40401
    assert httpx.get(f"{url}/subjects/{name}/versions/1?deleted=true").json()["id"] == schema_id
    assert client.delete_subject(name, permanent=True) == [1]
    assert name not in client.get_subjects(deleted=True)


def test_lookup_of_unknown_schema_and_subject(client: SchemaRegistryClient) -> None:
    name = subject()
    with pytest.raises(SchemaRegistryError) as err:
        client.lookup_schema(name, avro(V1))
    assert (err.value.http_status_code, err.value.error_code) == (404, 40401)
    client.register_schema(name, avro(V1))
    with pytest.raises(SchemaRegistryError) as err:
        client.lookup_schema(name, avro(with_fields({"name": "x", "type": "int", "default": 0})))
    assert err.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as err:
        client.get_schema(987654)
    assert err.value.error_code == 40403


def test_compatibility(client: SchemaRegistryClient) -> None:
    name = subject()
    client.register_schema(name, avro(V1))
    optional = with_fields({"name": "note", "type": ["null", "string"], "default": None})
    required = with_fields({"name": "lane", "type": "int"})
    assert client.test_compatibility(name, avro(optional)) is True
    assert client.test_compatibility(name, avro(required)) is False
    assert client.test_compatibility(name, avro(optional), version=1) is True

    response = httpx.post(
        f"{client._rest_client.base_urls[0]}/compatibility/subjects/{name}/versions/latest?verbose=true",
        json={"schema": json.dumps(required)},
    )
    body = response.json()
    assert body["is_compatible"] is False
    assert "lane" in body["messages"][0]


@pytest.mark.parametrize(
    "change",
    [
        with_fields({"name": "lane", "type": "int"}),  # new required field
        {**V1, "fields": [{"name": "camera_id", "type": "int"}, V1["fields"][1]]},  # string -> int
    ],
    ids=["field-without-default", "type-change"],
)
def test_incompatible_change_is_rejected(client: SchemaRegistryClient, change: dict[str, Any]) -> None:
    name = subject()
    client.register_schema(name, avro(V1))
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(name, avro(change))
    assert (err.value.http_status_code, err.value.error_code) == (409, 409)
    assert client.get_versions(name) == [1]


def test_compatible_evolution_and_config(client: SchemaRegistryClient) -> None:
    name = subject()
    first = client.register_schema(name, avro(V1))
    second = client.register_schema(
        name, avro(with_fields({"name": "note", "type": "string", "default": ""}))
    )
    assert second != first
    assert client.get_versions(name) == [1, 2]
    assert client.get_compatibility() == "BACKWARD"

    client.set_compatibility(name, "NONE")
    assert client.get_compatibility(name) == "NONE"
    client.register_schema(name, avro(with_fields({"name": "lane", "type": "int"})))  # allowed under NONE
    assert client.get_versions(name) == [1, 2, 3]
    with pytest.raises(SchemaRegistryError) as err:
        client.set_compatibility(name, "SIDEWAYS")
    assert err.value.error_code == 42203


def test_same_schema_under_two_subjects_has_one_id(client: SchemaRegistryClient) -> None:
    a, b = subject(), subject()
    doc = with_fields({"name": "shared", "type": "long", "default": 0})
    id_a = client.register_schema(a, avro(doc))
    # Whitespace and key order do not make a different schema.
    id_b = client.register_schema(b, Schema(json.dumps(doc, indent=4), "AVRO"))
    assert id_a == id_b
    assert {(v.subject, v.version) for v in client.get_schema_versions(id_a)} == {(a, 1), (b, 1)}


def test_invalid_and_non_avro_schemas_are_rejected(client: SchemaRegistryClient) -> None:
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject(), Schema('{"type": "record", "name": "X"}', "AVRO"))
    assert (err.value.http_status_code, err.value.error_code) == (422, 42201)
    with pytest.raises(SchemaRegistryError) as err:
        client.register_schema(subject(), Schema('{"type": "object"}', "JSON"))
    assert err.value.error_code == 42201
    assert "AVRO only" in err.value.error_message


def test_avro_serializer_round_trip(client: SchemaRegistryClient) -> None:
    topic = f"its.test.{uuid.uuid4().hex[:8]}"
    serializer = AvroSerializer(client, json.dumps(V1))
    deserializer = AvroDeserializer(client)
    ctx = SerializationContext(topic, MessageField.VALUE)
    payload = serializer({"camera_id": "cam-7", "severity": 3}, ctx)
    assert payload[0] == 0  # Confluent wire format: magic byte, then the 4-byte schema id
    schema_id = int.from_bytes(payload[1:5], "big")
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id
    # A fresh client (empty cache) fetches the writer schema by id.
    fresh = AvroDeserializer(SchemaRegistryClient({"url": client._rest_client.base_urls[0]}))
    assert fresh(payload, ctx) == {"camera_id": "cam-7", "severity": 3}
    assert deserializer(payload, ctx) == {"camera_id": "cam-7", "severity": 3}


def test_concurrent_registrations_get_distinct_ids(
    client: SchemaRegistryClient, schema_registry: str
) -> None:
    def register(i: int) -> int:
        own = SchemaRegistryClient({"url": schema_registry})
        return own.register_schema(
            subject(), avro(with_fields({"name": f"f{i}", "type": "int", "default": i}))
        )

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(register, range(24)))
    assert len(set(ids)) == 24


def test_ids_and_versions_survive_restart(registry_bootstrap: str) -> None:
    topic = f"_its_schemas_test_{uuid.uuid4().hex[:12]}"
    name, other = subject(), subject()
    v2 = with_fields({"name": "note", "type": "string", "default": ""})
    with runner.serve_in_thread(registry_bootstrap, topic) as first:
        c = SchemaRegistryClient({"url": first.url})
        id1 = c.register_schema(name, avro(V1))
        id2 = c.register_schema(name, avro(v2))
        id3 = c.register_schema(other, avro(V1))
        c.set_compatibility(other, "FULL")
        c.delete_version(name, 1)
    with runner.serve_in_thread(registry_bootstrap, topic) as second:
        c = SchemaRegistryClient({"url": second.url})
        assert id3 == id1
        assert c.get_versions(name) == [2]  # the soft delete was persisted too
        assert c.get_version(name, 2).schema_id == id2
        assert json.loads(c.get_schema(id1).schema_str) == V1
        assert c.lookup_schema(other, avro(V1)).schema_id == id1
        assert c.get_compatibility(other) == "FULL"
        # New ids continue after the old ones.
        id4 = c.register_schema(subject(), avro(with_fields({"name": "z", "type": "int", "default": 0})))
        assert id4 > max(id1, id2)
        assert c.register_schema(name, avro(v2)) == id2  # no new version


def test_health_and_metrics(schema_registry: str, client: SchemaRegistryClient) -> None:
    client.register_schema(subject(), avro(V1))
    assert httpx.get(f"{schema_registry}/healthz").status_code == 200
    metrics = httpx.get(f"{schema_registry}/metrics").text
    assert (
        'its_schema_registry_requests_total{endpoint="/subjects/{subject}/versions",method="POST"' in metrics
    )
    assert "its_schema_registry_schemas_registered_total" in metrics
    missing = httpx.get(f"{schema_registry}/nowhere")
    assert missing.status_code == 404 and missing.json()["error_code"] == 404


def test_background_process_start_status_stop(registry_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        kafka_bootstrap=registry_bootstrap,
        schema_registry_topic=f"_its_schemas_test_{uuid.uuid4().hex[:12]}",
    )
    port = _free_port()
    pid = runner.start_background(settings, "127.0.0.1", port, timeout=60)
    try:
        state = runner.status(settings)
        assert state["running"] and state["healthy"] and state["pid"] == pid
        c = SchemaRegistryClient({"url": f"http://127.0.0.1:{port}"})
        assert c.register_schema(subject(), avro(V1)) == 1
        assert runner.start_background(settings, "127.0.0.1", port) == pid  # already running
    finally:
        assert runner.stop_background(settings)
    assert runner.status(settings)["running"] is False
    log = runner.log_file(settings).read_text()
    assert '"msg": "stopped"' in log  # SIGTERM led to a clean shutdown


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
