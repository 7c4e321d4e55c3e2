"""``its load run``: N simulated cameras at F fps of detections through analytics and the ClickHouse sink.

The pipeline runs as in production: ``its process analytics`` (one or more replicas in one consumer
group) and ``its sink clickhouse`` are separate processes, started the way the demo starts them;
the load generator (``producers.simulator.load.run_load``, no video decoding) runs in this process.
A warm-up (one frame per camera, until analytics committed them) is measured apart: a camera's first
record builds its engine. While the load runs, a sampler thread records every ``sample_s`` seconds:

* records produced (end offsets of ``its.detections.v1``) and committed per stage (consumer-group
  offsets: the analytics group commits inside its transactions, the sink commits after each insert);
* consumer lag per stage (last stable offset minus committed, over every topic the stage reads);
* RSS and CPU share of every process (``/proc``: the broker's JVM, analytics replicas, the sink,
  this process);
* the machine's load average (other users of the CPUs change every figure here).

Afterwards: end-to-end latency from ClickHouse (a detection's or an event's capture time to the time
the sink wrote the batch holding it), whether each stage's lag stayed bounded (slope of the lag over
the second half of the run), and for every stage below the offered rate its ceiling and a cProfile
of one replica run for a fixed time on the backlog it left.
"""

from __future__ import annotations

import contextlib
import os
import platform
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from infra.process import wait_for
from its.settings import Settings
from its.supervisor import Component, Supervisor
from schemas import topics as t

# What `its process analytics` subscribes to (alert acknowledgements: operators, none in a load test).
ANALYTICS_INPUTS = (t.DETECTIONS, t.CAMERAS, t.SIGNALS, t.ALERT_ACKS)
# A stage holds the offered rate when it consumed at least this share of it over the second half.
HOLD_SHARE = 0.95
# Lag is bounded when it grew by less than this share of the offered rate per second (second half).
BOUNDED_SHARE = 0.02
# Frames of the entry point (profiler, click/typer, the CLI, the service) and of imports.
_WRAPPER = re.compile(
    r"(/click/|/typer/|/its/cli/|its/service\.py|importlib|^<string>$|cProfile|/profile\.py)"
)
_WRAPPER_NAME = re.compile(r"^<module>$|builtins\.(exec|__import__)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True)
class LoadOptions:
    cameras: int = 1000
    fps: float = 10.0
    duration_s: float = 300.0
    analytics_workers: int = 1
    sample_s: float = 5.0
    drain_s: float = 60.0  # longest wait for the stages to catch up after the load stops
    profile_s: float = 20.0  # cProfile run of a stage below the offered rate (0: no profile)
    warmup_s: float = 900.0  # longest wait for analytics to start every camera before the load (0: none)
    scenario: str = "city"
    seed: int = 0
    fresh_broker: bool = False  # a private broker + registry on free ports in the work directory
    keep_data: bool = False  # keep the work directory (ClickHouse store, logs, profiles)
    work_dir: Path | None = None  # default: a new temporary directory


@dataclass(slots=True)
class Sample:
    """One sampler reading; counts are since the load started."""

    t: float
    produced: int  # detection records written to the topic
    committed: dict[str, int]  # stage -> detection records committed
    lag: dict[str, int]  # stage -> records behind over every input topic
    rss_mb: dict[str, float]
    cpu: dict[str, float]  # process -> cores used since the previous sample (1.0 = one core busy)
    load1: float


# --- processes: /proc ---------------------------------------------------------------------------------


def proc_usage(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, RSS MiB) of a process from /proc; None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return cpu, int(fields[21]) * _PAGE / 2**20


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _its(*args: str) -> list[str]:
    """``its ARGS`` with this interpreter (works without the venv's bin on PATH)."""
    return [sys.executable, "-c", "from its.cli import main; main()", *args]


def _profiled(out: Path, *args: str) -> list[str]:
    """``its ARGS`` under cProfile. SIGUSR2 writes the stats so far to ``out`` at once: a stage
    stopped by SIGTERM finishes its batch first, which can take longer than anyone waits."""
    code = f"""
import cProfile, os, signal, sys
from its.cli import main
sys.argv = ["its", *{list(args)!r}]
prof = cProfile.Profile()
def dump(*_):
    prof.disable()
    prof.dump_stats({str(out) + ".tmp"!r})
    os.replace({str(out) + ".tmp"!r}, {str(out)!r})
    prof.enable()
signal.signal(signal.SIGUSR2, dump)
prof.enable()
try:
    main()
except SystemExit:
    pass
finally:
    prof.disable()
"""
    return [sys.executable, "-c", code]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A component's /metrics as {(sample name, sorted labels): value}; empty when unreachable."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def msum(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lab), v in metrics.items()
        if n == name and all(dict(lab).get(k) == val for k, val in labels.items())
    )


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


# --- Kafka offsets ------------------------------------------------------------------------------------


