"""The transactional runtime with a plain handler: callbacks, bounded read-ahead with pause/resume,
handler failures aborted and redone, SIGTERM-style stop after the open batch."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from infra.topics import ensure_topics
from processors.runtime import InputRecord, OutputRecord, StreamProcessor
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import DETECTIONS, FRAMES
from tests.integration import inference_support as s

pytestmark = pytest.mark.integration


def _to_detections(inp: InputRecord) -> OutputRecord:
    f: r.Frame = inp.record
    rec = r.Detections(f.camera_id, f.frame_seq, f.capture_ts_ms, f.width, f.height, "echo", "0", [], [], [])
    rec.frame_ref = r.FrameRef(inp.topic, inp.partition, inp.offset)
    return OutputRecord(DETECTIONS, f.camera_id, rec)


def test_runtime_backpressure_callbacks_and_redo_after_a_handler_failure(kafka_settings, schema_registry):
    bootstrap = kafka_settings.kafka_bootstrap
    ensure_topics({"bootstrap.servers": bootstrap})
    serde = TopicSerde(schema_registry)
    group = f"runtime-test-{uuid.uuid4().hex[:8]}"
    s.start_group_at_end(bootstrap, group)
    prefix = s.camera_prefix()
    n = 60
    frames = [r.Frame(f"{prefix}-{i % 3}", i // 3, i, 4, 4, True, b"x", 0.0, "t") for i in range(n)]
    start = s.end_offsets(bootstrap, DETECTIONS)
    s.produce_frames(bootstrap, serde, frames)

    assigned: list[tuple[str, int]] = []
    seen_buffer: list[int] = []
    paused_seen: list[bool] = []
    failures = {"left": 1}
    settings = kafka_settings.model_copy(update={"schema_registry_url": schema_registry})
    proc: StreamProcessor

    def handle(batch: list[InputRecord]):
        seen_buffer.append(len(proc._buffer) + len(batch))
        paused_seen.append(proc._paused)
        ours = [b for b in batch if b.record.camera_id.startswith(prefix)]
        if ours and failures["left"]:
            failures["left"] -= 1
            # Half the outputs are produced inside the transaction, then the handler fails:
            # the transaction is aborted and the batch redone, so none of these may be seen.
            yield from (_to_detections(b) for b in ours[: len(ours) // 2])
            raise RuntimeError("injected handler failure")
        time.sleep(0.05)  # a slow consumer: the read-ahead fills up and the partitions pause
        yield from (_to_detections(b) for b in batch)

    proc = StreamProcessor(
        "runtime-test",
        settings,
        inputs=[FRAMES],
        group_id=group,
        handle=handle,
        on_assign=assigned.extend,
        max_batch=4,
        max_wait_ms=20,
        max_in_flight=12,
        instance_id=group,
        handle_signals=False,
    )
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    try:
        got = s.read_committed(
            bootstrap, serde, DETECTIONS, start, lambda d: d.camera_id.startswith(prefix), want=n, timeout=120
        )
    finally:
        proc.stop()
        thread.join(60)
    assert not thread.is_alive()
    keys = [(d.camera_id, d.frame_seq) for d in got]
    assert len(keys) == len(set(keys)) == n  # the aborted half-batch left no trace
    assert len(assigned) == 24 and {t for t, _ in assigned} == {FRAMES}
    assert failures["left"] == 0
    assert max(seen_buffer) <= 12  # read-ahead never exceeds max_in_flight
    assert any(paused_seen)  # ... because the partitions were paused when it was full


def test_two_instances_split_the_partitions_and_each_frame_is_output_once(kafka_settings, schema_registry):
    """Scale-out: a second instance joins the group mid-stream; the rebalance loses and doubles nothing."""
    bootstrap = kafka_settings.kafka_bootstrap
    ensure_topics({"bootstrap.servers": bootstrap})
    serde = TopicSerde(schema_registry)
    group = f"runtime-scale-{uuid.uuid4().hex[:8]}"
    s.start_group_at_end(bootstrap, group)
    prefix = s.camera_prefix()
    n = 120
    frames = [r.Frame(f"{prefix}-{i % 12}", i // 12, i, 4, 4, True, b"x", 0.0, "t") for i in range(n)]
    start = s.end_offsets(bootstrap, DETECTIONS)
    settings = kafka_settings.model_copy(update={"schema_registry_url": schema_registry})
    owners: dict[str, set[tuple[str, int]]] = {"a": set(), "b": set()}
    handled: dict[str, int] = {"a": 0, "b": 0}

    def make(tag: str) -> StreamProcessor:
        def handle(batch: list[InputRecord]):
            handled[tag] += len(batch)
            time.sleep(0.02)
            return [_to_detections(b) for b in batch]

        return StreamProcessor(
            f"scale-{tag}",
            settings,
            inputs=[FRAMES],
            group_id=group,
            handle=handle,
            on_assign=lambda parts, t=tag: owners[t].update(parts),
            on_revoke=lambda parts, t=tag: owners[t].difference_update(parts),
            max_batch=8,
            max_wait_ms=20,
            instance_id=f"{group}-{tag}",
            handle_signals=False,
        )

    a, b = make("a"), make("b")
    threads = [threading.Thread(target=p.run, daemon=True) for p in (a, b)]
    threads[0].start()
    s.produce_frames(bootstrap, serde, frames[: n // 2])
    time.sleep(2)
    threads[1].start()  # joins while the first half is being processed
    s.produce_frames(bootstrap, serde, frames[n // 2 :])
    try:
        got = s.read_committed(
            bootstrap, serde, DETECTIONS, start, lambda d: d.camera_id.startswith(prefix), want=n, timeout=150
        )
        deadline = time.monotonic() + 60
        while not (owners["a"] and owners["b"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        split = (set(owners["a"]), set(owners["b"]))
    finally:
        for p in (a, b):
            p.stop()
        for t in threads:
            t.join(60)
    keys = [(d.camera_id, d.frame_seq) for d in got]
    assert len(keys) == len(set(keys)) == n
    assert split[0] and split[1] and not split[0] & split[1] and len(split[0] | split[1]) == 24
    assert handled["a"] > 0  # b may find the stream drained by the time its rebalance completes
