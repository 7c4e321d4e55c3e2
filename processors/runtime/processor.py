"""A transactional consume-transform-produce loop on confluent-kafka (exactly-once, KIP-447).

    proc = StreamProcessor("inference", settings, inputs=[FRAMES], group_id="its-inference",
                           handle=lambda batch: [OutputRecord(DETECTIONS, r.record.camera_id, ...)])
    proc.run()   # until SIGTERM; the open batch is committed first

Per batch, in one Kafka transaction: the handler's outputs, a ``DeadLetter`` on ``its.dlq.v1`` for
every input that cannot be decoded, and the consumer offsets (``send_offsets_to_transaction`` with the
consumer's group metadata, so a zombie from an older group generation is fenced). Any failure aborts
the transaction and seeks the consumer back to the batch's first offsets, so the batch is redone;
a read_committed reader downstream sees each output exactly once.

Why not faust: its exactly-once has open duplicate/fencing bugs (faust-streaming #323, #517); this
loop uses librdkafka's transactional producer directly and is proven by a kill -9 test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from infra.kafka.signing import Signer, Verifier, make_producer
from its.service import Service
from its.settings import Settings
from schemas.errors import RecordDecodeError
from schemas.records import DeadLetter
from schemas.serde import TopicSerde
from schemas.topics import DLQ

log = logging.getLogger(__name__)

DLQ_PAYLOAD_LIMIT = 4 * 1024 * 1024  # keep the offending bytes for inspection, up to this size

RECORDS_IN = Counter("its_stream_records_in", "Records consumed", ["processor", "topic"])
RECORDS_OUT = Counter("its_stream_records_out", "Records produced (committed or not)", ["processor", "topic"])
DLQ_RECORDS = Counter(
    "its_stream_dlq_records", "Records sent to the dead-letter topic", ["processor", "reason"]
)
BATCH_SIZE = Histogram(
    "its_stream_batch_size",
    "Input records per transaction",
    ["processor"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_SECONDS = Histogram(
    "its_stream_batch_seconds",
    "Handling + transaction commit time per batch",
    ["processor"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TRANSACTIONS = Counter("its_stream_transactions", "Transactions by outcome", ["processor", "outcome"])
LAG = Gauge("its_stream_consumer_lag", "High watermark minus position", ["processor", "topic", "partition"])
ASSIGNED = Gauge("its_stream_assigned_partitions", "Partitions assigned to this instance", ["processor"])
PAUSED = Gauge("its_stream_paused", "1 while the input partitions are paused (backpressure)", ["processor"])


@dataclass(slots=True)
class InputRecord:
    """One decoded input record and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    record: Any
    timestamp_ms: int


@dataclass(slots=True)
class OutputRecord:
    """One record to produce, serialised with the topic's Avro contract; keyed by camera id."""

    topic: str
    key: str
    record: Any


def dead_letter(
    inp: InputRecord | Message, reason: str, error_type: str, component: str, payload: bytes | None = None
) -> OutputRecord:
    """A ``DeadLetter`` output for one input (an ``InputRecord`` or a raw message)."""
    if isinstance(inp, InputRecord):
        topic, partition, offset, key = inp.topic, inp.partition, inp.offset, inp.key
    else:
        topic, partition, offset, key = inp.topic() or "?", inp.partition() or 0, inp.offset() or 0, inp.key()
        payload = payload if payload is not None else inp.value()
    if payload is not None and len(payload) > DLQ_PAYLOAD_LIMIT:
        payload = None
    record = DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=reason[:2000],
        error_type=error_type,
        component=component,
        ts_ms=int(time.time() * 1000),
        key=key,
        payload=payload,
    )
    return OutputRecord(DLQ, (key or b"").decode(errors="replace"), record)


def default_instance_id() -> str:
    """Stable per host (a Kubernetes StatefulSet pod name is): the base of transactional.id."""
    return socket.gethostname()


