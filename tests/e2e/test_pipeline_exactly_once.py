"""The whole pipeline, exactly once: every stage its own supervised process, SIGKILLed at random moments.

One deterministic input set goes through ``its process inference`` -> ``its process analytics`` ->
``its sink clickhouse`` twice: once without failures, once while the inference processor, the
analytics processor and the sink are each SIGKILLed at a random moment (the supervisor,
its/supervisor.py, restarts them). Both ClickHouse stores must then hold the same rows: counts, sums
and the full id sets of every table, the rollups included.

Inputs: real highway-clip frames (416 px wide) of two cameras through YOLOX-nano 416, and two
simulated highway cameras whose detections go straight to the detections topic (the simulator's
rendered frames are flat boxes in which YOLOX finds nothing, measured 0 of 226 boxes; they cannot
carry the analytics' violations and alerts through inference). Inputs are produced in paced chunks
so that each kill lands while data still flows.

Topics are the session broker's shared ones, so each run uses its own camera-id prefix (analytics
snapshots are per camera, on a compacted topic read whole), its own consumer groups and store; the
comparison strips the prefix. Columns that are wall-clock or Kafka-position facts (processed_ts,
inference_ms, _offset, _partition, evidence_ref) differ between any two runs and are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.topics import ensure_topics
from its.supervisor import Component, Supervisor
from producers.registry import load_camera_file
from producers.simulator import simulate
from schemas import records as r
from schemas.serde import TopicSerde
from schemas.topics import (
    ALERT_ACKS,
    ALERTS,
    BY_NAME,
    CAMERAS,
    DETECTIONS,
    EVENTS,
    FRAMES,
    SIGNALS,
    TRAFFIC_STATS,
)
from tests.integration import inference_support as s
from tests.integration.processor_support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
ITS = str(Path(sys.executable).with_name("its"))
CLIP_CAMERAS = 2
CLIP_FRAMES = 60  # per clip camera: 6 s of the clip at 10 frames/s
SIM_CAMERAS = 2
SIM_SECONDS = 150  # the highway scenario (seed 3) raises its first alerts within this span
CHUNKS = 6  # inputs are produced in this many chunks ...
CHUNK_GAP_S = 2.0  # ... this far apart, so the kills land while data flows
ANALYTICS_INPUTS = (CAMERAS, SIGNALS, DETECTIONS, ALERT_ACKS)
SINK_INPUTS = (CAMERAS, DETECTIONS, EVENTS, ALERTS, TRAFFIC_STATS)
STAGES = ("inference", "analytics", "sink")


def _clip_camera_yaml(camera_id: str, width: int, height: int) -> str:
    """A counting line across the highway clip (traffic moves vertically in the image)."""
    mid = height * 3 // 5
    return f"""\