class Offsets:
    """End offsets of topics and committed offsets of consumer groups, through one admin client."""

    def __init__(self, settings: Settings, stages: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self.admin = AdminClient(settings.kafka_config())
        self.stages = stages  # stage -> (group, topics it reads)
        topics = {tp for _, tps in stages.values() for tp in tps}
        meta = self.admin.list_topics(timeout=10).topics
        self.partitions = [
            TopicPartition(tp, p) for tp in sorted(topics) if tp in meta for p in sorted(meta[tp].partitions)
        ]

    def ends(self, attempts: int = 20) -> dict[tuple[str, int], int]:
        """Last stable offset per partition (what a read_committed consumer can reach)."""
        for attempt in range(attempts):
            futs = self.admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in self.partitions},
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=10,
            )
            try:
                return {(k.topic, k.partition): f.result().offset for k, f in futs.items()}
            except KafkaException:
                # Topics created a moment ago answer NOT_LEADER until their leaders are elected.
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def committed(self, group: str, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
        """The group's committed offset per partition; absent where it committed nothing."""
        req = [tp for tp in self.partitions if tp.topic in topics]
        fut = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, req)])
        res = next(iter(fut.values())).result(timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0}

    def preset(self, settings: Settings, group: str, topics: tuple[str, ...]) -> None:
        """Commit ``group`` at the current ends of ``topics``: a fresh group starts at 'now', not at
        whatever earlier runs left in the topics."""
        ends = self.ends()
        consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
        try:
            consumer.commit(
                offsets=[TopicPartition(tp, p, off) for (tp, p), off in ends.items() if tp in topics],
                asynchronous=False,
            )
        finally:
            consumer.close()


# Topics the processors write in Kafka transactions: each transaction leaves a commit marker, which
# takes an offset but is never delivered, so a consumer that read everything commits one short of
# the partition's end. (Detections here come from the load generator: no transactions.)
TRANSACTIONAL_TOPICS = frozenset({t.EVENTS, t.ALERTS, t.TRAFFIC_STATS})


def lag_of(
    ends: dict[tuple[str, int], int], committed: dict[tuple[str, int], int], topics: tuple[str, ...]
) -> int:
    """Records behind over ``topics``. A partition without a commit counts from offset 0 (the sink,
    on a fresh store, reads from the beginning); a trailing commit marker is not counted."""
    lag = 0
    for key, end in ends.items():
        if key[0] in topics:
            behind = max(end - committed.get(key, 0), 0)
            lag += max(behind - 1, 0) if key[0] in TRANSACTIONAL_TOPICS else behind
    return lag


def detections_done(
    ends: dict[tuple[str, int], int], committed: dict[tuple[str, int], int], start: dict[tuple[str, int], int]
) -> int:
    """Detection records committed since ``start`` (per partition, never below the start)."""
    done = 0
    for key, end in ends.items():
        if key[0] == t.DETECTIONS:
            s = start.get(key, 0)
            done += max(min(committed.get(key, 0), end), s) - s
    return done


# --- analysis: pure functions on samples ----------------------------------------------------------------


def slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (per second); 0 with fewer than 2 points."""
    if len(ts) < 2 or max(ts) - min(ts) <= 0:
        return 0.0
    return float(np.polyfit(np.asarray(ts, float), np.asarray(ys, float), 1)[0])


def rate_between(samples: list[Sample], t0: float, t1: float, value: Callable[[Sample], float]) -> float:
    """(value at t1 - value at t0) / (t1 - t0), using the samples nearest to t0 and t1."""
    if not samples:
        return 0.0
    times = np.array([s.t for s in samples])
    a = samples[int(np.abs(times - t0).argmin())]
    b = samples[int(np.abs(times - t1).argmin())]
    return (value(b) - value(a)) / (b.t - a.t) if b.t > a.t else 0.0


def stage_verdict(samples: list[Sample], stage: str, duration_s: float, offered: float) -> dict[str, Any]:
    """Sustained rate, lag trend and whether the stage holds the offered rate (second half of the load)."""
    load = [s for s in samples if s.t <= duration_s + 1e-6]
    half = [s for s in load if s.t >= duration_s / 2]
    t_mid = half[0].t if half else 0.0
    t_end = load[-1].t if load else 0.0
    rate_half = rate_between(load, t_mid, t_end, lambda s: s.committed[stage])
    produced_half = rate_between(load, t_mid, t_end, lambda s: s.produced)
    rate_all = rate_between(load, 0.0, t_end, lambda s: s.committed[stage])
    lag_slope = slope([s.t for s in half], [s.lag[stage] for s in half])
    bounded = lag_slope <= BOUNDED_SHARE * max(offered, 1.0)
    holds = bounded and rate_half >= HOLD_SHARE * min(offered, produced_half or offered)
    first = next((s.t for s in samples if s.committed[stage] > 0), None)
    return {
        "first_commit_s": first,  # seconds from the load's start to the stage's first committed record
        "records_per_s": round(rate_all, 1),
        "records_per_s_second_half": round(rate_half, 1),
        "produced_per_s_second_half": round(produced_half, 1),
        "lag_slope_per_s": round(lag_slope, 1),
        "lag_max": max((s.lag[stage] for s in samples), default=0),
        "lag_end_of_load": load[-1].lag[stage] if load else 0,
        "lag_final": samples[-1].lag[stage] if samples else 0,
        "bounded": bool(bounded),
        "holds_offered_rate": bool(holds),
        "ceiling_records_per_s": None if holds else round(rate_half, 1),
    }


def top_functions(stats_file: Path, n: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Top ``n`` entries of a cProfile dump by cumulative time and by own time.

    The entry point's wrappers (exec, click/typer, the CLI command, the service) hold the whole run
    and imports are start-up: both are left out of the cumulative list.
    """
    st = pstats.Stats(str(stats_file))
    rows, cum = [], []
    for (file, line, name), (_cc, calls, own, cum_s, _callers) in st.stats.items():  # type: ignore[attr-defined]
        where = f"{'/'.join(Path(file).parts[-2:])}:{line}" if line else file
        row = {
            "function": f"{where}({name})",
            "calls": calls,
            "own_s": round(own, 3),
            "cum_s": round(cum_s, 3),
        }
        rows.append(row)
        if not _WRAPPER.search(file) and not _WRAPPER_NAME.search(name):
            cum.append(row)
    total = max((r["cum_s"] for r in rows), default=0.0)
    cum.sort(key=lambda r: -r["cum_s"])
    own = sorted(rows, key=lambda r: -r["own_s"])
    return {"total_s": round(total, 3), "cumulative": cum[:n], "own": own[:n]}  # type: ignore[dict-item]


