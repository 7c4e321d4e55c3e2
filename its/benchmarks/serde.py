"""``its bench serde``: our Avro serde against confluent-kafka's AvroSerializer/AvroDeserializer.

Both sides get the same typed records, the same registry and the same record->dict converter,
so the figure compares the serde machinery itself.
"""

from __future__ import annotations

import random
from typing import Any

from confluent_kafka.schema_registry.avro import AvroDeserializer as PeerDeserializer
from confluent_kafka.schema_registry.avro import AvroSerializer as PeerSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from its.benchmarks.report import BenchReport, Case, machine, rate
from schemas import codec, contracts, examples
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import DETECTIONS, EVENTS

PEER = "confluent-kafka AvroSerializer"


def detections_batch(n: int, objects: int = 20, seed: int = 7) -> list[r.Detections]:
    """``n`` frames of ``objects`` boxes each, like a busy junction."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        boxes = [round(rng.uniform(0, 1280), 1) for _ in range(4 * objects)]
        out.append(
            r.Detections(
                camera_id=f"cam-{i % 1000:04d}",
                frame_seq=i,
                capture_ts_ms=1_764_000_000_000 + i * 100,
                width=1280,
                height=720,
                model_name="yolox_nano_coco_416",
                model_version="1",
                boxes=boxes,
                class_ids=[rng.choice((0, 2, 2, 2, 5, 7)) for _ in range(objects)],
                scores=[round(rng.random(), 3) for _ in range(objects)],
                track_ids=list(range(objects)),
                frame_ref=r.FrameRef("its.frames.v1", i % 24, i),
                inference_ms=9.5,
                processed_ts_ms=0,
            )
        )
    return out


def run(registry_url: str, records: int = 20_000) -> BenchReport:
    serde = TopicSerde(registry_url)
    report = BenchReport("serde", machine())
    batches: dict[str, list[Any]] = {
        DETECTIONS: detections_batch(records),
        EVENTS: [examples.example_records()[EVENTS]] * records,
    }
    for topic, batch in batches.items():
        record_type = type(batch[0])
        ctx = SerializationContext(topic, MessageField.VALUE)
        ours_ser = serde.serializer(topic)
        peer_ser = PeerSerializer(
            serde.client,
            contracts.schema_str(record_type.AVRO_NAME),
            to_dict=lambda obj, _ctx, f=codec.to_avro_function(record_type): f(obj),
            conf={"auto.register.schemas": True},
        )
        encoded = [ours_ser(x) for x in batch]
        assert encoded[0] == peer_ser(batch[0], ctx), "both serializers must produce the same bytes"
        ours = rate(lambda s=ours_ser, b=batch: [s(x) for x in b], len(batch))
        peer = rate(lambda s=peer_ser, b=batch, c=ctx: [s(x, c) for x in b], len(batch))
        name = record_type.__name__
        report.cases.append(
            Case(f"serialize {name}", "throughput", "records/s", round(ours), round(peer), PEER, "ratio >= 1")
        )

        ours_de = serde.deserializer(topic)
        peer_de = PeerDeserializer(
            serde.client, from_dict=lambda d, _ctx, f=codec.from_avro_function(record_type): f(d)
        )
        assert ours_de(encoded[0], topic) == peer_de(encoded[0], ctx), "both must decode the same record"
        ours = rate(lambda d=ours_de, e=encoded, t=topic: [d(x, t) for x in e], len(encoded))
        peer = rate(lambda d=peer_de, e=encoded, c=ctx: [d(x, c) for x in e], len(encoded))
        report.cases.append(
            Case(
                f"deserialize {name}",
                "throughput",
                "records/s",
                round(ours),
                round(peer),
                "confluent-kafka AvroDeserializer",
                "ratio >= 1",
            )
        )
    return report