class StreamProcessor:
    """Consume ``inputs``, call ``handle`` per batch, produce its outputs, commit offsets: one transaction."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        inputs: Sequence[str],
        group_id: str,
        handle: Callable[[list[InputRecord]], Iterable[OutputRecord]],
        on_assign: Callable[[list[tuple[str, int]]], None] | None = None,
        on_revoke: Callable[[list[tuple[str, int]]], None] | None = None,
        max_batch: int = 500,
        max_wait_ms: int = 100,
        metrics_port: int = 0,
        instance_id: str | None = None,
        max_in_flight: int | None = None,
        consumer_config: dict[str, Any] | None = None,
        producer_config: dict[str, Any] | None = None,
        serde: TopicSerde | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        self.inputs = list(inputs)
        self.group_id = group_id
        self.handle = handle
        self.user_on_assign, self.user_on_revoke = on_assign, on_revoke
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0, max_wait_ms) / 1000
        self.max_in_flight = max(max_in_flight or 4 * self.max_batch, self.max_batch)
        self.instance_id = instance_id or default_instance_id()
        self.transactional_id = f"{name}-{self.instance_id}"
        self.serde = serde or TopicSerde(settings.schema_registry_url)
        self.service = Service(name, port=metrics_port, health=self._health, handle_signals=handle_signals)
        self._consumer_conf = settings.kafka_config(
            **{
                "group.id": group_id,
                # Static membership: a restarted instance takes its partitions back without a rebalance.
                "group.instance.id": self.transactional_id,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "max.poll.interval.ms": 300_000,
                # librdkafka's prefetch queue is the other place frames wait: cap it (backpressure).
                "queued.max.messages.kbytes": 65_536,
                "client.id": self.transactional_id,
                **(consumer_config or {}),
            }
        )
        self._producer_conf = settings.kafka_config(
            **{
                "transactional.id": self.transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "transaction.timeout.ms": 60_000,
                "message.max.bytes": 10 * 1024 * 1024,
                "client.id": self.transactional_id,
                **(producer_config or {}),
            }
        )
        # Secure deployments: edge-topic inputs must be signed by a site owning the camera's prefix, and
        # this processor's own edge-topic outputs (cloud detections) are signed as svc-<name>.
        self._verifier = Verifier.from_settings(settings)
        self._signer = Signer.from_settings(settings, service=name)
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self._assignment: set[tuple[str, int]] = set()
        self._buffer: list[Message] = []  # consumed, not yet in a transaction (bounded: max_in_flight)
        self._paused = False
        self._last_loop = time.monotonic()
        self._last_commit_ms = 0
        self._committed_batches = 0
        self._consecutive_failures = 0
        self._last_lag_update = 0.0
        crash = os.environ.get("ITS_RUNTIME_CRASH_AT", "")
        self._crash = (crash.split(":")[0], int(crash.split(":")[1])) if ":" in crash else None

    # --- lifecycle --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its open batch and exit (what SIGTERM does)."""
        self.service.stop()

    @property
    def stopping(self) -> bool:
        return self.service.stopping

    def run(self) -> None:
        """Process until stopped; the batch in hand is committed before the clients close."""
        with self.service:
            self.producer = make_producer(
                self._producer_conf, self._signer, logger=logging.getLogger("processors.runtime.rdkafka")
            )
            # Fences an older producer with our transactional.id and aborts its open transaction.
            self.producer.init_transactions(60)
            self.consumer = Consumer(
                self._consumer_conf, logger=logging.getLogger("processors.runtime.rdkafka")
            )
            self.consumer.subscribe(
                self.inputs, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
            log.info(
                "stream processor started",
                extra={
                    "processor": self.name,
                    "inputs": self.inputs,
                    "transactional_id": self.transactional_id,
                },
            )
            try:
                while not self.stopping:
                    self._last_loop = time.monotonic()
                    batch = self._next_batch()
                    if batch:
                        self._process(batch)
                    self._update_lag()
            finally:
                self._close()

    def _close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()  # leaves the group: partitions move on at once
            except KafkaException as exc:
                log.warning("consumer close failed", extra={"processor": self.name, "error": str(exc)})
        if self.producer is not None:
            self.producer.flush(10)
        log.info(
            "stream processor stopped", extra={"processor": self.name, "batches": self._committed_batches}
        )

    # --- rebalances -------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Callbacks run inside consume(), between transactions: no batch is open here.
        self._assignment |= {(p.topic, p.partition) for p in partitions}
        ASSIGNED.labels(self.name).set(len(self._assignment))
        self._paused = False
        PAUSED.labels(self.name).set(0)
        log.info("partitions assigned", extra={"processor": self.name, "partitions": len(partitions)})
        if self.user_on_assign:
            self.user_on_assign([(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._assignment -= gone
        # Buffered records of revoked partitions belong to the next owner now.
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) not in gone]
        for topic, partition in gone:
            with contextlib.suppress(KeyError):
                LAG.remove(self.name, topic, str(partition))
        ASSIGNED.labels(self.name).set(len(self._assignment))
        log.info("partitions revoked", extra={"processor": self.name, "partitions": len(partitions)})
        if self.user_on_revoke:
            self.user_on_revoke([(p.topic, p.partition) for p in partitions])

    # --- batching and backpressure ----------------------------------------------------------------

    def _fill(self, timeout: float) -> None:
        """Read ahead into the buffer, never past ``max_in_flight``; pause the partitions when full."""
        assert self.consumer is not None
        room = self.max_in_flight - len(self._buffer)
        if room > 0:
            msgs = self.consumer.consume(num_messages=room, timeout=timeout)
            for msg in msgs:
                err = msg.error()
                if err is None:
                    self._buffer.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    if err.fatal():
                        raise KafkaException(err)
                    log.warning("consumer error", extra={"processor": self.name, "error": str(err)})
        # Hysteresis: pause when full, resume at half, so a steady backlog does not toggle every batch.
        if self._paused:
            want_paused = len(self._buffer) > self.max_in_flight // 2
        else:
            want_paused = len(self._buffer) >= self.max_in_flight
        if want_paused != self._paused and self._assignment:
            parts = [TopicPartition(t, p) for t, p in sorted(self._assignment)]
            (self.consumer.pause if want_paused else self.consumer.resume)(parts)
            self._paused = want_paused
            PAUSED.labels(self.name).set(int(want_paused))

    def _next_batch(self) -> list[Message]:
        """Up to ``max_batch`` records: as soon as that many are there, or ``max_wait_ms`` after the first."""
        deadline: float | None = None
        while len(self._buffer) < self.max_batch and not self.stopping:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            self._fill(0.5 if deadline is None else deadline - now)
            if self._buffer and deadline is None:
                deadline = now + self.max_wait_s
            if not self._buffer:
                return []
        batch, self._buffer = self._buffer[: self.max_batch], self._buffer[self.max_batch :]
        if self._paused and len(self._buffer) <= self.max_in_flight // 2:
            self._fill(0)  # resume fetching now that there is room
        return batch

    # --- one transaction --------------------------------------------------------------------------

    def _decode(self, batch: list[Message]) -> tuple[list[InputRecord], list[OutputRecord]]:
        inputs: list[InputRecord] = []
        dead: list[OutputRecord] = []
        for msg in batch:
            topic = msg.topic() or "?"
            RECORDS_IN.labels(self.name, topic).inc()
            refused = self._verifier.check(msg) if self._verifier is not None else None
            if refused is not None:
                dead.append(dead_letter(msg, refused, "RecordSignatureError", self.name))
                continue
            try:
                record = self.serde.decode(msg)
            except RecordDecodeError as exc:
                dead.append(dead_letter(msg, exc.reason, type(exc).__name__, self.name))
                continue
            _, ts = msg.timestamp()
            inputs.append(InputRecord(topic, msg.partition() or 0, msg.offset() or 0, msg.key(), record, ts))
        return inputs, dead

    def _produce(self, out: OutputRecord) -> None:
        assert self.producer is not None
        value = self.serde.encode(out.topic, out.record)
        key = out.key.encode()
        while True:
            try:
                self.producer.produce(out.topic, value=value, key=key)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)
        RECORDS_OUT.labels(self.name, out.topic).inc()
        if out.topic == DLQ:
            DLQ_RECORDS.labels(self.name, getattr(out.record, "error_type", "?")).inc()

    def _process(self, batch: list[Message]) -> None:
        assert self.producer is not None and self.consumer is not None
        start = time.perf_counter()
        BATCH_SIZE.labels(self.name).observe(len(batch))
        self.producer.begin_transaction()
        try:
            inputs, dead = self._decode(batch)
            for out in dead:
                self._produce(out)
            if inputs:
                for out in self.handle(inputs):
                    self._produce(out)
            self._maybe_crash("after_produce")
            self.producer.send_offsets_to_transaction(
                self._next_offsets(batch), self.consumer.consumer_group_metadata(), 30
            )
            self._commit()
        except Exception as exc:
            self._abort_and_rewind(batch, exc)
            return
        self._consecutive_failures = 0
        self._committed_batches += 1
        self._last_commit_ms = int(time.time() * 1000)
        TRANSACTIONS.labels(self.name, "committed").inc()
        BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - start)

    def _maybe_crash(self, point: str) -> None:
        """Fault injection for the kill -9 tests: ``ITS_RUNTIME_CRASH_AT=after_produce:N`` makes the Nth
        batch of this process flush its outputs into the open transaction and SIGKILL itself."""
        if self._crash is None or self._crash[0] != point or self._committed_batches + 1 != self._crash[1]:
            return
        assert self.producer is not None
        self.producer.flush(30)  # the records are on the broker, inside a transaction never committed
        log.warning("fault injection: SIGKILL", extra={"processor": self.name, "point": point})
        os.kill(os.getpid(), signal.SIGKILL)

    def _commit(self) -> None:
        assert self.producer is not None
        for attempt in range(5):
            try:
                self.producer.commit_transaction(30)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and attempt < 4:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise

    @staticmethod
    def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
        last: dict[tuple[str, int], int] = {}
        for msg in batch:
            tp = (msg.topic() or "", msg.partition() or 0)
            last[tp] = max(last.get(tp, -1), msg.offset() or 0)
        return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]

    def _abort_and_rewind(self, batch: list[Message], exc: Exception) -> None:
        """Abort the transaction and seek back to the batch's first offsets, so it is redone."""
        assert self.producer is not None and self.consumer is not None
        TRANSACTIONS.labels(self.name, "aborted").inc()
        if isinstance(exc, KafkaException) and exc.args[0].fatal():
            log.error("fatal producer error (fenced by a newer instance?)", extra={"processor": self.name})
            raise exc
        log.warning(
            "batch failed; aborting the transaction and redoing it",
            extra={"processor": self.name, "error": repr(exc), "records": len(batch)},
        )
        try:
            self.producer.abort_transaction(30)
        except KafkaException as abort_exc:
            if abort_exc.args[0].fatal():
                raise
            log.warning("abort failed", extra={"processor": self.name, "error": str(abort_exc)})
        first: dict[tuple[str, int], int] = {}
        for msg in batch:
            tp = (msg.topic() or "", msg.partition() or 0)
            first[tp] = min(first.get(tp, 1 << 62), msg.offset() or 0)
        # Buffered read-ahead is redone from the same positions too.
        for msg in self._buffer:
            tp = (msg.topic() or "", msg.partition() or 0)
            first[tp] = min(first.get(tp, 1 << 62), msg.offset() or 0)
        self._buffer = []
        for (topic, partition), offset in first.items():
            if (topic, partition) in self._assignment:
                self.consumer.seek(TopicPartition(topic, partition, offset))
        self._consecutive_failures += 1
        if not isinstance(exc, KafkaException) and self._consecutive_failures >= 3:
            raise exc  # the handler fails on this batch every time: a bug, not a transient fault
        time.sleep(min(0.1 * 2**self._consecutive_failures, 5))

    # --- observability ----------------------------------------------------------------------------

    def _update_lag(self) -> None:
        now = time.monotonic()
        if self.consumer is None or now - self._last_lag_update < 5 or not self._assignment:
            return
        self._last_lag_update = now
        parts = [TopicPartition(t, p) for t, p in sorted(self._assignment)]
        try:
            positions = self.consumer.position(parts)
        except KafkaException:
            return
        for tp in positions:
            try:
                _, high = self.consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            except KafkaException:
                continue
            if tp.offset >= 0 and high >= 0:
                LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    def _health(self) -> tuple[bool, dict[str, Any]]:
        stalled = time.monotonic() - self._last_loop > 120
        return not stalled, {
            "processor": self.name,
            "transactional_id": self.transactional_id,
            "assigned_partitions": len(self._assignment),
            "paused": self._paused,
            "buffered": len(self._buffer),
            "committed_batches": self._committed_batches,
            "last_commit_ms": self._last_commit_ms,
        }
