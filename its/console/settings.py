"""Settings of the operator console: a section of the one `its.settings.Settings` object.

Environment variables reach a field as `ITS_CONSOLE__<FIELD>`; YAML as `console: {<field>: ...}`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ConsoleSettings(BaseModel):
    """`its console`: where it listens, who may acknowledge, how much history it warms up with."""

    host: str = Field("127.0.0.1", description="Bind address of the web console")
    port: int = Field(8090, ge=0, description="Port of the web console (also /metrics and /healthz)")
    operator_token: str | None = Field(
        None,
        description="Bearer token that allows acknowledging alerts; unset = the console is read-only",
    )
    group_id: str = Field(
        "its-console",
        description="Consumer group name of the console (it reads every partition: a view, not a worker)",
    )
    warmup_s: float = Field(
        900.0, ge=0, description="On start, re-read alerts, acks, events and heartbeats this far back"
    )
    live_warmup_s: float = Field(30.0, ge=0, description="... and detections and keyframes this far back")
    degraded_after_s: float = Field(10.0, gt=0, description="A camera silent this long is DEGRADED")
    offline_after_s: float = Field(60.0, gt=0, description="... and this long OFFLINE")
    cameras: str = Field("", description="Regular expression of the camera ids shown (empty = all)")
    track_frames: int = Field(
        20, ge=1, description="Recent frames a tile's tracks are rebuilt from (when detections carry none)"
    )
    query_user: str | None = Field(None, description="ClickHouse query endpoint user (default: the sink's)")
    query_password: str | None = Field(None, description="... and password (default: the sink's)")