camera_id: {camera_id}
name: "e2e: highway clip"
location: {{latitude: 52.0, longitude: 4.3}}
mode: cloud
source: highway_cars_720p.mp4
fps: 10
scene:
  lanes:
    - {{lane_id: road, polygon: [[0, 0], [{width}, 0], [{width}, {height}], [0, {height}]],
       centerline: [[{width // 2}, 0], [{width // 2}, {height}]], speed_limit_kmh: 100, approach: n}}
  lines:
    - {{line_id: count, points: [[0, {mid}], [{width}, {mid}]], in_direction: southbound,
       out_direction: northbound, lane_id: road}}
  zones:
    - {{zone_id: road, kind: roadway, polygon: [[0, 0], [{width}, 0], [{width}, {height}], [0, {height}]]}}
  calibration: {{metres_per_pixel: 0.12}}
"""


@dataclasses.dataclass
class Inputs:
    """One run's records, in production order per camera (the only order the outputs depend on)."""

    cameras: list[r.Camera]
    frames: list[r.Frame]
    detections: list[r.Detections]


class Template:
    """The run-independent inputs, built once; ``inputs(prefix)`` names the cameras for one run."""

    def __init__(self, assets: Path, tmp: Path) -> None:
        # Capture times of the last hour, the same in both runs: far older rows would fall to the tables' TTL.
        self.start_ms = (int(time.time()) // 3600 - 1) * 3_600_000
        self.jpegs = s.clip_jpegs(assets, CLIP_FRAMES, width=416, step=3)
        first = s.frame_record("x", 0, self.jpegs[0])
        path = tmp / "clip-camera.yaml"
        path.write_text(_clip_camera_yaml("clip", first.width, first.height))
        self.clip_camera = load_camera_file(path)
        self.sim = simulate(
            "highway",
            seed=3,
            noise="default",
            duration_s=SIM_SECONDS,
            cameras=SIM_CAMERAS,
            start_ms=self.start_ms,
        )

    def inputs(self, prefix: str) -> Inputs:
        cams = [
            dataclasses.replace(self.clip_camera, camera_id=f"{prefix}clip-{i}") for i in range(CLIP_CAMERAS)
        ]
        rename = {c.camera_id: f"{prefix}sim-{i}" for i, c in enumerate(self.sim.cameras)}
        cams += [dataclasses.replace(c, camera_id=rename[c.camera_id]) for c in self.sim.cameras]
        frames = [
            dataclasses.replace(
                s.frame_record(f"{prefix}clip-{i}", seq, jpeg), capture_ts_ms=self.start_ms + seq * 100
            )
            for seq, jpeg in enumerate(self.jpegs)
            for i in range(CLIP_CAMERAS)
        ]
        dets = []
        for d in self.sim.detections:
            # A fixed frame reference: the analytics would otherwise take the input's Kafka position.
            dets.append(
                dataclasses.replace(
                    d, camera_id=rename[d.camera_id], frame_ref=r.FrameRef(FRAMES, 0, d.frame_seq)
                )
            )
        return Inputs(cams, frames, dets)


def code_digest() -> str:
    """A digest of the Python sources the pipeline's processes import: a change while the test runs
    (an editor saving in the working tree) makes the two runs' code differ, which must not pass for
    an exactly-once failure."""
    h = hashlib.sha256()
    for folder in ("its", "processors", "producers", "connectors", "schemas", "infra"):
        for path in sorted((REPO / folder).rglob("*.py")):
            h.update(str(path.relative_to(REPO)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def caught_up(
    bootstrap: str, group: str, topics: tuple[str, ...], positions: dict[tuple[str, int], int] | None = None
) -> bool:
    """True when nothing committed-readable lies between the group's positions and the topics' ends.

    Positions are the group's committed offsets, or ``positions`` where given (the sink's truth is in
    ClickHouse; its Kafka commits are asynchronous and may be lost with a SIGKILL). Between them and
    the ends there may be only transaction markers or aborted records, which a read_committed reader
    skips: probe such partitions and require that nothing is delivered.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(BY_NAME[t].partitions)]
        behind: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        if positions is None:
            parts = consumer.committed(parts, timeout=10)
        else:
            parts = [
                TopicPartition(tp.topic, tp.partition, positions.get((tp.topic, tp.partition), -1))
                for tp in parts
            ]
        for tp in parts:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            at = tp.offset if tp.offset >= 0 else lo
            if at < hi:
                behind.append(TopicPartition(tp.topic, tp.partition, at))
                ends[(tp.topic, tp.partition)] = hi
        if not behind:
            return True
        consumer.assign(behind)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if any(not m.error() for m in consumer.consume(100, 0.2)):
                return False
            pos = consumer.position([TopicPartition(tp.topic, tp.partition) for tp in behind])
            if all(p.offset >= ends[(p.topic, p.partition)] for p in pos):
                return True
        return False  # an open transaction holds the read_committed position back
    finally:
        consumer.close()


class Run:
    """One pass of the pipeline: its prefix, groups, store and supervised processes."""

    def __init__(self, name: str, root: Path, bootstrap: str, registry: str, assets: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name, self.bootstrap = name, bootstrap
        self.prefix = f"e2e{name}{tag}-"
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.store = self.dir / "clickhouse"
        self.groups = {st: f"e2e-{name}-{st}-{tag}" for st in STAGES}
        self.ports = {st: free_port() for st in STAGES}
        model = assets / "models" / "yolox_nano_coco_416.onnx"
        self.env = {
            **os.environ,
            "ITS_KAFKA_BOOTSTRAP": bootstrap,
            "ITS_SCHEMA_REGISTRY_URL": registry,
            "ITS_DATA_DIR": str(self.dir),
            "ITS_ASSETS_DIR": str(assets),
            "ITS_CLICKHOUSE_URL": f"chdb://{self.store}",
            "ITS_LOG_FORMAT": "text",
            "ITS_LOG_LEVEL": "INFO",
            "ITS_INFERENCE__GROUP_ID": self.groups["inference"],
            "ITS_INFERENCE__INTRA_OP_THREADS": "1",
            "ITS_ANALYTICS__GROUP_ID": self.groups["analytics"],
            "ITS_ANALYTICS__MAX_BATCH": "200",
            "ITS_ANALYTICS__MAX_WAIT_MS": "50",
            "ITS_SINK__GROUP_ID": self.groups["sink"],
            "ITS_SINK__INSTANCE_ID": f"e2e-{name}-{tag}",  # static membership: restarts need no rebalance
            "ITS_SINK__METRICS_PORT": str(self.ports["sink"]),
            "ITS_SINK__QUERY_PORT": "0",
            "ITS_SINK__BATCH_MS": "300",
        }
        instance = f"e2e-{name}-{tag}"
        # Batches of one frame: a frame's boxes then never depend on which frames shared its batch.
        self.components = [
            Component("sink", [ITS, "sink", "clickhouse"], max_restarts=10),
            Component(
                "analytics",
                [
                    ITS,
                    "process",
                    "analytics",
                    "--instance-id",
                    instance,
                    "--metrics-port",
                    str(self.ports["analytics"]),
                ],
                max_restarts=10,
            ),
            Component(
                "inference",
                [
                    ITS,
                    "process",
                    "inference",
                    "--model",
                    str(model),
                    "--max-batch",
                    "1",
                    "--max-wait-ms",
                    "20",
                    "--no-registry",
                    "--instance-id",
                    instance,
                    "--metrics-port",
                    str(self.ports["inference"]),
                ],
                max_restarts=10,
            ),
        ]
        self.sup = Supervisor(self.dir / "logs", base_env=self.env)

    def healthz(self, stage: str) -> dict[str, Any] | None:
        import httpx

        try:
            resp = httpx.get(f"http://127.0.0.1:{self.ports[stage]}/healthz", timeout=2)
            return resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def log(self, stage: str) -> str:
        path = self.sup.components[stage].log_path
        return path.read_text()[-3000:] if path and path.exists() else ""

    def start(self) -> None:
        s.start_group_at_end(self.bootstrap, self.groups["inference"], FRAMES)
        s.start_group_at_end(self.bootstrap, self.groups["analytics"], *ANALYTICS_INPUTS)
        for c in self.components:
            self.sup.start(c)
        deadline = time.monotonic() + 120
        while not all(self.healthz(st) is not None for st in STAGES):
            self.sup.poll()
            assert time.monotonic() < deadline, {st: self.log(st) for st in STAGES}
            time.sleep(0.3)

    def sink_positions(self) -> dict[tuple[str, int], int] | None:
        """Next offset per partition by the sink's own record (sink_offsets), through its query endpoint."""
        import httpx

        try:
            info = json.loads((self.store / "its-endpoint.json").read_text())
            query = (
                "SELECT topic, partition, max(max_offset) + 1 AS next FROM sink_offsets "
                f"WHERE consumer_group = '{self.groups['sink']}' GROUP BY topic, partition FORMAT JSONEachRow"
            )
            resp = httpx.post(
                info["url"], content=query.encode(), headers={"X-ClickHouse-User": "default"}, timeout=10
            )
            resp.raise_for_status()
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return None  # restarting: no endpoint yet, or the file of the killed one
        rows = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
        return {(row["topic"], int(row["partition"])): int(row["next"]) for row in rows}

    def drained(self) -> bool:
        if not (
            caught_up(self.bootstrap, self.groups["inference"], (FRAMES,))
            and caught_up(self.bootstrap, self.groups["analytics"], ANALYTICS_INPUTS)
        ):
            return False
        stored = self.sink_positions()
        return stored is not None and caught_up(self.bootstrap, self.groups["sink"], SINK_INPUTS, stored)

    def stop(self) -> dict[str, int | None]:
        return self.sup.stop(timeout=60, order=["inference", "analytics", "sink"])

    def sql(self, query: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [ITS, "sql", "-f", "json", query], cwd=REPO, env=self.env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"its sql failed: {done.stderr[-3000:]}\n{query}"
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def produce_paced(run: Run, serde: TopicSerde, inputs: Inputs, between: Callable[[], None]) -> None:
    """Cameras first, then frames and detections in ``CHUNKS`` chunks; ``between`` runs during gaps."""
    s.produce(run.bootstrap, [(c.camera_id, serde.encode(CAMERAS, c)) for c in inputs.cameras], topic=CAMERAS)
    frames = [(f.camera_id, serde.encode(FRAMES, f)) for f in inputs.frames]
    dets = [(d.camera_id, serde.encode(DETECTIONS, d)) for d in inputs.detections]
    for i in range(CHUNKS):
        s.produce(run.bootstrap, frames[i * len(frames) // CHUNKS : (i + 1) * len(frames) // CHUNKS])
        s.produce(
            run.bootstrap, dets[i * len(dets) // CHUNKS : (i + 1) * len(dets) // CHUNKS], topic=DETECTIONS
        )
        gap_end = time.monotonic() + CHUNK_GAP_S
        while time.monotonic() < gap_end:
            between()
            time.sleep(0.1)


def wait_drained(run: Run, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not run.drained():
        run.sup.poll()
        assert time.monotonic() < deadline, {st: run.log(st) for st in STAGES}
        time.sleep(0.5)


def fingerprint(run: Run) -> dict[str, Any]:
    """Counts, exact sums and sorted id lists of every table the pipeline fills, prefix stripped."""
    p = run.prefix
    mine = f"startsWith(camera_id, '{p}')"

    def ids(expr: str) -> str:
        return f"arraySort(groupArray(replaceAll({expr}, '{p}', '')))"

    query = f"""
    SELECT
      (SELECT count() FROM cameras FINAL WHERE {mine}) AS cameras,
      (SELECT {ids("camera_id")} FROM cameras FINAL WHERE {mine}) AS camera_ids,
      (SELECT count() FROM detections WHERE {mine}) AS detections,
      (SELECT {ids("concat(camera_id, ':', toString(frame_seq))")} FROM detections WHERE {mine})
        AS detection_ids,
      (SELECT sum(objects) FROM detections WHERE {mine}) AS objects,
      (SELECT sum(arraySum(arrayMap(x -> toInt64(round(x * 10)), boxes))) FROM detections WHERE {mine})
        AS box_dpx,
      (SELECT sum(arraySum(arrayMap(x -> toInt64(round(x * 1000)), scores))) FROM detections WHERE {mine})
        AS score_milli,
      (SELECT sum(arraySum(class_ids)) FROM detections WHERE {mine}) AS class_sum,
      (SELECT sum(toUnixTimestamp64Milli(capture_ts)) FROM detections WHERE {mine}) AS capture_ms,
      (SELECT count() FROM events WHERE {mine}) AS events,
      (SELECT {ids("event_id")} FROM events WHERE {mine}) AS event_ids,
      (SELECT {ids("concat(event_type, ':', direction, ':', line_id, ':', toString(track_id))")}
         FROM events WHERE {mine}) AS event_kinds,
      (SELECT sum(toInt64(round(ifNull(speed_kmh, 0) * 10))) FROM events WHERE {mine}) AS speed_dkmh,
      (SELECT sum(toInt64(round(confidence * 1000))) FROM events WHERE {mine}) AS confidence_milli,
      (SELECT sum(ifNull(evidence_frame_seq, 0)) FROM events WHERE {mine}) AS evidence_seq,
      (SELECT count() FROM alerts WHERE {mine}) AS alerts,
      (SELECT {ids("concat(alert_id, ':', status, ':', toString(count), ':', toString(escalation_level))")}
         FROM alerts WHERE {mine}) AS alert_ids,
      (SELECT sum(length(event_ids)) FROM alerts WHERE {mine}) AS alert_event_refs,
      (SELECT count() FROM traffic_stats WHERE {mine}) AS traffic_stats,
      (SELECT {ids("concat(stats_id, ':', level_of_service)")} FROM traffic_stats WHERE {mine}) AS stats_ids,
      (SELECT sum(volume) FROM traffic_stats WHERE {mine}) AS volume,
      (SELECT sum(queue_vehicles) FROM traffic_stats WHERE {mine}) AS queue_vehicles,
      (SELECT sum(toInt64(round(occupancy * 10000))) FROM traffic_stats WHERE {mine}) AS occupancy_bp,
      (SELECT sum(toInt64(round(ifNull(mean_speed_kmh, 0) * 10))) FROM traffic_stats WHERE {mine})
        AS mean_speed_dkmh,
      (SELECT count() FROM camera_health WHERE {mine}) AS camera_health,
      (SELECT count() FROM dead_letters WHERE startsWith(key, '{p}')) AS dead_letters,
      (SELECT sum(frames) FROM detections_hourly WHERE {mine}) AS hourly_frames,
      (SELECT sum(objects) FROM detections_hourly WHERE {mine}) AS hourly_objects,
      (SELECT sum(events) FROM events_hourly WHERE {mine}) AS hourly_events,
      (SELECT sum(volume) FROM traffic_hourly WHERE {mine}) AS hourly_volume,
      (SELECT sum(volume) FROM traffic_daily WHERE {mine}) AS daily_volume
    """
    return run.sql(" ".join(query.split()))[0]


def test_pipeline_ends_identical_with_sigkills_of_every_stage(
    kafka_broker, schema_registry, kafka_settings, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    ensure_topics({"bootstrap.servers": bootstrap})
    serde = TopicSerde(schema_registry)
    assets = kafka_settings.assets_path
    template = Template(assets, tmp_path)
    seed = int(os.environ.get("ITS_TEST_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    timings: dict[str, float] = {}
    code_at_start = code_digest()

    # --- the failure-free run ------------------------------------------------------------------
    t0 = time.monotonic()
    clean = Run("a", tmp_path, bootstrap, schema_registry, assets)
    clean_inputs = template.inputs(clean.prefix)
    try:
        clean.start()
        produce_paced(clean, serde, clean_inputs, lambda: None)
        wait_drained(clean)
    finally:
        codes = clean.stop()
    assert all(c == 0 for c in codes.values()), (codes, {st: clean.log(st) for st in STAGES})
    assert not any(c.restarts for c in clean.sup.components.values())
    want = fingerprint(clean)
    timings["clean"] = time.monotonic() - t0
    print(f"\nfailure-free run: {timings['clean']:.1f} s", flush=True)

    # Every stage did real work: the comparison below is not between two empty stores.
    assert want["cameras"] == CLIP_CAMERAS + SIM_CAMERAS
    assert want["detections"] == len(clean_inputs.frames) + len(clean_inputs.detections)
    assert want["objects"] > 0 and want["events"] > 0 and want["alerts"] > 0 and want["traffic_stats"] > 0
    assert any(i.startswith("clip-") for i in want["event_ids"]), "no event from the inference path"
    assert want["hourly_frames"] == want["detections"] and want["hourly_volume"] == want["volume"]
    assert want["dead_letters"] == 0 and want["camera_health"] == 0

    # --- the same again, with every stage SIGKILLed once at a random moment -------------------------
    t1 = time.monotonic()
    chaos = Run("b", tmp_path, bootstrap, schema_registry, assets)
    chaos_inputs = template.inputs(chaos.prefix)
    window = CHUNKS * CHUNK_GAP_S
    schedule = sorted((rng.uniform(0.5, window - 1.0), st) for st in STAGES)
    kills: list[tuple[float, str, int]] = []
    produce_start = [0.0]

    def chaos_step() -> None:
        chaos.sup.poll()  # the supervisor's job: restart what died
        now = time.monotonic() - produce_start[0]
        while schedule and schedule[0][0] <= now:
            _, stage = schedule.pop(0)
            health = chaos.healthz(stage) or {}
            chaos.sup.kill(stage, signal.SIGKILL)
            kills.append((round(now, 2), stage, int(health.get("committed_batches", -1))))

    try:
        chaos.start()
        produce_start[0] = time.monotonic()
        produce_paced(chaos, serde, chaos_inputs, chaos_step)
        while schedule:  # a kill drawn late in the window still happens
            chaos_step()
            time.sleep(0.1)
        wait_drained(chaos)
    finally:
        codes = chaos.stop()
    restarts = {c.name: c.restarts for c in chaos.sup.components.values()}
    assert all(c == 0 for c in codes.values()), (codes, {st: chaos.log(st) for st in STAGES})
    # Each stage was killed once and came back; a stage that died again on its own is restarted too
    # (the supervisor's job), and its log tail is printed below so the cause is on record.
    assert sorted(st for _, st, _ in kills) == sorted(STAGES), kills
    assert all(restarts[st] >= 1 for st in STAGES), (restarts, kills)
    extra = {st: chaos.log(st) for st in STAGES if restarts[st] > 1}
    got = fingerprint(chaos)
    timings["chaos"] = time.monotonic() - t1

    differ = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    short = {
        k: v if not isinstance(v[0], list) else (len(v[0]), len(v[1]), sorted(set(v[0]) ^ set(v[1]))[:5])
        for k, v in differ.items()
    }
    same_code = code_digest() == code_at_start
    assert not differ, (
        f"chaos run (seed {seed}, kills {kills}) differs from the failure-free run: {short}"
        + ("" if same_code else "; NOTE: the project's Python sources changed while the test ran")
    )
    for st, tail in extra.items():
        print(f"\n{st} restarted {restarts[st]} times; its log ends:\n{tail}")
    print(
        f"\nseed {seed}; restarts {restarts}; "
        f"kills (s after first input, stage, batches committed before): {kills}; "
        f"clean run {timings['clean']:.1f} s, chaos run {timings['chaos']:.1f} s; "
        + ", ".join(f"{k} {v}" for k, v in want.items() if not isinstance(v, list))
    )
