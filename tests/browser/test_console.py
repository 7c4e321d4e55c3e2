"""The operator console in headless Chromium (Debian's, driven by Selenium) against a running pipeline.

Real parts only: the session's Kafka broker and schema registry, three simulated cameras publishing
detections and rendered keyframes (`its simulate`), the ClickHouse sink owning its embedded store and
serving its read-only query endpoint (`its sink clickhouse`), and the console (`its console`), each
its own process. The test produces alerts, line crossings, a keyframe and traffic statistics itself.
Screenshots of every page and the measured alert latency go to artifacts/console/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.topics import ensure_topics
from schemas import records as r
from schemas.serde import TopicSerde, key_bytes
from schemas.topics import ALERT_ACKS, ALERTS, EVENTS, FRAMES, TRAFFIC_STATS
from tests.integration.sink_support import SinkEnv, create_topics, wait_for_endpoint

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
ITS = str(Path(sys.executable).with_name("its"))
ARTIFACTS = ROOT / "artifacts" / "console"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "op-" + uuid.uuid4().hex
# Generous: on a loaded 2-core machine drawing a tile can take seconds; the latency that matters is timed.
HTTP = httpx.Client(timeout=30.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], Any], timeout: float, what: str | Callable[[], str], every: float = 0.05
) -> Any:
    """Poll ``check`` until truthy; ``what`` (or what it returns, at failure) explains a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}")