# --- the run ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """State of one load run: settings, names, ports, processes, samples."""

    settings: Settings
    opts: LoadOptions
    work: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    samples: list[Sample] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    sup: Supervisor | None = None
    load_start_ms: int = 0  # wall-clock time the load started (capture times count from here)

    @property
    def prefix(self) -> str:
        return f"load{self.run_id}"

    @property
    def analytics_group(self) -> str:
        return f"its-analytics-{self.prefix}"

    @property
    def sink_group(self) -> str:
        return f"its-clickhouse-sink-{self.prefix}"

    @property
    def store(self) -> Path:
        return self.work / "clickhouse"

    def stages(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        return {
            "analytics": (self.analytics_group, ANALYTICS_INPUTS),
            "sink": (self.sink_group, tuple(self.settings.sink.topics)),
        }

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "ITS_DATA_DIR": str(s.data_path),
            "ITS_CACHE_DIR": str(s.cache_path),
            "ITS_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "ITS_SCHEMA_REGISTRY_URL": s.schema_registry_url,
            "ITS_CLICKHOUSE_URL": f"chdb://{self.store}",
            "ITS_LOG_FORMAT": "json",
            "ITS_LOG_LEVEL": os.environ.get("ITS_LOAD_COMPONENT_LOG_LEVEL", "INFO"),
            "ITS_ANALYTICS__GROUP_ID": self.analytics_group,
            "ITS_SINK__GROUP_ID": self.sink_group,
            "ITS_SINK__QUERY_PORT": "0",
        }

    def analytics_component(self, i: int, command: list[str] | None = None) -> Component:
        port = self.ports.setdefault(f"analytics-{i}", _free_port())
        args = ("process", "analytics", "--instance-id", f"{self.prefix}-{i}", "--metrics-port", str(port))
        return Component(f"analytics-{i}", command or _its(*args), max_restarts=0)

    def sink_component(self, command: list[str] | None = None) -> Component:
        port = self.ports.setdefault("sink", _free_port())
        return Component(
            "sink",
            command or _its("sink", "clickhouse"),
            {"ITS_SINK__METRICS_PORT": str(port)},
            max_restarts=0,
        )

    def pids(self) -> dict[str, int]:
        """Every process whose memory and CPU the run reports."""
        from infra.kafka.broker import LocalKafka
        from infra.schema_registry import runner as registry

        out = {"load generator (this process)": os.getpid()}
        with contextlib.suppress(Exception):
            pid = LocalKafka.from_settings(self.settings).pid()
            if pid:
                out["kafka broker (JVM)"] = pid
        with contextlib.suppress(Exception):
            pid = registry.status(self.settings).get("pid")
            if pid:
                out["schema registry"] = int(pid)
        if self.sup is not None:
            for name, c in self.sup.components.items():
                if c.process is not None and c.process.poll() is None:
                    out[name] = c.process.pid
        return out


