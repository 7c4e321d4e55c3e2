"""The sink's columnar path gives the record path's rows exactly, and leaves every odd record to it.

``schemas.columnar`` decodes a batch of Avro bodies into numpy columns; ``rows.ColumnarRows`` turns
them into the detections/events tables. Both are checked against fastavro + ``TableBuffer.add`` (the
record path) on random records, the catalogue examples, hand-made wire bytes fastavro never writes
(several array blocks, negative block counts, a repeated map key) and broken values.
"""

from __future__ import annotations

import dataclasses
import io
import random
import struct
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from connectors.clickhouse.rows import (
    COLUMNAR,
    TABLES,
    ColumnarRows,
    TableBuffer,
    keep_detection,
    keep_detections,
)
from schemas import codec, contracts, examples
from schemas import records as r
from schemas import topics as t
from schemas.columnar import BatchDecoder, Unsupported

pytestmark = pytest.mark.unit

SID = 7  # the schema id our "registry" knows as the reader's contract
HEADER = struct.pack(">bI", 0, SID)


def _body(record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, contracts.parsed(record.AVRO_NAME), codec.to_avro(record))
    return out.getvalue()


def _value(record: Any) -> bytes:
    return HEADER + _body(record)


def _text(rng: random.Random) -> str:
    return "".join(rng.choice("abcXYZ-_:/ éü日本🚗") for _ in range(rng.randint(0, 12)))


def _maybe(rng: random.Random, value: Any) -> Any:
    return value if rng.random() < 0.6 else None


def _long(rng: random.Random) -> int:
    return rng.choice(
        [0, -1, 1, 63, 64, -65, 2**31, -(2**40), 2**62, -(2**63), 2**63 - 1, rng.randrange(-(10**15), 10**15)]
    )


def random_detections(rng: random.Random) -> r.Detections:
    n = rng.choice([0, 0, 1, 3, 12, 30])
    return r.Detections(
        camera_id=_text(rng),
        frame_seq=rng.choice([0, 1, 127, 128, 2**40, 2**63 - 1]),
        capture_ts_ms=_long(rng),
        width=rng.choice([0, 1, 640, 1920, 65535]),
        height=rng.choice([0, 480, 1080, 65535]),
        model_name=_text(rng),
        model_version=_text(rng),
        boxes=[rng.uniform(-1e6, 1e6) for _ in range(4 * n)],
        class_ids=[rng.randrange(256) for _ in range(n)],
        scores=[rng.random() for _ in range(n)],
        source=rng.choice(list(r.DetectionSource)),
        track_ids=_maybe(rng, [_long(rng) for _ in range(n)]),
        frame_ref=_maybe(rng, r.FrameRef(_text(rng), rng.randrange(100), _long(rng))),
        inference_ms=rng.choice([0.0, 1.5, -3.25, 1e30, float("inf")]),
        processed_ts_ms=_long(rng),
    )


def random_event(rng: random.Random) -> r.Event:
    keys = ["speed_kmh", "limit_kmh", "duration_s", "speed_km", "x", ""]
    evidence = _maybe(
        rng,
        r.Evidence(
            rng.randrange(2**40),
            _long(rng),
            _maybe(rng, r.FrameRef(_text(rng), rng.randrange(-5, 500), _long(rng))),
            [rng.random() for _ in range(rng.choice([0, 4]))],
        ),
    )
    return r.Event(
        event_id=_text(rng),
        camera_id=_text(rng),
        event_type=rng.choice(list(r.EventType)),
        severity=rng.choice(list(r.Severity)),
        ts_ms=_long(rng),
        end_ts_ms=_maybe(rng, _long(rng)),
        track_id=_maybe(rng, _long(rng)),
        class_id=_maybe(rng, rng.randrange(256)),
        lane_id=_maybe(rng, _text(rng)),
        line_id=_maybe(rng, _text(rng)),
        direction=_maybe(rng, _text(rng)),
        confidence=rng.random(),
        measurements={k: rng.uniform(-1e3, 1e300) for k in rng.sample(keys, rng.randint(0, 4))},
        signal_phase=_maybe(rng, _text(rng)),
        evidence=evidence,
        model_version=_maybe(rng, _text(rng)),
        attributes={_text(rng): _text(rng) for _ in range(rng.randint(0, 3))},
    )


RANDOM = {t.DETECTIONS: random_detections, t.EVENTS: random_event}


