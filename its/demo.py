"""``its demo``: the whole system on the embedded default, one command, nothing left behind.

1. Foundation check: broker + registry up, topics from the catalogue, ClickHouse migrations, one
   record of every contract produced and read back through the registry.
2. Pipeline: a real clip camera (``its edge run --mode cloud``) through ``its process inference``,
   plus N simulated cameras (``its simulate --scenario intersection``), through ``its process
   analytics`` into ``its sink clickhouse``, and ``its sink webhook`` POSTing every alert, signed,
   to a receiver inside the demo process: each its own process, supervised (restarted when it
   dies), with live progress (records per stage from the components' /metrics, lag per consumer
   group from Kafka's committed offsets).
3. Stop: sources first, processors and the sink drain, then stop in order (SIGTERM, SIGKILL after
   a timeout). Summary from ClickHouse through the sink's read-only query endpoint, an annotated
   keyframe image, three ``its sql`` queries to paste.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from infra.process import wait_for
from infra.topics import ensure_topics
from its.settings import Settings
from its.stack import Stack
from its.supervisor import Component, Supervisor
from schemas import examples
from schemas import topics as t
from schemas.serde import TopicSerde, key_bytes

CLIP_CAMERA_ID = "clip-intel-cars-01"
SIM_SCENARIO = "intersection"
SIM_CAMERA_0 = f"sim-{SIM_SCENARIO}-0000"  # the signalised junction: the keyframe's camera
# Tables the pipeline fills; the demo fails when one of them is empty at the end.
ANALYTICS_TABLES = (
    "cameras",
    "detections",
    "events",
    "alerts",
    "traffic_stats",
    "camera_health",
    "detections_hourly",
    "events_hourly",
    "traffic_hourly",
    "traffic_daily",
    "model_registry",
)
SOURCES = ("edge", "simulator")
PROCESSORS = ("inference", "analytics")
SINKS = ("webhook", "sink")  # stopped last, after the processors drained into them
STOP_ORDER = [*SOURCES, *PROCESSORS, *SINKS]
WEBHOOK_GROUP = "its-demo-webhook"
CLASS_SQL = (
    "transform(toUInt8(ifNull(class_id, 255)), [0, 1, 2, 3, 5, 7], "
    "['person', 'bicycle', 'car', 'motorcycle', 'bus', 'truck'], 'other')"
)


@dataclass(slots=True)
class RoundTrip:
    topic: str
    record: str
    partition: int
    offset: int
    schema_id: int
    size: int
    identical: bool


ROUND_TRIP_TOPIC = "_its-demo-contracts"


def round_trip_examples(settings: Settings) -> list[RoundTrip]:
    """Encode one example record of every topic's contract (registered under that topic's subject),
    send them through a scratch topic, read them back with read_committed and compare byte for byte.

    The scratch topic keeps the examples out of the pipeline's topics, where the processors and the
    sink would take an example camera or detection for a real one.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka_config())
    with contextlib.suppress(Exception):  # already there: fine
        admin.create_topics([NewTopic(ROUND_TRIP_TOPIC, 1, 1)])[ROUND_TRIP_TOPIC].result(30)
    serde = TopicSerde(settings.schema_registry_url)
    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
    sent: dict[str, tuple[bytes, object]] = {}
    placed: dict[int, str] = {}

    def delivered(topic: str):  # type: ignore[no-untyped-def]
        def report(err, msg) -> None:  # type: ignore[no-untyped-def]
            if err is None:
                placed[msg.offset()] = topic

        return report

    for topic, record in examples.example_records().items():
        value = serde.encode(topic, record)
        sent[topic] = (value, record)
        producer.produce(
            ROUND_TRIP_TOPIC,
            value=value,
            key=key_bytes(getattr(record, "camera_id", "demo")),
            headers={"topic": topic},
            on_delivery=delivered(topic),
        )
    if producer.flush(30) != 0 or len(placed) != len(sent):
        raise RuntimeError("not every demo record was acknowledged within 30 s")

    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"its-demo-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    consumer.assign([TopicPartition(ROUND_TRIP_TOPIC, 0, min(placed))])
    received: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(placed) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error() and msg.offset() in placed:
                received[placed[msg.offset()]] = msg
    finally:
        consumer.close()
    with contextlib.suppress(Exception):
        admin.delete_topics([ROUND_TRIP_TOPIC])[ROUND_TRIP_TOPIC].result(30)
    missing = sorted(set(placed.values()) - set(received))
    if missing:
        raise RuntimeError(f"could not read back {missing} within 30 s")
    results = []
    for topic, msg in sorted(received.items()):
        value, record = sent[topic]
        decoded = serde.deserializer(topic)(msg.value(), topic, msg.partition(), msg.offset())
        results.append(
            RoundTrip(
                topic,
                type(record).__name__,
                msg.partition(),
                msg.offset(),
                int.from_bytes(msg.value()[1:5], "big"),
                len(value),
                msg.value() == value and decoded == record,
            )
        )
    return results