class Sampler(threading.Thread):
    """Every ``interval`` seconds: offsets, lag, RSS and CPU of every process; ``on_sample`` per reading."""

    def __init__(self, run: Run, offsets: Offsets, start: dict[tuple[str, int], int], interval: float,
                 on_sample: Callable[[Sample], None] | None = None) -> None:  # fmt: skip
        super().__init__(name="load-sampler", daemon=True)
        self.run_, self.offsets, self.start_ends, self.interval = run, offsets, start, interval
        self.on_sample = on_sample
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()
        self._cpu: dict[int, tuple[float, float]] = {}

    def sample(self) -> Sample:
        now = time.monotonic()
        ends = self.offsets.ends()
        committed: dict[str, int] = {}
        lag: dict[str, int] = {}
        for stage, (group, topics) in self.run_.stages().items():
            try:
                got = self.offsets.committed(group, topics)
            except Exception:  # the group does not exist yet
                got = {}
            committed[stage] = detections_done(ends, got, self.start_ends)
            lag[stage] = lag_of(ends, got, topics)
        rss: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for name, pid in self.run_.pids().items():
            use = proc_usage(pid)
            if use is None:
                continue
            rss[name] = round(use[1], 1)
            prev = self._cpu.get(pid)
            if prev is not None and now > prev[1]:
                cpu[name] = round((use[0] - prev[0]) / (now - prev[1]), 2)
            self._cpu[pid] = (use[0], now)
        produced = sum(
            end - self.start_ends.get(key, 0) for key, end in ends.items() if key[0] == t.DETECTIONS
        )
        s = Sample(round(now - self.t0, 2), produced, committed, lag, rss, cpu, round(os.getloadavg()[0], 2))
        self.run_.samples.append(s)
        if self.on_sample is not None:
            self.on_sample(s)
        return s

    def run(self) -> None:
        next_at = self.t0
        while not self.stop_event.is_set():
            with contextlib.suppress(Exception):  # a slow broker answer skips one reading, no more
                self.sample()
            next_at += self.interval
            self.stop_event.wait(max(next_at - time.monotonic(), 0.05))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)


def latency(run: Run) -> dict[str, Any]:
    """Capture time -> the sink's batch holding the row (``sink_offsets.committed_at``), p50/p99 per
    kind of record, overall and over the second half of the load; queried through the sink's
    read-only endpoint (the sink owns the embedded store)."""
    import clickhouse_connect

    from connectors.clickhouse.endpoint import read_endpoint_file

    info = read_endpoint_file(run.store)
    if not info:
        raise RuntimeError(f"the sink advertises no query endpoint in {run.store}")
    host, port = info["url"].split("//", 1)[1].rstrip("/").rsplit(":", 1)
    cfg = run.settings.sink
    client = clickhouse_connect.get_client(
        host=host, port=int(port), username=cfg.query_user, password=cfg.query_password
    )
    out: dict[str, Any] = {}
    try:
        mid_ms = int(run.load_start_ms + run.opts.duration_s * 500)
        for kind, table, ts, topic in (
            ("detections (load -> sink)", "detections", "capture_ts", t.DETECTIONS),
            ("events (load -> analytics -> sink)", "events", "ts", t.EVENTS),
        ):
            lat = f"dateDiff('millisecond', r.{ts}, s.committed_at)"
            sql = f"""
                SELECT count() AS n,
                       quantile(0.5)({lat}) AS p50, quantile(0.99)({lat}) AS p99,
                       countIf(r.{ts} >= fromUnixTimestamp64Milli(toInt64({mid_ms}), 'UTC')) AS n2,
                       quantileIf(0.5)({lat}, r.{ts} >= fromUnixTimestamp64Milli(toInt64({mid_ms}), 'UTC')),
                       quantileIf(0.99)({lat}, r.{ts} >= fromUnixTimestamp64Milli(toInt64({mid_ms}), 'UTC'))
                FROM {table} AS r
                ASOF INNER JOIN
                (
                    SELECT toUInt32(partition) AS partition, max_offset, committed_at FROM sink_offsets
                    WHERE topic = '{topic}' AND consumer_group = '{run.sink_group}'
                ) AS s ON toUInt32(r._partition) = s.partition AND r._offset <= s.max_offset
                WHERE startsWith(r.camera_id, '{run.prefix}-')"""
            n, p50, p99, n2, p50b, p99b = client.query(sql).result_rows[0]

            def num(v: Any) -> float | None:
                return None if v is None or v != v else round(float(v))  # NaN: no rows

            out[kind] = {
                "rows": int(n),
                "p50_ms": num(p50) if n else None,
                "p99_ms": num(p99) if n else None,
                "rows_second_half": int(n2),
                "p50_ms_second_half": num(p50b) if n2 else None,
                "p99_ms_second_half": num(p99b) if n2 else None,
            }
        rows = client.query(
            f"SELECT (SELECT count() FROM detections WHERE startsWith(camera_id, '{run.prefix}-')), "
            f"(SELECT count() FROM events WHERE startsWith(camera_id, '{run.prefix}-')), "
            f"(SELECT count() FROM traffic_stats WHERE startsWith(camera_id, '{run.prefix}-'))"
        ).result_rows[0]
        out["clickhouse_rows"] = dict(
            zip(("detections", "events", "traffic_stats"), map(int, rows), strict=True)
        )
    finally:
        client.close()
    return out


def warm_transactions(settings: Settings) -> None:
    """Commit one empty transaction: a fresh broker creates its transaction-state topic on first use
    (50 partitions), which would otherwise stall the processors' first commits while the load runs."""
    producer = Producer(
        settings.kafka_config(**{"transactional.id": f"its-load-warmup-{uuid.uuid4().hex[:6]}"})
    )
    producer.init_transactions(120)
    producer.begin_transaction()
    producer.commit_transaction(60)
    producer.flush(10)


