"""Avro serde in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Schema ids are resolved through any Confluent-compatible registry (the local one, Confluent
Schema Registry, Karapace) via confluent-kafka's ``SchemaRegistryClient``. Writer schemas are
fetched once per id and cached; records written with an older schema version are resolved to
the reader's contract by Avro schema resolution.
"""

from __future__ import annotations

import io
import json
import struct
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from schemas import codec, contracts
from schemas.errors import RecordDecodeError, RecordEncodeError
from schemas.records import RECORD_TYPES
from schemas.topics import BY_NAME

if TYPE_CHECKING:
    from confluent_kafka import Message

R = TypeVar("R")
MAGIC = 0
_HEADER = struct.Struct(">bI")


def registry_client(url_or_client: str | SchemaRegistryClient) -> SchemaRegistryClient:
    """A registry client from a URL (or the client itself)."""
    if isinstance(url_or_client, SchemaRegistryClient):
        return url_or_client
    return SchemaRegistryClient({"url": url_or_client})


class AvroSerializer(Generic[R]):
    """Writes one record type to one subject; the schema is registered (or looked up) once."""

    def __init__(
        self,
        registry: str | SchemaRegistryClient,
        record_type: type[R],
        subject: str,
        *,
        auto_register: bool = True,
    ) -> None:
        client = registry_client(registry)
        name = record_type.AVRO_NAME  # type: ignore[attr-defined]
        schema = Schema(contracts.schema_str(name), "AVRO")
        if auto_register:
            self.schema_id = client.register_schema(subject, schema)
        else:
            self.schema_id = client.lookup_schema(subject, schema).schema_id
        self.subject = subject
        self._header = _HEADER.pack(MAGIC, self.schema_id)
        self._parsed = contracts.parsed(name)
        self._to_avro = codec.to_avro_function(record_type)

    def __call__(self, record: R) -> bytes:
        out = io.BytesIO()
        out.write(self._header)
        try:
            fastavro.schemaless_writer(out, self._parsed, self._to_avro(record))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise RecordEncodeError(f"{type(record).__name__} does not fit {self.subject}: {exc}") from exc
        return out.getvalue()


class AvroDeserializer(Generic[R]):
    """Reads Confluent-framed Avro into typed records of one type; every failure is a RecordDecodeError."""

    def __init__(self, registry: str | SchemaRegistryClient, record_type: type[R]) -> None:
        self._client = registry_client(registry)
        self._type = record_type
        name = record_type.AVRO_NAME  # type: ignore[attr-defined]
        self._reader = contracts.parsed(name)
        self._reader_canonical = fastavro.schema.to_parsing_canonical_form(self._reader)
        self._from_avro = codec.from_avro_function(record_type)
        # schema id -> (writer schema, reader schema or None when the writer is our own contract)
        self._writers: dict[int, tuple[Any, Any]] = {}

    def _writer(self, schema_id: int, where: tuple[str, int, int]) -> tuple[Any, Any]:
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self._client.get_schema(schema_id)
        except Exception as exc:  # the registry's own error types vary by client version
            raise RecordDecodeError(*where, f"unknown schema id {schema_id}: {exc}") from exc
        if (registered.schema_type or "AVRO") != "AVRO":
            raise RecordDecodeError(*where, f"schema id {schema_id} is {registered.schema_type}, not AVRO")
        writer = fastavro.parse_schema(json.loads(registered.schema_str), named_schemas={})
        same = fastavro.schema.to_parsing_canonical_form(writer) == self._reader_canonical
        entry = (self._reader, None) if same else (writer, self._reader)
        self._writers[schema_id] = entry
        return entry

    def __call__(self, data: bytes | None, topic: str = "?", partition: int = -1, offset: int = -1) -> R:
        where = (topic, partition, offset)
        if not data:
            raise RecordDecodeError(*where, "empty value")
        if len(data) < _HEADER.size:
            raise RecordDecodeError(*where, f"{len(data)} bytes is shorter than the 5-byte wire header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise RecordDecodeError(*where, f"magic byte {magic} is not the Confluent wire format's 0")
        writer, reader = self._writer(schema_id, where)
        body = io.BytesIO(data)
        body.seek(_HEADER.size)
        try:
            value = fastavro.schemaless_reader(body, writer, reader)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError, UnicodeDecodeError...
            raise RecordDecodeError(*where, f"invalid Avro body for schema id {schema_id}: {exc!r}") from exc
        if body.tell() != len(data):
            raise RecordDecodeError(*where, f"{len(data) - body.tell()} trailing bytes after the Avro body")
        try:
            return self._from_avro(value)
        except Exception as exc:
            raise RecordDecodeError(*where, f"does not fit {self._type.__name__}: {exc!r}") from exc

    def decode(self, msg: Message) -> R:
        """Decode a consumed message, naming its topic, partition and offset on failure."""
        return self(msg.value(), msg.topic() or "?", msg.partition() or 0, msg.offset() or 0)


class TopicSerde:
    """Serializers and deserializers for the catalogue's topics, bound to one registry."""

    def __init__(self, registry: str | SchemaRegistryClient, *, auto_register: bool = True) -> None:
        self.client = registry_client(registry)
        self.auto_register = auto_register
        self._serializers: dict[str, AvroSerializer[Any]] = {}
        self._deserializers: dict[str, AvroDeserializer[Any]] = {}

    @staticmethod
    def record_type(topic: str) -> type:
        if topic not in BY_NAME:
            raise KeyError(f"{topic!r} is not in the topic catalogue")
        return RECORD_TYPES[BY_NAME[topic].record]

    def serializer(self, topic: str) -> AvroSerializer[Any]:
        if topic not in self._serializers:
            self._serializers[topic] = AvroSerializer(
                self.client,
                self.record_type(topic),
                BY_NAME[topic].value_subject,
                auto_register=self.auto_register,
            )
        return self._serializers[topic]

    def deserializer(self, topic: str) -> AvroDeserializer[Any]:
        if topic not in self._deserializers:
            self._deserializers[topic] = AvroDeserializer(self.client, self.record_type(topic))
        return self._deserializers[topic]

    def encode(self, topic: str, record: Any) -> bytes:
        return self.serializer(topic)(record)

    def decode(self, msg: Message) -> Any:
        return self.deserializer(msg.topic() or "").decode(msg)


def key_bytes(camera_id: str) -> bytes:
    """Every topic is keyed by camera id, UTF-8."""
    return camera_id.encode()
