"""Prometheus metrics of the edge process (module level: one set per process, labelled by camera).

Labels carry camera ids and topic names only, never a source URL (credentials)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES_IN = Counter("its_edge_frames_in_total", "Frames decoded from the source", ["camera"])
FRAMES_SAMPLED = Counter("its_edge_frames_sampled_total", "Frames kept by the sampler", ["camera"])
FRAMES_SKIPPED = Counter(
    "its_edge_frames_skipped_total", "Sampled frames not published, by reason (blur)", ["camera", "reason"]
)
KEYFRAMES = Counter("its_edge_keyframes_total", "Sampled frames chosen as keyframes", ["camera"])
DECODE_ERRORS = Counter("its_edge_decode_errors_total", "Undecodable frames or files", ["camera"])
RECONNECTS = Counter("its_edge_reconnects_total", "Reconnect attempts of live sources", ["camera"])
RECORDS_SUBMITTED = Counter(
    "its_edge_records_submitted_total", "Records accepted into the publish queue", ["camera", "topic"]
)
RECORDS_DROPPED = Counter(
    "its_edge_records_dropped_total",
    "Records dropped before Kafka (queue_full_nonkey, queue_full, spool_full)",
    ["camera", "reason"],
)
DELIVERED = Counter("its_edge_delivered_total", "Records acknowledged by Kafka", ["topic"])
DELIVERY_FAILED = Counter(
    "its_edge_delivery_failed_total", "Records Kafka refused for good", ["topic", "error"]
)
SPOOLED = Counter("its_edge_spooled_total", "Records written to the disk spool")
REPLAYED = Counter("its_edge_replayed_total", "Spooled records handed back to Kafka")
QUEUE_DEPTH = Gauge("its_edge_queue_depth", "Records in the in-memory publish queue")
OUTSTANDING = Gauge("its_edge_outstanding", "Records handed to librdkafka and not yet acknowledged")
SPOOL_BYTES = Gauge("its_edge_spool_bytes", "Bytes in the disk spool")
SPOOL_LIMIT = Gauge("its_edge_spool_limit_bytes", "The disk spool's byte bound (alert when bytes near it)")
SPOOLING = Gauge("its_edge_spooling", "1 while the broker is considered unreachable")
MODE = Gauge("its_edge_mode", "Processing mode in force (1 for the active one)", ["camera", "mode"])
CONNECTED = Gauge("its_edge_source_connected", "1 while the source delivers frames", ["camera"])
ENCODE_SECONDS = Histogram(
    "its_edge_encode_seconds",
    "Analyse + resize + JPEG encode time per sampled frame",
    ["camera"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
DETECT_SECONDS = Histogram(
    "its_edge_detect_seconds",
    "Edge detector time per sampled frame",
    ["camera"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