def record_path(topic: str, values: list[bytes], partitions: np.ndarray, offsets: np.ndarray) -> pa.Table:
    """Today's rows: fastavro per record, TableBuffer.add, to_arrow."""
    cls = type(examples.example_records()[topic])
    parsed = contracts.parsed(cls.AVRO_NAME)
    buf = TableBuffer(TABLES[topic])
    for value, p, o in zip(values, partitions.tolist(), offsets.tolist(), strict=True):
        body = io.BytesIO(value)
        body.seek(5)
        buf.add(codec.from_avro(cls, fastavro.schemaless_reader(body, parsed, None)), p, o)
    return buf.to_arrow()


def columnar(topic: str) -> ColumnarRows:
    return ColumnarRows(topic, lambda sid: sid == SID)


@pytest.mark.parametrize("topic", sorted(COLUMNAR))
def test_random_and_example_records_give_the_record_paths_rows(topic: str) -> None:
    rng = random.Random(topic)
    records = [examples.example_records()[topic]] + [RANDOM[topic](rng) for _ in range(300)]
    values = [_value(rec) for rec in records]
    partitions = np.array([rng.randrange(64) for _ in values])
    offsets = np.arange(len(values)) * 3 + 10**12
    table, rows, rest = columnar(topic).build(values, partitions, offsets)
    assert table is not None and rest.size == 0 and np.array_equal(rows, np.arange(len(values)))
    expected = record_path(topic, values, partitions, offsets)
    assert table.schema == expected.schema
    for name in expected.column_names:  # one column at a time: a failure names the column
        assert table[name].equals(expected[name]), name


def test_odd_but_valid_wire_forms_decode_like_fastavro() -> None:
    """Several array blocks, negative block counts (with byte sizes) and a repeated map key."""
    schema = fastavro.parse_schema({
        "type": "record", "name": "T", "fields": [
            {"name": "xs", "type": {"type": "array", "items": "float"}},
            {"name": "ns", "type": {"type": "array", "items": "long"}},
            {"name": "ss", "type": {"type": "array", "items": "string"}},
            {"name": "m", "type": {"type": "map", "values": "double"}},
            {"name": "b", "type": "boolean"},
            {"name": "e", "type": {"type": "array", "items": {"type": "enum", "name": "E",
                                                              "symbols": ["A", "B"]}}},
        ],
    })  # fmt: skip

    def z(n: int) -> bytes:  # zigzag varint
        u, out = (n << 1) ^ (n >> 63), bytearray()
        while u > 0x7F:
            out.append(u & 0x7F | 0x80)
            u >>= 7
        return bytes([*out, u])

    def s(text: str) -> bytes:
        return z(len(text.encode())) + text.encode()

    body = (
        z(2) + struct.pack("<ff", 1.5, -2.0) + z(-1) + z(4) + struct.pack("<f", 3.0) + z(0)
        + z(1) + z(300) + z(-2) + z(2) + z(-1) + z(2**40) + z(0)
        + z(1) + s("a") + z(2) + s("") + s("日本") + z(0)
        + z(2) + s("k") + struct.pack("<d", 1.0) + s("k") + struct.pack("<d", 2.0) + z(0)
        + b"\x01" + z(3) + z(1) + z(0) + z(1) + z(0)
    )  # fmt: skip
    expected = fastavro.schemaless_reader(io.BytesIO(body), schema, None)
    d = BatchDecoder(schema).decode_values([body, body])
    assert not d.bad.any()
    assert d.lists("xs", pa.float32()).to_pylist() == [expected["xs"]] * 2
    assert d.lists("ns", pa.int64()).to_pylist() == [expected["ns"]] * 2 == [[300, -1, 2**40]] * 2
    assert d.lists("ss", pa.string()).to_pylist() == [expected["ss"]] * 2
    assert d.lists("e", pa.string()).to_pylist() == [expected["e"]] * 2 == [["B", "A", "B"]] * 2
    assert d.values("b").tolist() == [True, True]
    value, found = d.map_lookup("m", "k")
    assert found.all() and value.tolist() == [expected["m"]["k"]] * 2 == [
        2.0,
        2.0,
    ]  # the last one, like a dict
    d.maps("m", pa.float64())
    assert d.bad.all()  # ... but a repeated key cannot be a row of a map column: record path


