-- The audit trail (its.audit.v1, filled by the ClickHouse sink) and retention for dead letters.
--
-- audit is append-only: plain MergeTree, so no row is ever merged away or replaced, and no code path
-- of the project issues UPDATE or DELETE on it (`its privacy erase` leaves it alone on purpose: the
-- erasure itself is audited there). Entries leave only by the TTL, whole parts at a time, after the
-- seed's 7-year compliance tier for audit logs. A replayed batch is dropped by the sink's
-- deduplication token like every other sink table; readers who must see one row per entry even after
-- a producer-side retry use `LIMIT 1 BY audit_id`.

CREATE TABLE IF NOT EXISTS audit
(
    audit_id    String,
    ts          DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    actor       LowCardinality(String),
    action      LowCardinality(String),
    target      String,
    outcome     LowCardinality(String),
    reason      String,
    details     Map(String, String),
    component   LowCardinality(String),
    _partition  UInt16,
    _offset     Int64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (action, target, ts)
TTL toDateTime(ts) + INTERVAL ${ttl_audit_days:2555} DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

-- Dead letters keep the raw record (frames included), so they follow the DLQ topic's 30 days
-- instead of staying forever.
ALTER TABLE dead_letters MODIFY TTL toDateTime(received_at) + INTERVAL ${ttl_dead_letters_days:30} DAY;