def _processes(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """RSS (max, last) and mean CPU per process over the run."""
    out: dict[str, dict[str, float]] = {}
    names = {n for s in samples for n in s.rss_mb}
    for name in sorted(names):
        rss = [s.rss_mb[name] for s in samples if name in s.rss_mb]
        cpu = [s.cpu[name] for s in samples if name in s.cpu]
        out[name] = {
            "rss_mb_max": max(rss),
            "rss_mb_last": rss[-1],
            "cpu_cores_mean": round(float(np.mean(cpu)), 2) if cpu else 0.0,
            "cpu_cores_max": max(cpu, default=0.0),
        }
    return out


def _stop(sup: Supervisor, names: list[str], timeout: float = 30.0) -> dict[str, int | None]:
    """SIGTERM the named components at once (each commits its open batch first), wait for each,
    SIGKILL after ``timeout``."""
    running = [sup.components[n] for n in names if n in sup.components and sup.components[n].process]
    for c in running:
        if c.process is not None and c.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.process.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    deadline = time.monotonic() + timeout
    for c in running:
        assert c.process is not None
        try:
            c.process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            c.process.kill()
            c.process.wait(10)
        c.exit_code = codes[c.name] = c.process.returncode
    return codes


def profile_stage(run: Run, offsets: Offsets, stage: str, say: Callable[[str], None]) -> dict[str, Any]:
    """One replica of ``stage`` under cProfile for ``profile_s`` seconds on the backlog the run left
    (the run's own replicas are stopped by then); its rate and the top functions."""
    assert run.sup is not None
    out = run.work / f"{stage}.prof"
    if stage == "analytics":
        port = run.ports.setdefault("profile-analytics", _free_port())
        args = ("process", "analytics", "--instance-id", f"{run.prefix}-profile", "--metrics-port", str(port))
        comp = Component("profile-analytics", _profiled(out, *args), max_restarts=0)
    else:
        port = run.ports.setdefault("profile-sink", _free_port())
        comp = Component(
            "profile-sink",
            _profiled(out, "sink", "clickhouse"),
            {"ITS_SINK__METRICS_PORT": str(port)},
            max_restarts=0,
        )
    group, topics = run.stages()[stage]
    run.sup.start(comp)

    def working() -> bool:
        if not _healthy(port):
            return False
        if stage == "analytics":
            return msum(scrape(port), "its_stream_assigned_partitions") > 0
        return True

    ready = wait_for(working, timeout=120, step=0.5)
    # The window opens at the stage's first commit (start-up work, such as the sink's redo of its
    # last batches, is in the profile but not in the rate), or after 90 s without one.
    start = offsets.committed(group, topics)
    moving = wait_for(lambda: offsets.committed(group, topics) != start, timeout=90, step=1.0)
    ends0 = offsets.ends()
    before = offsets.committed(group, topics)
    pid = comp.process.pid if comp.process else 0
    use0 = proc_usage(pid)
    t0 = time.monotonic()
    time.sleep(run.opts.profile_s)
    ends1 = offsets.ends()
    after = offsets.committed(group, topics)
    use1 = proc_usage(pid)
    seconds = time.monotonic() - t0
    out.unlink(missing_ok=True)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR2)
    wait_for(out.is_file, timeout=30, step=0.2)  # written aside, then renamed: whole when it appears
    _stop(run.sup, [comp.name], timeout=30)
    done = detections_done(ends1, after, before)
    result: dict[str, Any] = {
        "ready": ready,
        "committed_before_window": moving,
        "seconds": round(seconds, 1),
        "records": done,
        "records_per_s_under_profiler": round(done / seconds, 1) if seconds > 0 else 0.0,
        # CPU the profiled process got (1.0 = a whole core): below 1, other processes had the rest.
        "cpu_cores": round((use1[0] - use0[0]) / seconds, 2) if use0 and use1 and seconds > 0 else None,
        "backlog_before": lag_of(ends0, before, topics),
        "backlog_after": lag_of(ends1, after, topics),
        "stats_file": str(out) if run.opts.keep_data else None,
    }
    if out.is_file():
        result.update(top_functions(out))
    else:
        result["error"] = f"no profile written (exit {comp.exit_code}; log {comp.log_path})"
    say(f"profiled {stage} for {seconds:.0f} s: {result['records_per_s_under_profiler']:,.0f} records/s")
    return result


