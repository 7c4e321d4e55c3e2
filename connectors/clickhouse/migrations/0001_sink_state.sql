-- Sink state for the exactly-once ClickHouse sink.
--
-- Each batch the sink writes carries insert_deduplication_token = topic-partition-minOffset-maxOffset;
-- the sink inserts one sink_offsets row per batch with the same token, so a replayed batch is dropped
-- in both tables. On start it seeks every partition to max(max_offset) + 1 for its consumer group.
-- Timestamps are UTC on purpose: the embedded engine otherwise reports the host's time zone.

CREATE TABLE IF NOT EXISTS sink_offsets
(
    consumer_group LowCardinality(String),
    topic          LowCardinality(String),
    partition      UInt32,
    min_offset     Int64,
    max_offset     Int64,
    rows           UInt64,
    dedup_token    String,
    committed_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(committed_at)
ORDER BY (consumer_group, topic, partition, max_offset)
SETTINGS non_replicated_deduplication_window = 1000;

-- Anything the sink could not write, with the reason; nothing is dropped silently.
-- payload is the raw Kafka value, base64-encoded (values are binary: Avro, JPEG).
CREATE TABLE IF NOT EXISTS dead_letters
(
    topic       LowCardinality(String),
    partition   UInt32,
    offset      Int64,
    key         String,
    reason      String,
    error_type  LowCardinality(String),
    payload     String,
    received_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset)
SETTINGS non_replicated_deduplication_window = 1000;