# --- the integrator's end of the alert webhook ---------------------------------------------------------


@dataclass(slots=True)
class WebhookTally:
    """What the local receiver got: POSTs, distinct alert ids, statuses, bad signatures."""

    deliveries: int = 0
    bad_signatures: int = 0
    alert_ids: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class WebhookReceiver:
    """A tiny HTTP server in the demo process standing in for an integrator: checks each POST's
    HMAC signature the way a receiver should (``hmac.compare_digest``) and counts the alerts."""

    def __init__(self, secret: str) -> None:
        from connectors.webhook.sink import SIGNATURE_HEADER, sign

        self.secret = secret
        self.tally = WebhookTally()
        tally = self.tally

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server API names it
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                good = hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), sign(secret, body))
                with tally.lock:
                    if not good:
                        tally.bad_signatures += 1
                    else:
                        tally.deliveries += 1
                        alert = json.loads(body)
                        tally.alert_ids.add(str(alert.get("alert_id")))
                        tally.statuses[str(alert.get("status"))] += 1
                self.send_response(200 if good else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:  # the demo's screen is for the tables
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def summary(self) -> dict[str, Any]:
        with self.tally.lock:
            return {
                "url": self.url,
                "deliveries": self.tally.deliveries,
                "distinct_alerts": len(self.tally.alert_ids),
                "bad_signatures": self.tally.bad_signatures,
                "by_status": dict(sorted(self.tally.statuses.items())),
            }


# --- options and ports ---------------------------------------------------------------------------


@dataclass(slots=True)
class DemoOptions:
    duration_s: float = 120.0  # how long the sources run
    cameras: int = 8  # simulated cameras
    clip_fps: float = 4.0  # sampled frames/s of the real clip (CPU inference on 2 cores)
    sim_fps: float = 10.0
    seed: int = 7
    keep_running: bool = False  # leave the broker and registry up afterwards
    port_base: int = 9101  # edge, inference, analytics, sink, webhook, simulator = base .. base + 5
    artifacts: Path = Path("artifacts/demo")
    drain_s: float = 25.0  # longest wait for the processors and the sink to catch up
    real_camera: bool = True
    model: str | None = None  # default: <assets>/models/yolox_nano_coco_416.onnx

    def port(self, name: str) -> int:
        offsets = {"edge": 0, "inference": 1, "analytics": 2, "sink": 3, "webhook": 4, "simulator": 5}
        return self.port_base + offsets[name] if self.port_base else 0


# --- the clip camera -----------------------------------------------------------------------------


def clip_camera_yaml(width: int = 768, height: int = 432) -> str:
    """Scene of the Intel car-detection clip: a parking-lot aisle seen from above, cars move vertically."""
    mid = height // 2
    return f"""\
camera_id: {CLIP_CAMERA_ID}
name: "real clip: Intel car-detection sample (CC-BY 4.0), parking-lot aisle from above"
location: {{latitude: 37.3875, longitude: -121.9636, address: "demo clip", intersection_id: clip-lot}}
mode: cloud
source: intel_car-detection.mp4
fps: 4
labels: {{demo: "true", kind: real-video}}
scene:
  lanes:
    - {{lane_id: aisle, polygon: [[0, 0], [{width}, 0], [{width}, {height}], [0, {height}]],
       centerline: [[{width // 2}, 0], [{width // 2}, {height}]], speed_limit_kmh: 15, approach: n}}
  lines:
    - {{line_id: aisle-mid, points: [[0, {mid}], [{width}, {mid}]], in_direction: southbound,
       out_direction: northbound, lane_id: aisle}}
  zones:
    - {{zone_id: lot, kind: roadway, polygon: [[0, 0], [{width}, 0], [{width}, {height}], [0, {height}]]}}
  calibration: {{metres_per_pixel: 0.02}}
"""


def register_clip_camera(settings: Settings, path: Path) -> None:
    from producers.registry import CameraRegistry, load_camera_file

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(clip_camera_yaml())
    CameraRegistry(settings.kafka_config(), settings.schema_registry_url).register(load_camera_file(path))


# --- components -----------------------------------------------------------------------------------


def its_command(*args: str) -> list[str]:
    """``its ARGS`` with this interpreter (works without the venv's bin on PATH)."""
    return [sys.executable, "-c", "from its.cli import main; main()", *args]


def components(
    settings: Settings,
    opts: DemoOptions,
    clip: Path | None,
    model: Path,
    webhook: tuple[str, str] | None = None,
) -> list[Component]:
    """Every process of the pipeline, services first (sinks, analytics, inference), then the sources.

    ``webhook`` is (url, secret) of the receiver ``its sink webhook`` POSTs alerts to.
    """
    base = {"ITS_LOG_FORMAT": "json", "ITS_LOG_LEVEL": os.environ.get("ITS_DEMO_COMPONENT_LOG_LEVEL", "INFO")}
    comps = []
    if webhook is not None:
        url, secret = webhook
        comps.append(
            Component(
                "webhook",
                its_command(
                    "sink", "webhook", "--url", url, "--group-id", WEBHOOK_GROUP,
                    "--metrics-port", str(opts.port("webhook")),
                ),
                {**base, "ITS_WEBHOOK_SECRET": secret},  # not on the command line, where `ps` shows it
            )
        )  # fmt: skip
    comps += [
        Component(
            "sink",
            its_command("sink", "clickhouse"),
            {
                **base,
                "ITS_SINK__METRICS_PORT": str(opts.port("sink")),
                "ITS_SINK__QUERY_PORT": "0",
                "ITS_SINK__BATCH_MS": "1000",
            },
        ),
        Component(
            "analytics",
            its_command(
                "process", "analytics", "--instance-id", "demo", "--metrics-port", str(opts.port("analytics"))
            ),
            base,
        ),
    ]
    if clip is not None:
        comps.append(
            Component(
                "inference",
                its_command(
                    "process",
                    "inference",
                    "--model",
                    str(model),
                    "--max-batch",
                    "4",
                    "--max-wait-ms",
                    "50",
                    "--no-registry",
                    "--instance-id",
                    "demo",
                    "--metrics-port",
                    str(opts.port("inference")),
                ),
                {**base, "ITS_INFERENCE__INTRA_OP_THREADS": "1"},
            )
        )
        comps.append(
            Component(
                "edge",
                its_command(
                    "edge",
                    "run",
                    "--camera-id",
                    CLIP_CAMERA_ID,
                    "--source",
                    str(clip),
                    "--loop",
                    "--mode",
                    "cloud",
                    "--fps",
                    str(opts.clip_fps),
                    "--duration",
                    str(opts.duration_s),
                    "--metrics-port",
                    str(opts.port("edge")),
                ),
                {**base, "ITS_EDGE__HEALTH_INTERVAL_S": "5"},
                finite=True,
            )
        )
    comps.append(
        Component(
            "simulator",
            its_command(
                "simulate",
                "--scenario",
                SIM_SCENARIO,
                "--cameras",
                str(opts.cameras),
                "--seed",
                str(opts.seed),
                "--fps",
                str(opts.sim_fps),
                "--duration",
                str(opts.duration_s),
                "--metrics-port",
                str(opts.port("simulator")),
                "--no-ensure-topics",
            ),
            base,
            finite=True,
        )
    )
    return comps


# --- live progress ----------------------------------------------------------------------------------

GROUPS = {  # consumer group -> (stage, topics it reads whose lag matters)
    "its-inference": ("inference", [t.FRAMES]),
    "its-analytics": ("analytics", [t.DETECTIONS, t.SIGNALS, t.CAMERAS]),
    "its-clickhouse-sink": ("sink", [t.CAMERAS, t.DETECTIONS, t.EVENTS, t.ALERTS, t.TRAFFIC_STATS, t.HEALTH]),
    WEBHOOK_GROUP: ("webhook", [t.ALERTS]),
}


def scrape(port: int, timeout: float = 1.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A component's /metrics as {(sample name, sorted labels): value}; empty when unreachable."""
    from prometheus_client.parser import text_string_to_metric_families

    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def msum(metrics: dict, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lab), v in metrics.items()
        if n == name and all(dict(lab).get(k) == val for k, val in labels.items())
    )


class Progress:
    """Records per stage (components' /metrics) and lag per consumer group (Kafka offsets)."""

    def __init__(self, settings: Settings, opts: DemoOptions, sup: Supervisor) -> None:
        from confluent_kafka.admin import AdminClient

        self.settings, self.opts, self.sup = settings, opts, sup
        self.admin = AdminClient(settings.kafka_config())
        self.partitions: dict[str, int] = {}
        self.lag: dict[str, int | None] = {}
        self.counts: dict[str, float] = {}
        self.metrics: dict[str, dict] = {}
        self.started = time.monotonic()

    def _partitions(self) -> dict[str, int]:
        if not self.partitions:
            topics = {tp for _, tps in GROUPS.values() for tp in tps}
            meta = self.admin.list_topics(timeout=10).topics
            self.partitions = {tp: len(meta[tp].partitions) for tp in topics if tp in meta}
        return self.partitions

    def group_lag(self) -> dict[str, int | None]:
        """Last stable offset minus committed offset, summed over the group's partitions."""
        from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel
        from confluent_kafka.admin import OffsetSpec

        parts = self._partitions()
        wanted = [TopicPartition(tp, p) for tp in parts for p in range(parts[tp])]
        ends_f = self.admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in wanted},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=5,
        )
        ends = {(k.topic, k.partition): f.result().offset for k, f in ends_f.items()}
        out: dict[str, int | None] = {}
        for group, (_, topics) in GROUPS.items():
            req = [TopicPartition(tp, p) for tp in topics if tp in parts for p in range(parts[tp])]
            try:
                fut = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, req)])
                res = next(iter(fut.values())).result(timeout=5)
            except Exception:  # the group does not exist yet
                out[group] = None
                continue
            lag = 0
            for tp in res.topic_partitions:
                end = ends.get((tp.topic, tp.partition), 0)
                lag += max(end - max(tp.offset, 0), 0) if tp.offset >= 0 else end
            out[group] = lag
        return out

    def refresh(self) -> None:
        for name in ("edge", "inference", "analytics", "sink", "webhook", "simulator"):
            if name in self.sup.components:
                got = scrape(self.opts.port(name))
                if got or name not in self.metrics:  # a finished source keeps its last figures
                    self.metrics[name] = got
        with contextlib.suppress(Exception):
            self.lag = self.group_lag()

    def table(self) -> Table:
        m = self.metrics
        elapsed = time.monotonic() - self.started
        tab = Table(
            title=f"ITS demo pipeline, {elapsed:5.0f} s of {self.opts.duration_s:.0f} s (Ctrl-C stops)",
            title_justify="left",
        )
        for col in ("stage", "process", "restarts", "in", "out", "lag"):
            tab.add_column(col, justify="right" if col in ("restarts", "in", "out", "lag") else "left")

        def state(name: str) -> str:
            c = self.sup.components.get(name)
            if c is None:
                return "[dim]off[/]"
            if c.process is not None and c.process.poll() is None:
                return f"[green]up[/] pid {c.process.pid}"
            if c.finite and c.exit_code == 0:
                return "[blue]done[/]"
            return f"[red]exit {c.exit_code}[/]"

        def restarts(name: str) -> str:
            c = self.sup.components.get(name)
            return str(c.restarts) if c else "-"

        def lag(group: str) -> str:
            v = self.lag.get(group)
            return "-" if v is None else f"{v:,}"

        e = m.get("edge", {})
        tab.add_row(
            "edge (real clip, cloud)",
            state("edge"),
            restarts("edge"),
            f"{msum(e, 'its_edge_frames_sampled_total'):,.0f} sampled",
            f"{msum(e, 'its_edge_delivered_total', topic=t.FRAMES):,.0f} frames",
            "",
        )
        s = m.get("simulator", {})
        tab.add_row(
            f"simulator ({self.opts.cameras} cameras)",
            state("simulator"),
            restarts("simulator"),
            "",
            f"{msum(s, 'its_simulator_records_total', topic=t.DETECTIONS):,.0f} detections, "
            f"{msum(s, 'its_simulator_records_total', topic=t.SIGNALS):,.0f} signals",
            "",
        )
        i = m.get("inference", {})
        tab.add_row(
            "inference (YOLOX-nano, CPU)",
            state("inference"),
            restarts("inference"),
            f"{msum(i, 'its_stream_records_in_total', topic=t.FRAMES):,.0f} frames",
            f"{msum(i, 'its_stream_records_out_total', topic=t.DETECTIONS):,.0f} detections "
            f"({msum(i, 'its_inference_detections_total'):,.0f} boxes)",
            lag("its-inference"),
        )
        a = m.get("analytics", {})
        tab.add_row(
            "analytics (tracks, rules, windows)",
            state("analytics"),
            restarts("analytics"),
            f"{msum(a, 'its_stream_records_in_total', topic=t.DETECTIONS):,.0f} detections",
            f"{msum(a, 'its_stream_records_out_total', topic=t.EVENTS):,.0f} events, "
            f"{msum(a, 'its_stream_records_out_total', topic=t.ALERTS):,.0f} alerts, "
            f"{msum(a, 'its_stream_records_out_total', topic=t.TRAFFIC_STATS):,.0f} stats",
            lag("its-analytics"),
        )
        k = m.get("sink", {})
        rows = {
            tb: msum(k, "its_sink_rows_total", table=tb)
            for tb in ("detections", "events", "alerts", "traffic_stats", "camera_health")
        }
        tab.add_row(
            "ClickHouse sink",
            state("sink"),
            restarts("sink"),
            "",
            ", ".join(f"{v:,.0f} {tb}" for tb, v in rows.items()),
            lag("its-clickhouse-sink"),
        )
        if "webhook" in self.sup.components:
            w = m.get("webhook", {})
            tab.add_row(
                "alert webhook (signed POSTs)",
                state("webhook"),
                restarts("webhook"),
                "",
                f"{msum(w, 'its_webhook_deliveries_total', outcome='delivered'):,.0f} delivered, "
                f"{msum(w, 'its_webhook_deliveries_total', outcome='dead_lettered'):,.0f} dead-lettered",
                lag(WEBHOOK_GROUP),
            )
        return tab


