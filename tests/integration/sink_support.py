"""Helpers for the ClickHouse sink tests: topics under a prefix, the sink as a real subprocess, `its sql`.

The sink always runs in its own process (its own embedded store, so SIGKILL is a real crash and the
pytest process's chdb engine is never involved).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from connectors.settings import DEFAULT_SINK_TOPICS
from infra.topics import ensure_topics
from schemas import topics as t

ROOT = Path(__file__).resolve().parents[2]
ITS = str(Path(sys.executable).with_name("its"))


def create_topics(bootstrap: str, prefix: str, partitions: int | None = None) -> None:
    """The catalogue's sink topics and the DLQ, named ``prefix + name``."""
    specs = [
        dataclasses.replace(spec, name=prefix + spec.name, partitions=partitions or spec.partitions)
        for spec in t.CATALOGUE
        if spec.name in (*DEFAULT_SINK_TOPICS, t.DLQ)
    ]
    ensure_topics({"bootstrap.servers": bootstrap}, specs)


@dataclasses.dataclass
class SinkEnv:
    """Everything a sink subprocess needs: its store, the broker, the registry, its topics and group."""

    data_dir: Path
    bootstrap: str
    registry: str
    prefix: str
    group: str = dataclasses.field(default_factory=lambda: f"sink-{uuid.uuid4().hex[:8]}")
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.data_dir / "clickhouse"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            **os.environ,
            "ITS_DATA_DIR": str(self.data_dir),
            "ITS_CLICKHOUSE_URL": f"chdb://{self.store}",
            "ITS_KAFKA_BOOTSTRAP": self.bootstrap,
            "ITS_SCHEMA_REGISTRY_URL": self.registry,
            "ITS_SINK__TOPIC_PREFIX": self.prefix,
            "ITS_SINK__DLQ_TOPIC": self.prefix + t.DLQ,
            "ITS_SINK__GROUP_ID": self.group,
            "ITS_SINK__METRICS_PORT": "0",
            "ITS_SINK__QUERY_PORT": "0",
            "ITS_LOG_FORMAT": "text",
            "ITS_LOG_LEVEL": self.extra.get("ITS_TEST_SINK_LOG_LEVEL")
            or os.environ.get("ITS_TEST_SINK_LOG_LEVEL", "WARNING"),
            **self.extra,
            **overrides,
        }
        return env

    def start(self, *args: str, **overrides: str) -> subprocess.Popen[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / f"sink-{time.time_ns()}.log", "w")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(
            [ITS, "sink", "clickhouse", *args],
            cwd=ROOT,
            env=self.env(**overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_until_idle(self, idle_s: float = 1.5, timeout: float = 240, **overrides: str) -> dict[str, Any]:
        proc = self.start("--exit-when-idle", str(idle_s), **overrides)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            dump_and_kill(proc)
            raise
        assert rc == 0, f"sink exited {rc}: {self.last_log()}"
        return json.loads(self.last_log().strip().splitlines()[-1])

    def last_log(self) -> str:
        logs = sorted(self.data_dir.glob("sink-*.log"))
        return logs[-1].read_text() if logs else ""

    def sql(self, query: str, database: str | None = None, timeout: float = 120) -> list[dict[str, Any]]:
        """``its sql -f json`` against this store (directly, or through the running sink's endpoint)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [ITS, "sql", "-f", "json", query] + (["-d", database] if database else [])
        done = subprocess.run(args, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"its sql failed: {done.stderr}\n{query}"
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def its(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ITS, *args], cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout
        )


def wait_for_endpoint(env: SinkEnv, proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    """Wait until the running sink advertises its query endpoint next to the store."""
    path = env.store / "its-endpoint.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sink exited early: {env.last_log()}"
        if path.exists():
            info = json.loads(path.read_text())
            if info.get("pid") == proc.pid:
                return info
        time.sleep(0.2)
    raise AssertionError(f"no endpoint file after {timeout} s: {env.last_log()}")


def wait_for_log(env: SinkEnv, proc: subprocess.Popen[str], text: str, timeout: float = 60) -> None:
    """Wait until the sink's current log contains ``text`` (needs ITS_LOG_LEVEL=INFO)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"sink exited early: {env.last_log()}"
        if text in env.last_log():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the sink log after {timeout} s: {env.last_log()[-2000:]}")


def dump_and_kill(proc: subprocess.Popen[str]) -> None:
    """A stuck sink: its thread stacks into its log (SIGUSR1), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        proc.kill()
        proc.wait()


def stop(proc: subprocess.Popen[str], timeout: float = 60) -> int:
    """SIGTERM and wait: the sink flushes and leaves cleanly."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# One row of counts and exact (integer) sums over every table the sink fills, rollups included.
FINGERPRINT = """
SELECT
  (SELECT count() FROM cameras FINAL) AS cameras,
  (SELECT count() FROM detections) AS detections,
  (SELECT uniqExact(camera_id, frame_seq) FROM detections) AS detections_unique,
  (SELECT sum(objects) FROM detections) AS objects,
  (SELECT sum(toInt64(inference_ms * 100)) FROM detections) AS inference_cs,
  (SELECT sum(_offset) FROM detections) AS detections_offsets,
  (SELECT count() FROM events) AS events,
  (SELECT uniqExact(event_id) FROM events) AS events_unique,
  (SELECT sum(toInt64(ifNull(speed_kmh, 0) * 10)) FROM events) AS events_speed_dm,
  (SELECT count() FROM alerts) AS alerts,
  (SELECT uniqExact(alert_id) FROM alerts) AS alerts_unique,
  (SELECT count() FROM traffic_stats) AS traffic_stats,
  (SELECT uniqExact(stats_id) FROM traffic_stats) AS traffic_stats_unique,
  (SELECT sum(volume) FROM traffic_stats) AS volume,
  (SELECT count() FROM camera_health) AS camera_health,
  (SELECT sum(frames_dropped) FROM camera_health) AS frames_dropped,
  (SELECT count() FROM dead_letters) AS dead_letters,
  (SELECT sum(frames) FROM detections_hourly) AS hourly_frames,
  (SELECT sum(objects) FROM detections_hourly) AS hourly_objects,
  (SELECT sum(events) FROM events_hourly) AS hourly_events,
  (SELECT sum(volume) FROM traffic_hourly) AS hourly_volume,
  (SELECT sum(volume) FROM traffic_daily) AS daily_volume,
  (SELECT sum(frames) FROM model_registry) AS registry_frames
"""