class Pipeline:
    """The processes of one test run and the records the test itself produces."""

    def __init__(self, bootstrap: str, registry: str, tmp: Path) -> None:
        self.bootstrap, self.registry, self.tmp = bootstrap, registry, tmp
        self.run = uuid.uuid4().hex[:8]
        self.scenario = f"con{self.run}"
        self.cameras = [f"sim-{self.scenario}-{i:04d}" for i in range(3)]
        self.serde = TopicSerde(registry)
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        self.procs: list[subprocess.Popen[str]] = []
        self.sink = SinkEnv(tmp / "sink", bootstrap, registry, prefix=f"con{self.run}.")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def produce(self, topic: str, record: Any, real_topic: str | None = None) -> tuple[int, int]:
        """Produce one record and wait for the broker; its (partition, offset)."""
        where: list[tuple[int, int]] = []
        self.producer.produce(
            real_topic or topic,
            key=key_bytes(record.camera_id),
            value=self.serde.encode(topic, record),
            on_delivery=lambda err, msg: (
                where.append((msg.partition(), msg.offset())) if err is None else None
            ),
        )
        assert self.producer.flush(10) == 0 and where, f"{topic} not delivered"
        return where[0]

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[str]:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def start(self) -> None:
        ensure_topics({"bootstrap.servers": self.bootstrap})
        create_topics(self.bootstrap, self.sink.prefix, partitions=1)  # the sink reads one of them
        # A uniquely named copy of the intersection scenario: camera ids no other test uses.
        text = (ROOT / "tests" / "scenarios" / "intersection.yaml").read_text()
        (self.tmp / f"{self.scenario}.yaml").write_text(
            text.replace("name: intersection", f"name: {self.scenario}")
        )
        base = {**os.environ, "ITS_KAFKA_BOOTSTRAP": self.bootstrap, "ITS_SCHEMA_REGISTRY_URL": self.registry,
                "ITS_LOG_LEVEL": "WARNING", "ITS_LOG_FORMAT": "text"}  # fmt: skip
        self.spawn(
            [ITS, "simulate", "--scenario", self.scenario, "--cameras", "3", "--fps", "1",
             "--duration", "120", "--render", "--seed", "3", "--no-ensure-topics"],
            {**base, "ITS_SCENARIOS_DIR": str(self.tmp)},
            "simulate",
        )  # fmt: skip
        self.sink_proc = self.sink.start(ITS_SINK__TOPICS=json.dumps([TRAFFIC_STATS]))
        self.procs.append(self.sink_proc)
        self.console = self.spawn(
            [ITS, "console", "--port", str(self.port)],
            {
                **base,
                "ITS_LOG_LEVEL": "INFO",
                "ITS_DATA_DIR": str(self.sink.data_dir),
                "ITS_CLICKHOUSE_URL": f"chdb://{self.sink.store}",
                "ITS_CONSOLE__OPERATOR_TOKEN": TOKEN,
                "ITS_CONSOLE__CAMERAS": f"^sim-{self.scenario}-",
                "ITS_CONSOLE__GROUP_ID": f"console-{self.run}",
            },
            "console",
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def health(self) -> dict[str, Any] | None:
        assert self.console.poll() is None, f"console exited: {self.log('console')}"
        try:
            return HTTP.get(f"{self.url}/healthz", timeout=5).json()
        except httpx.HTTPError:
            return None


def _traffic_stats(camera_id: str, los: str, now_ms: int) -> list[r.TrafficStats]:
    """30 one-minute windows ending now, whole-camera rows, ending at level of service ``los``."""
    end = now_ms - now_ms % 60_000
    rows = []
    for i in range(30):
        start = end - (30 - i) * 60_000
        rows.append(
            r.TrafficStats(
                stats_id=f"{camera_id}:{start}", camera_id=camera_id, window_start_ms=start,
                window_end_ms=start + 60_000, window_s=60, volume=10 + (i * 7) % 23,
                mean_speed_kmh=30.0 + (i % 10), level_of_service=r.LevelOfService(los if i == 29 else "B"),
            )
        )  # fmt: skip
    return rows


def _keyframe(camera_id: str, now_ms: int) -> r.Frame:
    """A rendered keyframe of the signalised junction: the evidence an alert points at."""
    from producers.simulator.render import Renderer
    from producers.simulator.scene import build

    renderer = Renderer(build("signalised_junction", 50.0))
    boxes = np.array([[600.0, 380.0, 680.0, 430.0]])
    jpeg = renderer.jpeg(boxes, np.array([2]))
    return r.Frame(camera_id, 999_999, now_ms, renderer.width, renderer.height, True, jpeg, 0.0, "test")


def _alert(
    camera_id: str, kind: r.EventType, severity: r.Severity, ts: int, ev: r.Evidence | None
) -> r.Alert:
    incident = f"{camera_id}:{kind.value}:{ts}"
    return r.Alert(
        alert_id=f"{incident}:0", incident_id=incident, camera_id=camera_id, alert_type=kind,
        severity=severity, first_ts_ms=ts, last_ts_ms=ts, title=f"{kind.value.title()} (test)",
        description="produced by the browser test", suggested_action="check the camera", evidence=ev,
    )  # fmt: skip


def _acks_for(bootstrap: str, serde: TopicSerde, cameras: set[str]) -> list[r.AlertAck]:
    """Every ack on its.alert-acks.v1 keyed by one of ``cameras`` (whole topic, read to its end)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    try:
        parts = consumer.list_topics(ALERT_ACKS, timeout=10).topics[ALERT_ACKS].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(ALERT_ACKS, p), timeout=10)[1] for p in parts
        }
        consumer.assign([TopicPartition(ALERT_ACKS, p, 0) for p in parts])
        out, left = [], {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 15
        while left and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.3):
                if m.error() is None:
                    if m.key() and m.key().decode() in cameras:
                        out.append(serde.decode(m))
                    if m.offset() >= ends[m.partition()] - 1:
                        left.discard(m.partition())
        return out
    finally:
        consumer.close()


@pytest.fixture
def driver() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    # Debian's chromium and chromedriver: CI has no browser download (.ci/run installs both).
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "apt-get install chromium chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--disable-extensions"):  # fmt: skip
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=ChromeService(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture
def pipeline(kafka_broker, schema_registry, tmp_path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_broker.bootstrap, schema_registry, tmp_path)
    try:
        p.start()
        yield p
    finally:
        p.stop()
        shutil.rmtree(tmp_path / "sink", ignore_errors=True)


class Page:
    """DOM reads through one script each: the page re-renders live, so element handles go stale."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver, self.url = driver, url

    def open(self, route: str) -> None:
        self.driver.get(f"{self.url}/#/{route}")
        wait_until(lambda: self.js("document.body.dataset.ready"), 20, f"page {route} ready")

    def js(self, expr: str, *args: Any) -> Any:
        return self.driver.execute_script(f"return {expr}", *args)

    def texts(self, css: str) -> list[str]:
        return self.js("[...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)

    def attrs(self, css: str, name: str) -> list[str]:
        return self.js("[...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]))",
                       css, name)  # fmt: skip

    def images_loaded(self, css: str) -> bool:
        return self.js("[...document.querySelectorAll(arguments[0])]"
                       ".every(i => i.complete && i.naturalWidth > 0)"
                       " && document.querySelectorAll(arguments[0]).length > 0", css)  # fmt: skip

    def click(self, css: str) -> None:
        """A real mouse click, retried when a live re-render replaced the element meanwhile."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        for _ in range(10):
            try:
                self.driver.find_element(By.CSS_SELECTOR, css).click()
                return
            except StaleElementReferenceException:
                time.sleep(0.05)
        raise AssertionError(f"could not click {css}")

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(ARTIFACTS / name))


def test_console_in_a_browser(pipeline: Pipeline, driver: Any) -> None:
    p = pipeline
    page = Page(driver, p.url)
    began = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:  # seconds since the test body began, printed for a failing run
        phases[name] = round(time.monotonic() - began, 2)
        print(f"{name}: {phases[name]} s")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    # Traffic history into the sink's topic (the sink, still starting, reads it from the beginning).
    for cam, los in zip(p.cameras, ("A", "D", "F"), strict=True):
        for row in _traffic_stats(cam, los, now):
            p.producer.produce(p.sink.prefix + TRAFFIC_STATS, key=key_bytes(cam),
                               value=p.serde.encode(TRAFFIC_STATS, row))  # fmt: skip
    assert p.producer.flush(10) == 0
    frame_part, frame_off = p.produce(FRAMES, _keyframe(p.cameras[0], now))
    # An older LOW incident on camera 1, there when the console starts (warm-up from recent offsets).
    low = _alert(p.cameras[1], r.EventType.STOP_SIGN, r.Severity.LOW, now - 5_000, None)
    p.produce(ALERTS, low)

    phase("records produced")
    health = wait_until(lambda: (h := p.health()) and h.get("caught_up") and h, 60, "console caught up")
    assert health["status"] == "ok" and not health["read_only"]

    def registered() -> bool:
        cams = HTTP.get(f"{p.url}/api/cameras").json()
        return {c["camera_id"] for c in cams if c["registered"]} >= set(p.cameras)

    phase("console caught up")
    wait_until(registered, 60, "every simulated camera registered")
    # Line crossings for the camera page: the first configured line, in its 'in' direction.
    line = HTTP.get(f"{p.url}/api/cameras/{p.cameras[0]}").json()["lines"][0]
    for k, speed in enumerate((38.0, 42.0, 46.0)):
        p.produce(EVENTS, r.Event(f"{p.run}-x{k}", p.cameras[0], r.EventType.LINE_CROSSING, r.Severity.INFO,
                                  now + k, line_id=line["line_id"], direction=line["direction"],
                                  measurements={"speed_kmh": speed}))  # fmt: skip

    phase("cameras registered")
    # --- camera grid: every camera, live, with its picture --------------------------------------------
    page.open("grid")

    def tiles() -> dict[str, str]:
        return page.js(
            "Object.fromEntries([...document.querySelectorAll('.tile')]"
            ".map(t => [t.dataset.cameraId, t.querySelector('.status').textContent]))"
        )

    wait_until(lambda: all(tiles().get(c) == "ONLINE" for c in p.cameras), 30, "3 ONLINE tiles")
    assert set(tiles()) == set(p.cameras)  # the console's camera filter: this run's cameras only
    wait_until(lambda: page.images_loaded(".tile img"), 20, "tile pictures loaded")

    def fps_shown() -> bool:  # a tile's fps needs two frames or heartbeats of its camera
        shown = page.texts(".tile .fps")
        return len(shown) == 3 and all(t.endswith(" fps") and t[0].isdigit() for t in shown)

    wait_until(fps_shown, 20, "fps on every tile")
    fps = page.texts(".tile .fps")
    assert len(fps) == 3 and all(t.endswith(" fps") and t[0].isdigit() for t in fps), fps
    models = set(page.texts(".tile .model"))
    assert models and "no model yet" not in models, models
    page.shot("grid.png")
    tile = HTTP.get(f"{p.url}/api/cameras/{p.cameras[0]}/tile.jpg")
    assert tile.status_code == 200 and tile.content[:2] == b"\xff\xd8"

    phase("grid checked")
    # --- incident timeline: a new alert appears within 2 s ---------------------------------------------
    page.open("incidents")
    wait_until(
        lambda: low.incident_id in page.attrs("li.alert", "data-incident-id"), 10, "warm-up alert shown"
    )
    evidence = r.Evidence(
        999_999, now, r.FrameRef(FRAMES, frame_part, frame_off), [600.0, 380.0, 680.0, 430.0]
    )
    high = _alert(p.cameras[0], r.EventType.WRONG_WAY, r.Severity.HIGH, now, evidence)
    row = f'li.alert[data-incident-id="{high.incident_id}"]'
    t0 = time.monotonic()
    p.produce(ALERTS, high)
    produced_s = time.monotonic() - t0
    wait_until(lambda: page.js("document.querySelector(arguments[0]) !== null", row), 10, "new alert", 0.02)
    latency_s = time.monotonic() - t0
    print(f"alert produced -> on the timeline: {latency_s:.3f} s")
    assert latency_s < 2.0, f"alert took {latency_s:.2f} s to reach the timeline"
    assert page.texts(f"{row} .st") == ["OPEN"]
    wait_until(lambda: page.images_loaded(f"{row} img"), 15, "evidence image loaded")
    ev = HTTP.get(f"{p.url}/api/alerts/{high.alert_id}/evidence.jpg", timeout=10)
    assert ev.status_code == 200 and ev.headers["x-evidence"] == "keyframe"  # the frame the ref points at
    # Filters: severity at least HIGH hides the LOW incident.
    page.click("#f-severity option[value='HIGH']")
    assert page.attrs("li.alert", "data-incident-id") == [high.incident_id]
    page.click("#f-severity option[value='']")
    assert set(page.attrs("li.alert", "data-incident-id")) == {high.incident_id, low.incident_id}
    page.shot("incidents.png")

    phase("timeline checked")
    # --- acknowledging: refused without the token (403, nothing written), accepted with it -------------
    page.click(f"{row} button.ack")
    flash = wait_until(lambda: page.js("document.getElementById('flash').textContent"), 10, "refusal shown")
    assert "403" in flash, flash
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = HTTP.post(f"{p.url}/api/alerts/{low.alert_id}/ack", headers=headers, json={"by": "x"})
        assert refused.status_code == 403, (headers, refused.text)
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "token").send_keys(TOKEN)
    page.click(f"{row} button.ack")
    wait_until(lambda: page.texts(f"{row} .st") == ["ACKNOWLEDGED"], 15, "acknowledged")
    driver.refresh()
    wait_until(lambda: page.js("document.body.dataset.ready"), 20, "page ready after reload")
    wait_until(lambda: page.texts(f"{row} .st"), 10, "row after reload")
    assert page.texts(f"{row} .st") == ["ACKNOWLEDGED"]
    assert page.js("document.querySelector(arguments[0]).disabled", f"{row} button.ack") is True
    page.shot("incidents-acknowledged.png")
    acks = _acks_for(p.bootstrap, p.serde, set(p.cameras))
    # Exactly the one authorised ack: the browser's refusal and the three refused requests wrote nothing.
    assert [(a.alert_id, a.acknowledged_by, a.source) for a in acks] == [
        (high.alert_id, "console operator", "console")
    ], acks

    phase("acknowledged")
    # --- camera page: live counts per line and direction, open incidents -------------------------------
    page.open(f"camera/{p.cameras[0]}")

    def count_of(line_id: str, direction: str) -> str | None:
        rows = page.js("[...document.querySelectorAll('#camera-lines tbody tr')]"
                       ".map(tr => [...tr.cells].map(td => td.textContent))")  # fmt: skip
        return next((f"{c[2]}|{c[3]}" for c in rows if c[:2] == [line_id, direction]), None)

    wait_until(lambda: count_of(line["line_id"], line["direction"]) == "3|42 km/h", 15,
               f"3 crossings at 42 km/h: {count_of(line['line_id'], line['direction'])}")  # fmt: skip
    # Acknowledged is still open (not resolved), so it stays on the camera page.
    assert page.attrs("#camera-incidents li.alert", "data-incident-id") == [high.incident_id]
    wait_until(lambda: page.images_loaded("#camera-tile"), 15, "camera picture")
    page.shot("camera.png")

    phase("camera page checked")
    # --- traffic (ClickHouse through the sink's endpoint) and the map coloured by level of service -----
    wait_for_endpoint(p.sink, p.sink_proc)  # the sink owns its store and serves the query endpoint
    page.open("traffic")
    wait_until(
        lambda: set(page.attrs(".chart", "data-camera-id")) >= set(p.cameras),
        30,
        lambda: "charts for every camera: " + HTTP.get(f"{p.url}/api/traffic").text[:1500],
    )
    assert len(page.attrs(f'.chart[data-camera-id="{p.cameras[0]}"] rect', "height")) >= 60  # volume + LOS
    page.shot("traffic.png")
    phase("traffic checked")
    page.open("map")
    wait_until(lambda: len(page.attrs("#map g.cam", "data-los")) == 3, 15, "3 cameras on the map")
    los = dict(
        zip(page.attrs("#map g.cam", "data-camera-id"), page.attrs("#map g.cam", "data-los"), strict=True)
    )
    assert los == dict(zip(p.cameras, ("A", "D", "F"), strict=True)), los
    page.shot("map.png")

    phase("map checked")
    metrics = HTTP.get(f"{p.url}/metrics").text
    assert 'its_console_acks_total{outcome="refused"} 4.0' in metrics
    assert 'its_console_acks_total{outcome="written"} 1.0' in metrics
    (ARTIFACTS / "timings.json").write_text(
        json.dumps(
            {
                "alert_to_timeline_s": round(latency_s, 3),
                "produce_s": round(produced_s, 3),
                "phases_s": phases,
            },
            indent=1,
        )
    )
    # SIGTERM: the console stops cleanly and promptly, with an open event stream.
    p.console.terminate()
    assert p.console.wait(15) == 0, p.log("console")
