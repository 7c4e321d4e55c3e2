"""Settings of the ClickHouse and webhook sinks: a section of the one `its.settings.Settings` object.

Environment variables reach a field as `ITS_<SECTION>__<FIELD>`; YAML as `<section>: {<field>: ...}`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas import topics as t

# What the ClickHouse sink reads by default: every analytics topic (frames stay in Kafka).
# The audit trail too: its table is the append-only copy operators query (migration 0003).
DEFAULT_SINK_TOPICS = [t.CAMERAS, t.DETECTIONS, t.EVENTS, t.ALERTS, t.TRAFFIC_STATS, t.HEALTH, t.AUDIT]


class SinkSettings(BaseModel):
    """The exactly-once ClickHouse sink, its analytics schema and its read-only query endpoint."""

    # --- what to read -------------------------------------------------------------------------
    topics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SINK_TOPICS), description="Catalogue topics to sink"
    )
    topic_prefix: str = Field(
        "", description="Prefix of the real topic names (tenant or test isolation): PREFIX + catalogue name"
    )
    group_id: str = Field("its-clickhouse-sink", description="Kafka consumer group of the sink")
    instance_id: str | None = Field(
        None,
        description="Static group membership (group.instance.id): a restarted sink gets its partitions "
        "back at once, without a rebalance; unique per running sink",
    )
    database: str | None = Field(
        None, description="ClickHouse database of the analytics tables (default: the DSN's, else default)"
    )
    dlq_topic: str = Field(t.DLQ, description="Where undecodable records go, with their reason")

    # --- batching: one insert per table per batch --------------------------------------------
    batch_rows: int = Field(50_000, ge=1, description="Flush when this many records are buffered")
    batch_bytes: int = Field(64 * 1024 * 1024, ge=1, description="... or this many Kafka value bytes")
    batch_ms: int = Field(1_000, ge=1, description="... or when the oldest buffered record is this old")
    detections_sample: float = Field(
        1.0, gt=0.0, le=1.0, description="Share of detection frames kept (deterministic by camera+frame)"
    )

    # --- schema -------------------------------------------------------------------------------
    ttl_detections_days: int = Field(7, ge=1, description="Raw detections: the seed's hot tier")
    ttl_events_days: int = Field(365, ge=1, description="Events and alerts: one year")
    ttl_health_days: int = Field(90, ge=1, description="Camera heartbeats: real-time metrics, 90 days")
    ttl_hourly_days: int = Field(730, ge=1, description="Hourly rollups: two years")
    ttl_aggregates_days: int = Field(1825, ge=1, description="Traffic stats and daily rollups: five years")
    replicated: bool = Field(False, description="Replicated*MergeTree engines (a ClickHouse cluster)")
    replica_path: str = Field(
        "/clickhouse/tables/{shard}/{database}/{table}", description="ZooKeeper/Keeper path of replicas"
    )
    replica_name: str = Field("{replica}", description="Replica name (a server macro by default)")

    # --- observability and the query endpoint --------------------------------------------------
    metrics_port: int = Field(9104, ge=0, description="/metrics and /healthz (0 = any free port)")
    query_enabled: bool = Field(True, description="Serve read-only SQL for the embedded store it owns")
    query_host: str = Field("127.0.0.1", description="Bind address of the query endpoint")
    query_port: int = Field(8124, ge=0, description="Port of the query endpoint (0 = any free port)")
    query_user: str = Field("default", description="User the query endpoint accepts")
    query_password: str = Field("", description="Password it requires (empty = no password)")
    query_max_rows: int = Field(10_000_000, ge=1, description="max_result_rows for endpoint queries")

    # --- tests only -----------------------------------------------------------------------------
    crash_at: str | None = Field(
        None,
        description="TEST ONLY: os._exit at a point of a flush: after_intent, mid_insert, after_insert",
    )
    crash_after_batches: int = Field(1, ge=1, description="TEST ONLY: crash on this flush number")