# --- the demo ----------------------------------------------------------------------------------------


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop the sources and shut down cleanly."""


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def run_demo(
    settings: Settings,
    keep_running: bool = False,
    console: Console | None = None,
    options: DemoOptions | None = None,
) -> bool:
    """Run the demo; True when every check held (exit status 0)."""
    opts = options or DemoOptions(keep_running=keep_running)
    opts.keep_running = opts.keep_running or keep_running
    console = console or Console(width=max(Console().width, 120))
    stack = Stack(settings)
    ok = True
    stop = threading.Event()
    t_begin = time.monotonic()
    _interrupted[0] = False

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if threading.current_thread() is threading.main_thread():
            raise Stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    from infra.kafka.broker import LocalKafka
    from infra.schema_registry import runner as registry
    from its.stack import registry_is_local

    # What runs already is left alone; what this demo starts is stopped, even when a Ctrl-C
    # arrives while it is still starting.
    had_kafka = LocalKafka.from_settings(settings).is_running()
    had_registry = not registry_is_local(settings) or registry.healthy(settings.schema_registry_url)
    try:
        with console.status("starting Kafka and the schema registry"):
            stack.up()
        console.print(
            f"[green]✓[/] Kafka at {settings.kafka_bootstrap}, registry at {settings.schema_registry_url}"
            + (f" (started: {', '.join(stack.started)})" if stack.started else " (already running)")
        )
        changes = ensure_topics(settings.kafka_config())
        created = [c.topic for c in changes if c.action != "unchanged"]
        console.print(
            f"[green]✓[/] {len(changes)} topics ensured"
            + (f" (changed: {', '.join(created)})" if created else "")
        )

        from connectors.clickhouse.client import connect
        from connectors.clickhouse.migrate import migrate

        client = connect(settings.clickhouse_dsn)
        try:
            applied = migrate(client)
            tables = client.command("SELECT count() FROM system.tables WHERE database = currentDatabase()")
        finally:
            client.close()  # the embedded store is one process's: the sink opens it next
        console.print(
            f"[green]✓[/] ClickHouse {settings.clickhouse_dsn}: {len(applied)} migrations applied, "
            f"{tables} tables"
        )
        trips = round_trip_examples(settings)
        bad = [rt.topic for rt in trips if not rt.identical]
        ok &= not bad
        console.print(
            f"[green]✓[/] {len(trips)} contracts produced and read back byte for byte through the registry "
            f"({', '.join(rt.record for rt in trips)})"
            if not bad
            else f"[red]✗ round trip differs: {bad}[/]"
        )
        ok &= run_pipeline(settings, opts, console, stop, _register_sup)
    except Stop:
        console.print("[yellow]interrupted: stopping everything[/]")
        ok, _interrupted[0] = False, True
    finally:
        for s in old:  # cleanup is not interrupted by a second Ctrl-C
            signal.signal(s, signal.SIG_IGN)
        if _current_sup[0] is not None:
            _current_sup[0].stop(timeout=15, order=STOP_ORDER)
            _current_sup[0] = None
        if not opts.keep_running:
            stack.started = [n for n, had in (("registry", had_registry), ("kafka", had_kafka)) if not had]
            stopped = stack.down()
            if stopped:
                console.print(f"stopped: {', '.join(stopped)}")
        else:
            console.print(
                f"[yellow]left running:[/] Kafka at {settings.kafka_bootstrap}, registry at "
                f"{settings.schema_registry_url} (`its kafka stop` stops both)"
            )
        for s, h in old.items():
            signal.signal(s, h)
    console.print(f"demo took {time.monotonic() - t_begin:.0f} s")
    if _interrupted[0]:
        console.print("[bold yellow]demo interrupted[/] (stopped early on Ctrl-C/SIGTERM: exit status 1)")
    else:
        console.print("[bold green]demo passed[/]" if ok else "[bold red]demo failed[/]")
    return ok


_current_sup: list[Supervisor | None] = [None]
_interrupted = [False]


def _register_sup(sup: Supervisor) -> None:
    _current_sup[0] = sup


def run_pipeline(
    settings: Settings, opts: DemoOptions, console: Console, stop: threading.Event, register_sup: Any
) -> bool:
    """Start every component, show progress, drain and stop them, print the summary."""
    artifacts = opts.artifacts.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    log_dir = artifacts / "logs"
    for old_log in log_dir.glob("*.log"):
        old_log.unlink()
    run_start_ms = int(time.time() * 1000) - 2_000
    assets = settings.assets_path
    clip = assets / "video" / "intel_car-detection.mp4"
    model = Path(opts.model) if opts.model else assets / "models" / "yolox_nano_coco_416.onnx"
    if opts.real_camera and not (clip.is_file() and model.is_file()):
        console.print(
            f"[yellow]! real clip camera skipped: {clip if not clip.is_file() else model} is missing "
            f"(ITS_ASSETS_DIR={assets})[/]"
        )
        use_clip = None
    else:
        use_clip = clip if opts.real_camera else None
    if use_clip is not None:
        register_clip_camera(settings, artifacts / "clip-camera.yaml")
        console.print(
            f"[green]✓[/] registered {CLIP_CAMERA_ID} (real clip, cloud mode, scene in "
            f"{artifacts / 'clip-camera.yaml'}); the simulator registers its {opts.cameras} cameras"
        )

    env = {k: v for k, v in os.environ.items()}
    # Children must agree with the demo on every setting, wherever they resolve relative paths.
    env.update(
        ITS_DATA_DIR=str(settings.data_path),
        ITS_CACHE_DIR=str(settings.cache_path),
        ITS_ASSETS_DIR=str(assets),
        ITS_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        ITS_SCHEMA_REGISTRY_URL=settings.schema_registry_url,
    )
    sup = Supervisor(log_dir, base_env=env)
    register_sup(sup)
    receiver = WebhookReceiver(secrets.token_hex(16))
    with receiver:
        return _run_supervised(settings, opts, console, stop, sup, receiver, use_clip, model, run_start_ms)


def _run_supervised(
    settings: Settings,
    opts: DemoOptions,
    console: Console,
    stop: threading.Event,
    sup: Supervisor,
    receiver: WebhookReceiver,
    use_clip: Path | None,
    model: Path,
    run_start_ms: int,
) -> bool:
    """The pipeline's processes from start to summary, the webhook receiver listening meanwhile."""
    from its import demo_summary

    artifacts = opts.artifacts.resolve()
    log_dir = artifacts / "logs"
    comps = components(settings, opts, use_clip, model, webhook=(receiver.url, receiver.secret))
    services = [c for c in comps if not c.finite]
    sources = [c for c in comps if c.finite]
    for c in services:
        sup.start(c)
    console.print(f"[green]✓[/] started {', '.join(c.name for c in services)} (logs in {log_dir})")
    ready = wait_for(
        lambda: all(_healthy(opts.port(c.name)) or not sup.running(c.name) for c in services), timeout=90
    )
    if not ready:
        console.print("[yellow]! not every service reported healthy within 90 s; going on[/]")
    for c in sources:
        sup.start(c)
    console.print(
        f"[green]✓[/] started sources: {', '.join(c.name for c in sources)} for {opts.duration_s:.0f} s"
    )

    progress = Progress(settings, opts, sup)
    deadline = time.monotonic() + opts.duration_s + 45  # sources end by themselves; this is the backstop
    warned: set[str] = set()
    interrupted = False
    try:
        with Live(progress.table(), console=console, refresh_per_second=1, transient=False) as live:
            while not stop.is_set():
                for name in sup.poll():
                    n = sup.components[name].restarts
                    console.print(f"[yellow]! {name} died; restarted (restart {n})[/]")
                for c in sup.components.values():
                    gave_up = c.exit_code not in (None, 0) and c.restarts >= c.max_restarts
                    if gave_up and c.name not in warned and not sup.running(c.name):
                        warned.add(c.name)
                        console.print(
                            f"[red]! {c.name} keeps dying (exit {c.exit_code}); skipped, see {c.log_path}[/]"
                        )
                progress.refresh()
                live.update(progress.table())
                sources_done = all(not sup.running(c.name) for c in sources)
                if sources_done or time.monotonic() > deadline:
                    break
                stop.wait(2.0)
    except Stop:
        interrupted = _interrupted[0] = True
        console.print("\n[yellow]Ctrl-C: stopping the sources, then draining[/]")
    console.print()
    stop.clear()

    # Sources first, then let the processors and the sink drain, then stop them in order.
    for c in sources:
        _stop_one(sup, c.name)
    console.print("[green]✓[/] sources stopped; draining the processors")
    progress.refresh()

    history: dict[tuple[str, ...], list[dict[str, int | None]]] = {}

    def drained(groups: tuple[str, ...]) -> bool:
        """Caught up: each group's lag is at most one per partition (a transaction's commit marker
        after the last record stays "unread" in committed offsets) and has not moved for 3 checks."""
        lag = progress.group_lag()
        seen = history.setdefault(groups, [])
        seen.append({g: lag.get(g) for g in groups})
        if all((lag.get(g) or 0) <= 0 for g in groups):
            return True
        parts = progress.partitions
        small = all((lag.get(g) or 0) <= sum(parts.get(tp, 0) for tp in GROUPS[g][1]) for g in groups)
        return small and len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    with console.status("processors catching up"):
        caught = wait_for(lambda: drained(("its-inference", "its-analytics")), timeout=opts.drain_s, step=1.0)
    for name in ("inference", "analytics"):
        if name in sup.components:
            _stop_one(sup, name)
    with console.status("ClickHouse sink and alert webhook catching up"):
        caught &= wait_for(
            lambda: drained(("its-clickhouse-sink", WEBHOOK_GROUP)), timeout=opts.drain_s, step=1.0
        )
    time.sleep(2.0)  # the sink's last batch (ITS_SINK__BATCH_MS = 1 s) lands
    console.print(
        f"[green]✓[/] drained (lag {progress.group_lag()})"
        if caught
        else f"[yellow]! not fully drained after {opts.drain_s:.0f} s: {progress.group_lag()}[/]"
    )
    progress.refresh()
    console.print(progress.table())

    restarts = {c.name: c.restarts for c in sup.components.values() if c.restarts}
    ok = True
    try:
        summary = demo_summary.collect(settings, run_start_ms, artifacts, console)
    except Exception as exc:
        console.print(f"[red]✗ summary from ClickHouse failed: {exc!r}[/]")
        summary, ok = None, False
    hooks = receiver.summary()
    alert_rows = (summary or {}).get("table_rows", {}).get("alerts", 0)
    ok &= demo_summary.print_webhook(console, hooks, alert_rows)
    exit_codes = sup.stop(timeout=30, order=STOP_ORDER)
    console.print(
        "[green]✓[/] every component stopped: " + ", ".join(f"{n} {c}" for n, c in exit_codes.items())
    )
    if restarts:
        console.print(f"[yellow]restarts during the run: {restarts}[/]")
    if summary is not None:
        summary["restarts"] = restarts
        summary["webhook"] = hooks
        summary["exit_codes"] = exit_codes
        summary["pids"] = {n: c.process.pid for n, c in sup.components.items() if c.process}
        summary["interrupted"] = interrupted
        (artifacts / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        empty = [tb for tb, n in summary["table_rows"].items() if not n]
        if empty:
            console.print(f"[red]✗ empty tables: {', '.join(empty)}[/] (component logs: {log_dir})")
            ok = False
        if not summary.get("keyframe"):
            console.print("[red]✗ no annotated keyframe was written[/]")
            ok = False
    return ok and not interrupted


def _stop_one(sup: Supervisor, name: str, timeout: float = 20.0) -> None:
    """SIGTERM one component and wait for it (it commits its open transaction first)."""
    import subprocess

    c = sup.components[name]
    if c.process is None or c.process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        c.process.send_signal(signal.SIGTERM)
    try:
        c.process.wait(timeout)
    except subprocess.TimeoutExpired:
        c.process.kill()
        c.process.wait(10)
    c.exit_code = c.process.returncode
    c.max_restarts = c.restarts  # stopped on purpose: poll() must not bring it back


__all__ = ["DemoOptions", "Progress", "round_trip_examples", "run_demo"]