def run_loadtest(settings: Settings, opts: LoadOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole load test; the figures as a dict (printed as JSON by the CLI)."""
    from infra.topics import ensure_topics
    from its.stack import Stack
    from producers.simulator.load import run_load

    work = (opts.work_dir or Path(tempfile.mkdtemp(prefix="its-load-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if opts.fresh_broker:
        # A private broker and registry: no earlier data for the sink to replay, no other user.
        settings = settings.model_copy(
            update={
                "data_dir": work / "data",
                "kafka_bootstrap": f"127.0.0.1:{_free_port()}",
                "kafka_controller_port": _free_port(),
                "schema_registry_url": f"http://127.0.0.1:{_free_port()}",
            }
        )
    run = Run(settings, opts, work)
    stack = Stack(settings)
    offered = opts.cameras * opts.fps
    result: dict[str, Any] = {
        "config": {
            "cameras": opts.cameras,
            "fps": opts.fps,
            "duration_s": opts.duration_s,
            "offered_records_per_s": offered,
            "analytics_workers": opts.analytics_workers,
            "sample_s": opts.sample_s,
            "warmup_s": opts.warmup_s,
            "scenario": opts.scenario,
            "fresh_broker": opts.fresh_broker,
            "run_id": run.run_id,
            "kafka": settings.kafka_bootstrap,
        },
        "machine": machine(),
    }
    t_begin = time.monotonic()
    phases: dict[str, float] = {}
    result["phases_s"] = phases
    last = [t_begin]

    def mark(name: str) -> None:
        """Seconds spent in each phase (start-up and drain cost, next to the load itself)."""
        now = time.monotonic()
        phases[name] = round(now - last[0], 1)
        last[0] = now

    sampler: Sampler | None = None
    migrate: subprocess.Popen[str] | None = None
    failed = True
    try:
        stack.up()
        mark("stack")
        # The store's migrations run beside the Kafka preparations (another process: chdb takes seconds
        # to load); the sink, which owns the store afterwards, starts once they are done.
        migrate = subprocess.Popen(
            _its("db", "migrate", "--dsn", f"chdb://{run.store}"), env=run.env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        ensure_topics(settings.kafka_config())
        say(
            f"Kafka at {settings.kafka_bootstrap}, registry at {settings.schema_registry_url}, "
            f"work dir {work}"
        )
        offsets = Offsets(settings, run.stages())

        def registered() -> int:
            return sum(end for (tp, _), end in offsets.ends().items() if tp == t.CAMERAS)

        # Registrations first: the analytics replicas read them (compacted topic) when they get
        # partitions. The generator's flush gives up after 30 s on a busy machine, so wait until every
        # registration is in the topic (and send them again if some never arrived).
        for _attempt in range(3):
            before = registered()
            run_load(
                settings, opts.cameras, opts.fps, 0.0, opts.scenario, seed=opts.seed, template_s=1.0,
                register=True, camera_prefix=run.prefix,
            )  # fmt: skip
            if wait_for(lambda b=before: registered() >= b + opts.cameras, timeout=60, step=0.5):
                break
        else:
            raise RuntimeError(f"the {opts.cameras} camera registrations did not reach {t.CAMERAS}")
        mark("register cameras")
        warm_transactions(settings)
        mark("warm transactions")
        offsets.preset(settings, run.analytics_group, ANALYTICS_INPUTS)
        run.sup = Supervisor(work / "logs", base_env=run.env())
        workers = [run.analytics_component(i) for i in range(max(1, opts.analytics_workers))]
        for c in workers:
            run.sup.start(c)
        try:
            out, _ = migrate.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            migrate.kill()
            out, _ = migrate.communicate()
        if migrate.returncode != 0:
            raise RuntimeError(f"its db migrate failed ({migrate.returncode}):\n{out}")
        mark("migrate (after the analytics start)")
        run.sup.start(run.sink_component())
        n_inputs = sum(1 for tp in offsets.partitions if tp.topic in ANALYTICS_INPUTS)

        def ready() -> bool:
            if not all(_healthy(p) for p in run.ports.values()):
                return False
            assigned = sum(msum(scrape(run.ports[c.name]), "its_stream_assigned_partitions") for c in workers)
            return assigned >= n_inputs

        ok_ready = wait_for(ready, timeout=180, step=0.5)
        mark("components ready")
        if not ok_ready:
            dead = {n: c.process.poll() for n, c in run.sup.components.items() if c.process}
            raise RuntimeError(
                f"components not ready within 180 s (exit codes {dead}; logs in {work / 'logs'})"
            )
        say(
            f"started {len(workers)} analytics replica(s) and the ClickHouse sink in "
            f"{time.monotonic() - t_begin:.0f} s; {opts.cameras} cameras x {opts.fps:g} fps for "
            f"{opts.duration_s:g} s ({offered:,.0f} records/s offered)"
        )

        if opts.warmup_s > 0:
            # One frame per camera first, measured apart: a camera's first record builds its engine
            # (scene, tracker), a one-off cost that would otherwise sit inside the measured minutes.
            base = offsets.ends()
            run_load(
                settings, opts.cameras, opts.fps, 1.0 / opts.fps, opts.scenario, seed=opts.seed,
                template_s=1.0, register=False, camera_prefix=run.prefix,
            )  # fmt: skip
            t_warm = time.monotonic()

            def warmed() -> bool:
                got = offsets.committed(run.analytics_group, ANALYTICS_INPUTS)
                return detections_done(offsets.ends(), got, base) >= opts.cameras

            done = wait_for(warmed, timeout=opts.warmup_s, step=1.0)
            result["warmup"] = {
                "records": opts.cameras,
                "analytics_s": round(time.monotonic() - t_warm, 1),
                "complete": done,
            }
            mark("warm-up")
            say(
                f"warm-up: analytics started {opts.cameras} cameras in {result['warmup']['analytics_s']} s"
                + ("" if done else f" (incomplete after {opts.warmup_s:g} s)")
            )

        prev: list[Sample] = []

        def progress(s: Sample) -> None:
            if prev:
                dt = max(s.t - prev[-1].t, 1e-6)
                rates = {k: (s.committed[k] - prev[-1].committed[k]) / dt for k in s.committed}
                say(
                    f"{s.t:6.0f} s  produced {(s.produced - prev[-1].produced) / dt:8,.0f}/s  "
                    + "  ".join(f"{k} {rates[k]:8,.0f}/s lag {s.lag[k]:>9,}" for k in s.committed)
                    + f"  rss MiB {sum(s.rss_mb.values()):,.0f}  load1 {s.load1}"
                )
            prev[:] = [s]

        start_ends = offsets.ends()
        sampler = Sampler(run, offsets, start_ends, opts.sample_s, on_sample=progress)
        sampler.start()
        report = run_load(
            settings, opts.cameras, opts.fps, opts.duration_s, opts.scenario, seed=opts.seed,
            register=False, camera_prefix=run.prefix,
        )  # fmt: skip
        t_load1 = time.monotonic() - sampler.t0
        wall = report.records / report.records_per_s if report.records_per_s else 0.0
        t_load0 = max(t_load1 - wall, 0.0)
        run.load_start_ms = int(time.time() * 1000 - (time.monotonic() - sampler.t0 - t_load0) * 1000)
        result["producer"] = report.as_dict()
        say(f"load done: {report.records:,} records at {report.records_per_s:,.0f}/s; draining")

        # Drain: every stage has committed every detection and its lag is gone (or the time is up).
        def drained() -> bool:
            if not run.samples or run.samples[-1].t <= t_load1:
                return False
            s = run.samples[-1]
            caught = all(s.committed[k] >= s.produced and s.lag[k] == 0 for k in s.committed)
            return caught

        mark("load")
        t_drain = time.monotonic()
        result["drained"] = wait_for(drained, timeout=opts.drain_s, step=0.5)
        result["drain_s"] = round(time.monotonic() - t_drain, 1)
        mark("drain")
        sampler.stop()
        sampler.sample()  # the final reading, after the drain

        # Samples on the load's clock: t = 0 when the first record was produced.
        for s in run.samples:
            s.t = round(s.t - t_load0, 2)
        duration = t_load1 - t_load0
        stages = {k: stage_verdict(run.samples, k, duration, offered) for k in run.stages()}
        final = run.samples[-1]
        for k, v in stages.items():
            v["consumed"] = final.committed[k]
        result["produced"] = final.produced
        metrics = {c.name: scrape(run.ports[c.name]) for c in workers}
        sink_m = scrape(run.ports["sink"])
        result["metrics"] = {
            "analytics_records_in": sum(msum(m, "its_stream_records_in_total") for m in metrics.values()),
            "analytics_out": {
                tp: sum(msum(m, "its_stream_records_out_total", topic=tp) for m in metrics.values())
                for tp in (t.EVENTS, t.ALERTS, t.TRAFFIC_STATS, t.ANALYTICS_STATE, t.DLQ)
            },
            "analytics_transactions": {
                o: sum(msum(m, "its_stream_transactions_total", outcome=o) for m in metrics.values())
                for o in ("committed", "aborted")
            },
            "sink_rows": {
                tb: msum(sink_m, "its_sink_rows_total", table=tb)
                for tb in ("cameras", "detections", "events", "alerts", "traffic_stats")
            },
        }
        try:
            result["latency"] = latency(run)
            mark("latency query")
        except Exception as exc:
            result["latency"] = {"error": repr(exc)}
        _stop(run.sup, [c.name for c in workers] + ["sink"])
        mark("stop components")
        result["exit_codes"] = {n: c.exit_code for n, c in run.sup.components.items()}
        result["processes"] = _processes(run.samples)
        below = [k for k, v in stages.items() if not v["holds_offered_rate"]]
        for k in below:
            if opts.profile_s <= 0:
                continue
            if stages[k]["lag_final"] <= 0:
                # Caught up after the load: nothing left to profile it on (it was slow, not saturated).
                stages[k]["profile"] = {"skipped": "no backlog left after the drain"}
                continue
            try:
                stages[k]["profile"] = profile_stage(run, offsets, k, say)
            except Exception as exc:
                stages[k]["profile"] = {"error": repr(exc)}
        result["stages"] = stages
        result["below_offered_rate"] = below
        result["lag_bounded"] = all(v["bounded"] for v in stages.values())
        result["timeline"] = [asdict(s) for s in run.samples]
        failed = False
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if migrate is not None and migrate.poll() is None:
            migrate.kill()
            migrate.wait(10)
        if run.sup is not None:
            run.sup.stop(timeout=30)
        mark("profile")
        stopped = stack.down()
        result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        result["elapsed_s"] = round(time.monotonic() - t_begin, 1)
        if stopped:
            say(f"stopped: {', '.join(stopped)}")
        if opts.keep_data or failed:
            result["work_dir"] = str(work)
        else:
            # The profiles are small and worth keeping beside the JSON; the store and logs are not.
            shutil.rmtree(work, ignore_errors=True)
            result["work_dir"] = None
    return result


def print_report(result: dict[str, Any], console: Any) -> None:
    """The figures as tables (rich console)."""
    from rich.table import Table

    cfg, m = result["config"], result["machine"]
    console.print(
        f"[bold]Load test[/]: {cfg['cameras']:,} cameras x {cfg['fps']:g} fps for {cfg['duration_s']:g} s = "
        f"{cfg['offered_records_per_s']:,.0f} records/s offered; "
        f"{cfg['analytics_workers']} analytics replica(s)"
    )
    console.print(
        f"machine: {m['cpus']} x {m['cpu']}, {m['memory_gib']} GiB; load average at start "
        f"{m['load_avg']}, at end {m.get('load_avg_end')}"
    )
    if "warmup" in result:
        w = result["warmup"]
        console.print(
            f"warm-up (not measured below): analytics started {w['records']:,} cameras (one frame each) in "
            f"{w['analytics_s']} s{'' if w['complete'] else ' [red](incomplete)[/]'}"
        )
    p = result.get("producer", {})
    tab = Table(title="sustained records/s per stage (detection records)", title_justify="left")
    for col in ("stage", "first commit s", "records/s", "2nd half /s", "lag max", "lag end of load",
                "lag final", "lag slope /s", "bounded", "holds", "ceiling /s"):  # fmt: skip
        tab.add_column(col, justify="left" if col == "stage" else "right")
    tab.add_row(
        "load generator",
        "",
        f"{p.get('records_per_s', 0):,.0f}",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        f"cpu {p.get('cpu_share_of_core')}",
    )
    for name, v in result.get("stages", {}).items():
        tab.add_row(
            name,
            "-" if v.get("first_commit_s") is None else f"{v['first_commit_s']:,.0f}",
            f"{v['records_per_s']:,.0f}",
            f"{v['records_per_s_second_half']:,.0f}",
            f"{v['lag_max']:,}",
            f"{v['lag_end_of_load']:,}",
            f"{v['lag_final']:,}",
            f"{v['lag_slope_per_s']:,.0f}",
            "yes" if v["bounded"] else "[red]no[/]",
            "yes" if v["holds_offered_rate"] else "[red]no[/]",
            "" if v["ceiling_records_per_s"] is None else f"{v['ceiling_records_per_s']:,.0f}",
        )
    console.print(tab)
    procs = Table(title="processes", title_justify="left")
    for col in ("process", "RSS max MiB", "RSS last MiB", "CPU cores mean", "CPU cores max"):
        procs.add_column(col, justify="left" if col == "process" else "right")
    for name, v in result.get("processes", {}).items():
        procs.add_row(name, f"{v['rss_mb_max']:,.0f}", f"{v['rss_mb_last']:,.0f}",
                      f"{v['cpu_cores_mean']:.2f}", f"{v['cpu_cores_max']:.2f}")  # fmt: skip
    console.print(procs)
    lat = result.get("latency", {})
    lt = Table(title="end-to-end latency: capture -> row in ClickHouse (ms)", title_justify="left")
    for col in ("records", "rows", "p50", "p99", "p50 2nd half", "p99 2nd half"):
        lt.add_column(col, justify="left" if col == "records" else "right")
    for kind, v in lat.items():
        if isinstance(v, dict) and "p50_ms" in v:
            lt.add_row(kind, f"{v['rows']:,}", *(str(v[k]) for k in (
                "p50_ms", "p99_ms", "p50_ms_second_half", "p99_ms_second_half")))  # fmt: skip
    console.print(lt)
    if "error" in lat:
        console.print(f"[red]latency query failed: {lat['error']}[/]")
    console.print(
        f"lag bounded in every stage: {result.get('lag_bounded')}; drained after the load: "
        f"{result.get('drained')} ({result.get('drain_s')} s)"
    )
    for name, v in result.get("stages", {}).items():
        prof = v.get("profile")
        if not prof:
            continue
        console.print(
            f"[bold]{name}[/] cannot hold {cfg['offered_records_per_s']:,.0f} records/s: ceiling "
            f"{v['ceiling_records_per_s']:,.0f} records/s with {cfg['analytics_workers']} replica(s) here; "
            f"one replica under cProfile did {prof.get('records_per_s_under_profiler', 0):,.0f} records/s"
        )
        for key, title in (("cumulative", "top 10 by cumulative time"), ("own", "top 10 by own time")):
            pt = Table(
                title=f"{name} profile, {title} ({prof.get('total_s')} s profiled)", title_justify="left"
            )
            for col in ("function", "calls", "own s", "cum s"):
                pt.add_column(col, justify="left" if col == "function" else "right")
            for r in prof.get(key, []):
                pt.add_row(r["function"], f"{r['calls']:,}", f"{r['own_s']:.2f}", f"{r['cum_s']:.2f}")
            console.print(pt)
