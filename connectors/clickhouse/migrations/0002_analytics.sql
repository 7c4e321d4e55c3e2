-- The analytics schema the ClickHouse sink fills: one table per topic plus hourly and daily rollups.
--
-- ${name:default} values come from the sink settings (ITS_SINK__TTL_*_DAYS); with
-- ITS_SINK__REPLICATED=true every *MergeTree engine becomes its Replicated twin.
-- Every sink table carries the Kafka coordinates of its source record (_partition, _offset) and a
-- deduplication window, so a batch re-inserted with the same insert_deduplication_token is dropped.
-- Raw tables are plain MergeTree on purpose: a duplicate would show up, not be merged away.
-- Rollup tables are fed by materialized views and have a window too: a deduplicated source block
-- is deduplicated in the views (deduplicate_blocks_in_dependent_materialized_views).

CREATE TABLE IF NOT EXISTS cameras
(
    camera_id        String,
    name             String,
    latitude         Float64,
    longitude        Float64,
    address          String,
    intersection_id  LowCardinality(String),
    mode             LowCardinality(String),
    source           String,
    fps              Float32,
    timezone         LowCardinality(String),
    labels           Map(String, String),
    lane_ids         Array(String),
    lane_speed_limits_kmh Array(Float32),
    registered_at    DateTime64(3, 'UTC'),
    _partition       UInt16,
    _offset          Int64
)
ENGINE = ReplacingMergeTree(_offset)
ORDER BY camera_id
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per frame: the boxes stay parallel arrays (ARRAY JOIN them); ~10x fewer rows than per box.
CREATE TABLE IF NOT EXISTS detections
(
    camera_id      LowCardinality(String),
    capture_ts     DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    frame_seq      UInt64 CODEC(Delta, ZSTD(1)),
    processed_ts   DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    width          UInt16,
    height         UInt16,
    model_name     LowCardinality(String),
    model_version  LowCardinality(String),
    source         LowCardinality(String),
    objects        UInt16,
    class_ids      Array(UInt8) CODEC(ZSTD(1)),
    scores         Array(Float32) CODEC(ZSTD(1)),
    boxes          Array(Float32) CODEC(ZSTD(1)),
    track_ids      Array(Int64) CODEC(ZSTD(1)),
    inference_ms   Float32,
    _partition     UInt16,
    _offset        Int64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(capture_ts)
ORDER BY (camera_id, capture_ts, frame_seq)
TTL toDateTime(capture_ts) + INTERVAL ${ttl_detections_days:7} DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS events
(
    event_id       String,
    camera_id      LowCardinality(String),
    event_type     LowCardinality(String),
    severity       LowCardinality(String),
    ts             DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    end_ts         Nullable(DateTime64(3, 'UTC')),
    track_id       Nullable(Int64),
    class_id       Nullable(UInt8),
    lane_id        LowCardinality(String),
    line_id        LowCardinality(String),
    direction      LowCardinality(String),
    confidence     Float32,
    speed_kmh      Nullable(Float32),
    measurements   Map(LowCardinality(String), Float64),
    signal_phase   LowCardinality(String),
    model_version  LowCardinality(String),
    attributes     Map(LowCardinality(String), String),
    evidence_frame_seq Nullable(UInt64),
    evidence_ref   String,
    _partition     UInt16,
    _offset        Int64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (event_type, camera_id, ts)
TTL toDateTime(ts) + INTERVAL ${ttl_events_days:365} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Every revision of an alert is a row; the latest revision per alert_id is argMax(..., revision).
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id           String,
    incident_id        String,
    camera_id          LowCardinality(String),
    alert_type         LowCardinality(String),
    severity           LowCardinality(String),
    status             LowCardinality(String),
    revision           UInt32,
    count              UInt32,
    escalation_level   UInt8,
    first_ts           DateTime64(3, 'UTC'),
    last_ts            DateTime64(3, 'UTC'),
    title              String,
    description        String,
    suggested_action   String,
    event_ids          Array(String),
    latitude           Nullable(Float64),
    longitude          Nullable(Float64),
    acknowledged_by    LowCardinality(String),
    acknowledged_ts    Nullable(DateTime64(3, 'UTC')),
    _partition         UInt16,
    _offset            Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(first_ts)
ORDER BY (camera_id, incident_id, revision)
TTL toDateTime(first_ts) + INTERVAL ${ttl_events_days:365} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS traffic_stats
(
    stats_id           String,
    camera_id          LowCardinality(String),
    lane_id            LowCardinality(String),
    window_start       DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_end         DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_s           UInt32,
    volume             UInt32,
    volume_by_class    Map(LowCardinality(String), UInt32),
    mean_speed_kmh     Nullable(Float32),
    p85_speed_kmh      Nullable(Float32),
    occupancy          Float32,
    density_veh_per_km Nullable(Float32),
    queue_length_m     Nullable(Float32),
    queue_vehicles     UInt32,
    level_of_service   LowCardinality(String),
    late_records       UInt32,
    _partition         UInt16,
    _offset            Int64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (camera_id, lane_id, window_start)
TTL toDateTime(window_start) + INTERVAL ${ttl_aggregates_days:1825} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS camera_health
(
    camera_id           LowCardinality(String),
    ts                  DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    mode                LowCardinality(String),
    status              LowCardinality(String),
    producer_id         LowCardinality(String),
    fps_in              Float32,
    fps_out             Float32,
    frames_dropped      UInt64,
    frames_skipped_blur UInt64,
    decode_errors       UInt64,
    reconnects          UInt32,
    queue_depth         UInt32,
    spool_bytes         UInt64,
    uptime_s            Float64,
    last_error          String,
    _partition          UInt16,
    _offset             Int64 CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (camera_id, ts)
TTL toDateTime(ts) + INTERVAL ${ttl_health_days:90} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Model registry: every (model, version) the detections carry, with first/last sight and volume;
-- operators add a status or notes with a plain INSERT (the aggregate keeps the last one).
CREATE TABLE IF NOT EXISTS model_registry
(
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    first_seen    SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    frames        SimpleAggregateFunction(sum, UInt64),
    status        SimpleAggregateFunction(anyLast, LowCardinality(String)),
    notes         SimpleAggregateFunction(anyLast, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (model_name, model_version)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS model_registry_mv TO model_registry AS
SELECT model_name, model_version, min(capture_ts) AS first_seen, max(capture_ts) AS last_seen,
       count() AS frames, 'active' AS status, '' AS notes
FROM detections GROUP BY model_name, model_version;

-- Hourly detections per camera and model: the model A/B comparison reads this.
CREATE TABLE IF NOT EXISTS detections_hourly
(
    hour          DateTime('UTC'),
    camera_id     LowCardinality(String),
    model_name    LowCardinality(String),
    model_version LowCardinality(String),
    frames        SimpleAggregateFunction(sum, UInt64),
    objects       SimpleAggregateFunction(sum, UInt64),
    score         AggregateFunction(avg, Float64),
    inference_ms  AggregateFunction(quantiles(0.5, 0.95), Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (camera_id, model_name, model_version, hour)
TTL hour + INTERVAL ${ttl_hourly_days:730} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS detections_hourly_mv TO detections_hourly AS
SELECT toStartOfHour(capture_ts) AS hour, camera_id, model_name, model_version,
       count() AS frames, sum(objects) AS objects,
       avgState(toFloat64(arrayAvg(if(empty(scores), [toFloat32(0)], scores)))) AS score,
       quantilesState(0.5, 0.95)(inference_ms) AS inference_ms
FROM detections GROUP BY hour, camera_id, model_name, model_version;

-- Hourly events by type, class and direction, with speed percentiles.
CREATE TABLE IF NOT EXISTS events_hourly
(
    hour        DateTime('UTC'),
    camera_id   LowCardinality(String),
    event_type  LowCardinality(String),
    lane_id     LowCardinality(String),
    direction   LowCardinality(String),
    class_id    UInt8,
    events      SimpleAggregateFunction(sum, UInt64),
    speed_kmh   AggregateFunction(quantiles(0.5, 0.85, 0.95), Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (event_type, camera_id, lane_id, direction, class_id, hour)
TTL hour + INTERVAL ${ttl_hourly_days:730} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
SELECT toStartOfHour(ts) AS hour, camera_id, event_type, lane_id, direction,
       ifNull(class_id, 255) AS class_id, count() AS events,
       quantilesStateIf(0.5, 0.85, 0.95)(assumeNotNull(speed_kmh), isNotNull(speed_kmh)) AS speed_kmh
FROM events GROUP BY hour, camera_id, event_type, lane_id, direction, class_id;

-- Hourly and daily traffic per lane from the windowed stats.
CREATE TABLE IF NOT EXISTS traffic_hourly
(
    hour             DateTime('UTC'),
    camera_id        LowCardinality(String),
    lane_id          LowCardinality(String),
    windows          SimpleAggregateFunction(sum, UInt64),
    volume           SimpleAggregateFunction(sum, UInt64),
    mean_speed_kmh   AggregateFunction(avg, Float32),
    occupancy        AggregateFunction(avg, Float32),
    max_queue_m      SimpleAggregateFunction(max, Float32),
    los_f_windows    SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (camera_id, lane_id, hour)
TTL hour + INTERVAL ${ttl_hourly_days:730} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS traffic_hourly_mv TO traffic_hourly AS
SELECT toStartOfHour(window_start) AS hour, camera_id, lane_id, count() AS windows,
       sum(volume) AS volume, avgStateIf(assumeNotNull(mean_speed_kmh), isNotNull(mean_speed_kmh)) AS mean_speed_kmh,
       avgState(occupancy) AS occupancy, max(ifNull(queue_length_m, 0)) AS max_queue_m,
       countIf(level_of_service IN ('E', 'F')) AS los_f_windows
FROM traffic_stats GROUP BY hour, camera_id, lane_id;

CREATE TABLE IF NOT EXISTS traffic_daily
(
    day              Date,
    camera_id        LowCardinality(String),
    lane_id          LowCardinality(String),
    windows          SimpleAggregateFunction(sum, UInt64),
    volume           SimpleAggregateFunction(sum, UInt64),
    mean_speed_kmh   AggregateFunction(avg, Float32),
    occupancy        AggregateFunction(avg, Float32),
    max_queue_m      SimpleAggregateFunction(max, Float32),
    los_f_windows    SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (camera_id, lane_id, day)
TTL day + INTERVAL ${ttl_aggregates_days:1825} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS traffic_daily_mv TO traffic_daily AS
SELECT toDate(window_start) AS day, camera_id, lane_id, count() AS windows,
       sum(volume) AS volume, avgStateIf(assumeNotNull(mean_speed_kmh), isNotNull(mean_speed_kmh)) AS mean_speed_kmh,
       avgState(occupancy) AS occupancy, max(ifNull(queue_length_m, 0)) AS max_queue_m,
       countIf(level_of_service IN ('E', 'F')) AS los_f_windows
FROM traffic_stats GROUP BY day, camera_id, lane_id;