def test_broken_and_foreign_values_are_left_to_the_record_path() -> None:
    rng = random.Random(5)
    values = [_value(random_event(rng)) for _ in range(40)]
    plain = _body(r.Event("AB", "c", r.EventType.OTHER, r.Severity.INFO, 1))
    assert plain[:6] == b"\x04AB\x02c\x10"  # two strings, then the enum index 8 (OTHER)
    broken = {
        7: values[7][:-1],  # truncated
        8: values[8] + b"\x00",  # trailing bytes
        9: HEADER + plain[:1] + b"\xff\xfe" + plain[3:],  # invalid UTF-8
        10: b"\x01" + values[10][1:],  # not the Confluent magic byte
        11: struct.pack(">bI", 0, SID + 1) + values[11][5:],  # another writer schema: needs resolution
        12: HEADER + plain[:5] + bytes([2 * 40]) + plain[6:],  # enum index 40 of 9 symbols
        13: HEADER + plain[:5] + b"\xff" * 11 + plain[6:],  # a varint longer than ten bytes
        14: b"",
        15: b"\x00\x00",
    }
    for i, v in broken.items():
        values[i] = v
    n = len(values)
    table, rows, rest = columnar(t.EVENTS).build(values, np.zeros(n, np.int64), np.arange(n))
    assert sorted(rest.tolist()) == sorted(broken)
    assert table is not None and rows.tolist() == [i for i in range(n) if i not in broken]
    # fastavro itself refuses the rest (8, 10, 11: the deserializer's framing checks refuse those).
    for i in set(broken) - {8, 10, 11}:
        with pytest.raises((EOFError, ValueError, IndexError, UnicodeDecodeError)):
            record_path(t.EVENTS, [broken[i]], np.zeros(1, np.int64), np.zeros(1, np.int64))
    keep = [values[i] for i in rows.tolist()]
    expected = record_path(t.EVENTS, keep, np.zeros(len(keep), np.int64), rows)
    assert table.equals(expected)


def test_out_of_range_values_are_left_to_the_record_path() -> None:
    """width is UInt16 and class ids UInt8: pa.array on the record path refuses these, so must we."""
    base = examples.example_records()[t.DETECTIONS]
    wide = dataclasses.replace(base, width=70_000)
    odd_class = dataclasses.replace(
        base, class_ids=[300], scores=[0.5], boxes=[1.0, 2.0, 3.0, 4.0], track_ids=None
    )
    values = [_value(base), _value(wide), _value(odd_class), _value(base)]
    table, rows, rest = columnar(t.DETECTIONS).build(values, np.zeros(4, np.int64), np.arange(4))
    assert rows.tolist() == [0, 3] and rest.tolist() == [1, 2] and table is not None and table.num_rows == 2


def test_unsupported_schemas_are_refused_at_compile_time() -> None:
    with pytest.raises(Unsupported):
        BatchDecoder(contracts.parsed("its.Camera"))  # lanes: an array of records
    with pytest.raises(Unsupported):
        BatchDecoder(fastavro.parse_schema({"type": "record", "name": "U", "fields": [
            {"name": "u", "type": ["null", "string", "long"]}]}))  # fmt: skip


def test_buffer_restores_arrival_order_when_both_paths_feed_a_batch() -> None:
    spec = TABLES[t.EVENTS]
    rng = random.Random(9)
    events = [random_event(rng) for _ in range(6)]
    values = [_value(e) for e in events]
    fast, _rows, _rest = columnar(t.EVENTS).build([values[i] for i in (0, 2, 3, 5)], np.zeros(4, np.int64),
                                                  np.array([0, 2, 3, 5]))  # fmt: skip
    assert fast is not None
    buf = TableBuffer(spec)
    buf.add_table(fast, np.array([0, 2, 3, 5]))
    buf.add(events[1], 0, 1, seq=1)
    buf.add(events[4], 0, 4, seq=4)
    assert buf.rows == 6
    table = buf.to_arrow()
    assert table["_offset"].to_pylist() == [0, 1, 2, 3, 4, 5]
    assert table.equals(record_path(t.EVENTS, values, np.zeros(6, np.int64), np.arange(6)))


def test_detection_sampling_is_the_same_on_both_paths() -> None:
    rng = random.Random(3)
    dets = [random_detections(rng) for _ in range(300)]
    values = [_value(d) for d in dets]
    table, _rows, _rest = columnar(t.DETECTIONS).build(values, np.zeros(300, np.int64), np.arange(300))
    assert table is not None
    mask = keep_detections(table, 0.3)
    assert mask.tolist() == [keep_detection(d, 0.3) for d in dets]
    assert 30 < mask.sum() < 150
