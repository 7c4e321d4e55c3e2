"""Fuzz the Confluent-framed Avro decoder (``schemas.serde.AvroDeserializer``) of every contract.

Contract: whatever the bytes, decoding returns a record or raises ``RecordDecodeError`` (the runtime
turns exactly that into a dead letter); any other exception is a crash. Inputs: raw bytes, a valid
header with a fuzzed body, and valid messages of every topic with byte edits, read by their own and
by other topics' decoders (schema resolution across contracts).

    python -m tests.fuzz.fuzz_avro -max_total_time=10 CORPUS_DIR
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Callable
from typing import Any

from tests.fuzz.harness import mutate, run


def load() -> Callable[[bytes], None]:
    import atheris
    import fastavro
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from schemas import codec, contracts
    from schemas.errors import RecordDecodeError
    from schemas.examples import example_records
    from schemas.serde import AvroDeserializer, TopicSerde

    topics = sorted(example_records())
    names = [TopicSerde.record_type(t).AVRO_NAME for t in topics]

    class ContractRegistry(SchemaRegistryClient):
        """The project's contracts under ids 1..N, in process (the decoder, not the registry, is fuzzed).

        Any other id is answered as a real registry answers it: 404 "Schema not found".
        """

        def get_schema(self, schema_id: int, *args: Any, **kwargs: Any) -> Schema:
            if 1 <= schema_id <= len(names):
                return Schema(contracts.schema_str(names[schema_id - 1]), "AVRO")
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found")

    registry = ContractRegistry({"url": "http://127.0.0.1:9"})
    decoders = [AvroDeserializer(registry, TopicSerde.record_type(t)) for t in topics]
    valid: list[bytes] = []
    for i, topic in enumerate(topics):
        out = io.BytesIO()
        out.write(struct.pack(">bI", 0, i + 1))
        fastavro.schemaless_writer(out, contracts.parsed(names[i]), codec.to_avro(example_records()[topic]))
        valid.append(out.getvalue())
    for i, data in enumerate(valid):  # the seeds themselves must decode
        decoders[i](data)

    def target(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        reader = fdp.ConsumeIntInRange(0, len(decoders) - 1)
        mode = fdp.ConsumeIntInRange(0, 2)
        if mode == 0:
            payload = mutate(valid[fdp.ConsumeIntInRange(0, len(valid) - 1)], fdp)
        elif mode == 1:
            payload = struct.pack(">bI", 0, fdp.ConsumeIntInRange(1, len(names))) + fdp.ConsumeBytes(
                fdp.remaining_bytes()
            )
        else:
            payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        with contextlib.suppress(RecordDecodeError):
            decoders[reader](payload, "fuzz", 0, 0)

    return target


if __name__ == "__main__":
    run(load, ["schemas.serde", "schemas.codec"])
