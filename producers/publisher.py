"""Publishing from the edge: idempotent Kafka producers behind a bounded in-memory queue and a disk spool.

Capture threads call ``submit`` (never blocks). One sender thread moves records on:

* broker reachable, spool empty: records go straight to librdkafka (at most ``inflight_max``
  unacknowledged). When Kafka is slow the window stays full, the queue fills, and ``submit`` drops the
  oldest *droppable* record (a sampled non-keyframe) first, counted.
* no acknowledgement for ``spool_after_s`` while records are outstanding (or librdkafka reports all
  brokers down): the broker is unreachable; new records are appended to the disk spool, in order.
* when an acknowledgement arrives again the spool is replayed in order; live records keep going to
  the spool's tail until it is drained, so the order on each partition is the order of ``submit``.

Why nothing is sent twice: records handed to librdkafka are never resent by us. ``message.timeout.ms``
is 0 (infinite), so librdkafka retries them itself until the broker returns, and the idempotent
producer (PID + per-partition sequence numbers) makes the broker discard any retried duplicate and keeps
order. Only records librdkafka never got (the spool) are produced later, each exactly once; the spool
cursor moves past a record only when its acknowledgement arrived. At shutdown during an outage the
records librdkafka still holds are purged and put back at the spool's head for the next run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from infra.kafka.signing import Signer, make_producer
from producers import metrics as m
from producers.spool import DiskSpool, Position, SpoolRecord
from schemas.topics import FRAMES

log = logging.getLogger(__name__)


@dataclass(slots=True)
class OutRecord:
    """One record on its way to Kafka."""

    topic: str
    key: bytes
    value: bytes | None
    camera_id: str = ""
    droppable: bool = False  # a sampled non-keyframe: first to go when the queue is full
    seq: int = -1

    @property
    def size(self) -> int:
        return len(self.key) + len(self.value or b"") + len(self.topic)


@dataclass(slots=True)
class PublisherStats:
    submitted: int = 0
    produced: int = 0
    delivered: int = 0
    delivery_failed: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    dropped_by_camera: dict[str, int] = field(default_factory=dict)
    purged_to_spool: int = 0
    outages: int = 0
    acked_bytes: int = 0


class OutboundQueue:
    """A bounded FIFO (records and bytes) whose ``put`` never blocks: over a bound it evicts the oldest
    droppable record, or the oldest record when none is droppable, and reports each eviction."""

    def __init__(self, max_records: int, max_bytes: int, on_drop: Callable[[OutRecord, str], None]) -> None:
        self.max_records, self.max_bytes = max_records, max_bytes
        self._q: deque[OutRecord] = deque()
        self._bytes = 0
        self._droppable = 0
        self._cond = threading.Condition()
        self._on_drop = on_drop

    def __len__(self) -> int:
        return len(self._q)

    def put(self, rec: OutRecord) -> None:
        dropped: list[tuple[OutRecord, str]] = []
        with self._cond:
            self._q.append(rec)
            self._bytes += rec.size
            self._droppable += rec.droppable
            while len(self._q) > 1 and (len(self._q) > self.max_records or self._bytes > self.max_bytes):
                victim = None
                if self._droppable:
                    for i, cand in enumerate(self._q):
                        if cand.droppable:
                            victim = cand
                            del self._q[i]
                            break
                if victim is None:
                    victim = self._q.popleft()
                    reason = "queue_full"
                else:
                    reason = "queue_full_nonkey"
                self._bytes -= victim.size
                self._droppable -= victim.droppable
                dropped.append((victim, reason))
            self._cond.notify()
        for victim, reason in dropped:
            self._on_drop(victim, reason)

    def get(self, timeout: float) -> OutRecord | None:
        with self._cond:
            if not self._q and timeout > 0:
                self._cond.wait(timeout)
            if not self._q:
                return None
            rec = self._q.popleft()
            self._bytes -= rec.size
            self._droppable -= rec.droppable
            return rec

    def put_front(self, rec: OutRecord) -> None:
        """Return a record taken by ``get`` that could not be sent yet (keeps its place)."""
        with self._cond:
            self._q.appendleft(rec)
            self._bytes += rec.size
            self._droppable += rec.droppable


def producer_config(base: dict[str, Any], compression: str) -> dict[str, Any]:
    """librdkafka settings of an edge producer: idempotent, acks=all, infinite retries (see module doc)."""
    return {
        **base,
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 0,  # never give a record up: the spool and idempotence need that
        "compression.type": compression,
        "linger.ms": 5,
        "message.max.bytes": 8 * 1024 * 1024,  # 1080p JPEGs; its.frames.v1 allows 8 MiB
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1024 * 1024,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 2000,
        "socket.keepalive.enable": True,
    }


class Publisher:
    """Shared by all cameras of one edge process. ``start()``, ``submit()`` many times, ``close()``."""

    def __init__(
        self,
        kafka_conf: dict[str, Any],
        spool_dir: Path,
        *,
        queue_max_records: int = 512,
        queue_max_bytes: int = 64 * 1024 * 1024,
        inflight_max: int = 2000,
        spool_max_bytes: int = 1024**3,
        spool_after_s: float = 3.0,
        detections_compression: str = "zstd",
        signer: Signer | None = None,
    ) -> None:
        self.stats = PublisherStats()
        self.inflight_max = inflight_max
        self.spool_after_s = spool_after_s
        self._lock = threading.Lock()  # guards stats written by capture threads (drops, submitted)
        self.queue = OutboundQueue(queue_max_records, queue_max_bytes, self._dropped)
        self.spool = DiskSpool(spool_dir, spool_max_bytes)
        rd_logger = logging.getLogger("producers.librdkafka")
        common = {"error_cb": self._on_error, "logger": rd_logger}
        # Two producers: JPEG frames gain nothing from compression; detections and health gain a lot.
        # A signer (secure deployments) adds the site's signature headers to every record.
        self._frames = make_producer({**producer_config(kafka_conf, "none"), **common}, signer)
        self._records = make_producer(
            {**producer_config(kafka_conf, detections_compression), **common}, signer
        )
        self.spooling = False
        self.fatal: str | None = None
        self._last_progress = time.monotonic()
        self._outstanding_since: float | None = None
        self._replay: deque[list[Any]] = deque()  # [position, done] of spool records in librdkafka
        self._live_counter = 0
        self._purged: list[tuple[int, SpoolRecord]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-publisher", daemon=True)
        self._last_cursor_save = time.monotonic()
        self._window_full_since: float | None = None
        if not self.spool.is_empty():
            log.info(
                "spool holds records from an earlier run; replaying them first",
                extra={"spool_bytes": self.spool.bytes},
            )

    # -- capture side ----------------------------------------------------------------------------
    def submit(self, rec: OutRecord) -> None:
        """Queue ``rec`` for Kafka; never blocks (a full queue evicts, counted)."""
        with self._lock:
            self.stats.submitted += 1
        m.RECORDS_SUBMITTED.labels(rec.camera_id, rec.topic).inc()
        self.queue.put(rec)

    def _dropped(self, rec: OutRecord, reason: str) -> None:
        with self._lock:
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
            self.stats.dropped_by_camera[rec.camera_id] = (
                self.stats.dropped_by_camera.get(rec.camera_id, 0) + 1
            )
        m.RECORDS_DROPPED.labels(rec.camera_id, reason).inc()

    def dropped_for(self, camera_id: str) -> int:
        return self.stats.dropped_by_camera.get(camera_id, 0)

    # -- state ----------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self._frames) + len(self._records)

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        alive = self._thread.is_alive() or not self._thread.ident
        return alive and self.fatal is None, {
            "queue_depth": len(self.queue),
            "outstanding": self.outstanding,
            "spool_bytes": self.spool.bytes,
            "spooling": self.spooling,
            "fatal": self.fatal,
        }

    def start(self) -> Publisher:
        self._thread.start()
        return self

    # -- librdkafka callbacks (run inside poll() on the sender thread) -----------------------------
    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = f"{err.name()}: {err.str()}"
            log.critical("fatal producer error", extra={"error": self.fatal})
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self.spooling:
                self._begin_spooling("all brokers down")
        else:
            log.debug("producer error", extra={"error": err.str()})

    def _begin_spooling(self, why: str) -> None:
        self.spooling = True
        self.stats.outages += 1
        m.SPOOLING.set(1)
        log.warning(
            "broker unreachable; spooling to disk",
            extra={"reason": why, "outstanding": self.outstanding, "spool_bytes": self.spool.bytes},
        )

    def _progress(self) -> None:
        self._last_progress = time.monotonic()
        if self.spooling:
            self.spooling = False
            m.SPOOLING.set(0)
            log.info("broker reachable again; replaying the spool", extra={"spool_bytes": self.spool.bytes})

    def _delivery(
        self, slot: list[Any] | None, order: int, size: int
    ) -> Callable[[KafkaError | None, Any], None]:
        def report(err: KafkaError | None, msg: Any) -> None:
            topic = msg.topic() or "?"
            if err is None:
                self.stats.delivered += 1
                self.stats.acked_bytes += size
                m.DELIVERED.labels(topic).inc()
                self._progress()
            elif err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
                if slot is None:  # a live record librdkafka never delivered: back to the spool's head
                    self._purged.append((order, SpoolRecord(topic, msg.key(), msg.value())))
                return  # a spooled record stays in the spool (its cursor never moved past it)
            else:
                self.stats.delivery_failed += 1
                m.DELIVERY_FAILED.labels(topic, err.name()).inc()
                log.error("record refused by Kafka", extra={"topic": topic, "error": err.str()})
            if slot is not None:
                slot[1] = True
                self._advance_cursor()

        return report

    def _advance_cursor(self) -> None:
        last: Position | None = None
        while self._replay and self._replay[0][1]:
            last = self._replay.popleft()[0]
        if last is not None:
            self.spool.commit(last)

    # -- sender thread ---------------------------------------------------------------------------
    def _produce(self, topic: str, key: bytes | None, value: bytes | None, slot: list[Any] | None) -> bool:
        producer = self._frames if topic == FRAMES else self._records
        self._live_counter += 1
        size = len(value or b"") + len(key or b"")
        try:
            producer.produce(
                topic, value=value, key=key, on_delivery=self._delivery(slot, self._live_counter, size)
            )
        except BufferError:
            return False
        except KafkaException as exc:
            self.stats.delivery_failed += 1
            log.error("produce failed", extra={"topic": topic, "error": str(exc)})
            return True
        if self._outstanding_since is None:
            self._outstanding_since = time.monotonic()
        self.stats.produced += 1
        return True

    def _poll(self, timeout: float = 0.0) -> None:
        self._frames.poll(timeout)
        self._records.poll(0)

    def _check_reachability(self) -> None:
        now = time.monotonic()
        if self.outstanding == 0:
            self._outstanding_since = None
            return
        waited_since = max(self._last_progress, self._outstanding_since or now)
        if not self.spooling and now - waited_since > self.spool_after_s:
            self._begin_spooling(f"no acknowledgement for {self.spool_after_s:g} s")

    def _replay_some(self) -> None:
        """Hand spooled records to librdkafka: a window's worth when reachable, one probe when not."""
        limit = 1 if self.spooling else self.inflight_max
        while self.spool.has_unread() and self.outstanding < limit:
            got = self.spool.read_next()
            if got is None:
                return
            rec, pos = got
            slot: list[Any] = [pos, False]
            if not self._produce(rec.topic, rec.key, rec.value, slot):
                self.spool.read_pos = self._replay[-1][0] if self._replay else self.spool.cursor
                return
            self._replay.append(slot)
            self.stats.replayed += 1
            m.REPLAYED.inc()

    def _to_spool(self, rec: OutRecord) -> None:
        if self.spool.append(SpoolRecord(rec.topic, rec.key, rec.value)):
            self.stats.spooled += 1
            m.SPOOLED.inc()
        else:
            self._dropped(rec, "spool_full")

    def _step(self, wait: float) -> bool:
        """One round of the sender loop; False when there was nothing to do."""
        self._poll(0)
        self._check_reachability()
        busy = False
        if self.spool.has_unread() and (not self.spooling or self.outstanding == 0):
            self._replay_some()
        rec = self.queue.get(0)
        if rec is not None:
            busy = True
            # While spooled records are unread or unacknowledged, new ones queue behind them on disk:
            # librdkafka then never holds a live record after a spooled one, so a purge at shutdown
            # can put live records back at the spool's head without reordering anything.
            if self.spooling or self.spool.has_unread() or self._replay:
                self._to_spool(rec)
            elif self.outstanding < self.inflight_max and self._produce(rec.topic, rec.key, rec.value, None):
                pass
            else:
                self.queue.put_front(rec)  # Kafka is slow: keep it; the queue bound decides what goes
                self._poll(0.01)
        if time.monotonic() - self._last_cursor_save > 0.5:
            self.spool.maybe_save_cursor()
            self._last_cursor_save = time.monotonic()
        self._publish_gauges()
        if not busy:
            # Nothing queued: wait for callbacks or new records without spinning.
            self._poll(min(wait, 0.02))
            if len(self.queue) == 0:
                rec = self.queue.get(wait)
                if rec is not None:
                    self.queue.put_front(rec)
        return busy

    def _publish_gauges(self) -> None:
        m.QUEUE_DEPTH.set(len(self.queue))
        m.OUTSTANDING.set(self.outstanding)
        m.SPOOL_BYTES.set(self.spool.bytes)
        m.SPOOL_LIMIT.set(self.spool.max_bytes)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step(0.05)
        except Exception as exc:  # the sender must not die silently: health turns red
            self.fatal = f"sender thread crashed: {exc!r}"
            log.exception("publisher sender crashed")

    def close(self, timeout: float = 15.0) -> dict[str, Any]:
        """Send what is queued, wait up to ``timeout`` s for acknowledgements, spool the rest."""
        self._stop.set()
        if self._thread.ident:
            self._thread.join()
        deadline = time.monotonic() + timeout
        # Drain: same rules as the loop, until nothing is queued, unread or outstanding (or time is up).
        while time.monotonic() < deadline and not self.fatal:
            self._step(0.01)
            if len(self.queue) == 0 and self.outstanding == 0 and not self.spool.has_unread():
                break
        while len(self.queue):  # time is up: whatever is still queued goes to disk, in order
            rec = self.queue.get(0)
            if rec is not None:
                self._to_spool(rec)
        if self.outstanding:
            log.warning(
                "records still unacknowledged at shutdown; keeping them for the next run",
                extra={"outstanding": self.outstanding},
            )
            for producer in (self._frames, self._records):
                with contextlib.suppress(KafkaException):
                    producer.purge(in_queue=True, in_flight=True, blocking=True)
            for _ in range(3):
                self._poll(0.1)
            self._purged.sort(key=lambda x: x[0])
            self.stats.purged_to_spool = len(self._purged)
            self._replay.clear()
            self.spool.prepend([r for _, r in self._purged])
        for producer in (self._frames, self._records):
            with contextlib.suppress(KafkaException):
                producer.flush(0)
        self.spool.close()
        self._publish_gauges()
        summary = {
            "submitted": self.stats.submitted,
            "delivered": self.stats.delivered,
            "delivery_failed": self.stats.delivery_failed,
            "spooled": self.stats.spooled,
            "replayed": self.stats.replayed,
            "dropped": dict(self.stats.dropped),
            "outages": self.stats.outages,
            "left_in_spool_bytes": self.spool.bytes,
            "purged_to_spool": self.stats.purged_to_spool,
        }
        log.info("publisher closed", extra=summary)
        return summary
