"""The console's Kafka side: one consumer thread filling ``ConsoleState``, and evidence-frame look-ups.

The console is a view, not a worker: every instance reads every partition (``assign``, not a group
subscription; the group id only names it in Kafka tooling), committed records only, starting a
little in the past so a fresh console shows the recent incidents, acks and camera states at once:
cameras (compacted) from the beginning, alerts/acks/events/heartbeats from ``warmup_s`` ago,
detections and keyframes from ``live_warmup_s`` ago. Nothing is committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge

from its.console.state import ConsoleState
from its.settings import Settings
from schemas import records as r
from schemas.errors import RecordDecodeError
from schemas.serde import TopicSerde
from schemas.topics import ALERT_ACKS, ALERTS, CAMERAS, DETECTIONS, EVENTS, FRAMES, HEALTH

log = logging.getLogger(__name__)

RECORDS = Counter("its_console_records_total", "Records the console consumed", ["topic"])
DECODE_ERRORS = Counter("its_console_decode_errors_total", "Records the console could not decode", ["topic"])
FEED_UP = Gauge("its_console_feed_assigned_topics", "Topics the console's consumer reads")
LAST_RECORD = Gauge("its_console_last_record_timestamp_seconds", "Wall time the console last read a record")

LONG_TOPICS = (ALERTS, ALERT_ACKS, EVENTS, HEALTH)
LIVE_TOPICS = (DETECTIONS, FRAMES)
TOPICS = (CAMERAS, *LONG_TOPICS, *LIVE_TOPICS)


class Feed(threading.Thread):
    """Consumes the console topics into ``state`` until ``stop()``."""

    def __init__(self, settings: Settings, state: ConsoleState, serde: TopicSerde | None = None) -> None:
        super().__init__(name="console-feed", daemon=True)
        self.settings = settings
        self.state = state
        self.serde = serde or TopicSerde(settings.schema_registry_url, auto_register=False)
        self._stopping = threading.Event()
        self.assigned: set[str] = set()
        self.error: str | None = None
        self.records = 0
        self.caught_up = threading.Event()  # set once the warm-up backlog has been read

    def stop(self) -> None:
        self._stopping.set()

    def _start_offsets(self, consumer: Consumer, topics: list[str]) -> list[TopicPartition]:
        cfg = self.settings.console
        now = int(time.time() * 1000)
        out: list[TopicPartition] = []
        by_time: list[TopicPartition] = []
        meta = consumer.list_topics(timeout=10).topics
        for topic in topics:
            info = meta.get(topic)
            if info is None or info.error is not None:
                continue
            for p in info.partitions:
                if topic == CAMERAS:
                    out.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                else:
                    back = cfg.live_warmup_s if topic in LIVE_TOPICS else cfg.warmup_s
                    by_time.append(TopicPartition(topic, p, int(now - back * 1000)))
        if by_time:
            for tp in consumer.offsets_for_times(by_time, timeout=10):
                # -1: nothing at or after that time -> read from the end (only new records).
                out.append(
                    TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                )
        return out

    def _ends(self, consumer: Consumer, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        ends = {}
        for tp in tps:
            if tp.offset == OFFSET_END:
                continue  # starts at the end: no backlog to wait for
            _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            ends[(tp.topic, tp.partition)] = high
        return ends

    def run(self) -> None:
        conf = self.settings.kafka_config(
            **{
                "group.id": self.settings.console.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "isolation.level": "read_committed",
                "fetch.max.bytes": 64 * 1024 * 1024,
            }
        )
        consumer = Consumer(conf)
        try:
            self._loop(consumer)
        except Exception as exc:  # the web side stays up and reports it on /healthz
            self.error = repr(exc)
            log.exception("console feed stopped")
        finally:
            consumer.close()

    def _loop(self, consumer: Consumer) -> None:
        pending: dict[tuple[str, int], int] = {}  # (topic, partition) -> end offset at assignment
        next_check = 0.0
        idle = 0  # consecutive empty polls
        while not self._stopping.is_set():
            missing = [t for t in TOPICS if t not in self.assigned]
            if missing and time.monotonic() >= next_check:
                # Topics appear when the first producer creates them: look again every few seconds.
                next_check = time.monotonic() + 5.0
                try:
                    tps = self._start_offsets(consumer, missing)
                except KafkaException as exc:
                    self.error = str(exc)
                    continue
                if tps:
                    starts = {(tp.topic, tp.partition): tp.offset for tp in tps}
                    # Backlog only where the start lies before the end (OFFSET_END/-1: nothing to read).
                    pending.update(
                        {k: end for k, end in self._ends(consumer, tps).items()
                         if (starts[k] == OFFSET_BEGINNING and end > 0) or 0 <= starts[k] < end}
                    )  # fmt: skip
                    consumer.incremental_assign(tps)
                    self.assigned |= {tp.topic for tp in tps}
                    FEED_UP.set(len(self.assigned))
                    log.info("console feed assigned", extra={"topics": sorted({tp.topic for tp in tps})})
                    self.error = None
            msgs = consumer.consume(500, 0.05)  # short: an alert waits at most this long for its batch
            idle = 0 if msgs else idle + 1
            for msg in msgs:
                if msg.error() is not None:
                    continue
                topic = msg.topic()
                key = (topic, msg.partition())
                if key in pending and msg.offset() >= pending[key] - 1:
                    del pending[key]
                try:
                    record = self.serde.decode(msg)
                except RecordDecodeError as exc:
                    DECODE_ERRORS.labels(topic).inc()
                    log.warning("undecodable record", extra={"topic": topic, "error": str(exc)})
                    continue
                RECORDS.labels(topic).inc()
                self.state.on_record(record)
                self.records += 1
            if msgs:
                LAST_RECORD.set(time.time())
            if pending and idle:
                # A transaction marker may be a partition's last offset: never delivered, but the
                # position moves past it. Two idle seconds also end the wait (nothing more to read).
                done = consumer.position([TopicPartition(t, p) for t, p in pending])
                for tp in done:
                    if tp.offset >= pending[(tp.topic, tp.partition)] or idle >= 40:
                        pending.pop((tp.topic, tp.partition), None)
            if not pending and not missing:
                self.caught_up.set()


class FrameFetcher:
    """Reads single keyframes by (topic, partition, offset): the evidence an alert points at."""

    def __init__(self, settings: Settings, serde: TopicSerde, cache_size: int = 64) -> None:
        self.settings = settings
        self.serde = serde
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._cache: OrderedDict[tuple[str, int, int], r.Frame | None] = OrderedDict()
        self._cache_size = cache_size

    def fetch(self, ref: r.FrameRef, timeout_s: float = 3.0) -> r.Frame | None:
        """The frame at ``ref``, or None when retention has removed it (or it is not a frame)."""
        key = (ref.topic, ref.partition, ref.offset)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            if self._consumer is None:
                self._consumer = Consumer(
                    self.settings.kafka_config(
                        **{
                            "group.id": f"{self.settings.console.group_id}-evidence",
                            "enable.auto.commit": False,
                            "auto.offset.reset": "error",
                        }
                    )
                )
            frame = self._read(self._consumer, ref, timeout_s)
            self._cache[key] = frame
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return frame

    def _read(self, consumer: Consumer, ref: r.FrameRef, timeout_s: float) -> r.Frame | None:
        consumer.assign([TopicPartition(ref.topic, ref.partition, ref.offset)])
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                msg: Any = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is not None:
                    return None  # offset out of range: the frame is past its retention
                if msg.offset() != ref.offset:
                    return None  # compacted or transactional gap: the exact frame is gone
                try:
                    record = self.serde.decode(msg)
                except RecordDecodeError:
                    return None
                return record if isinstance(record, r.Frame) else None
            return None
        finally:
            consumer.unassign()

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
