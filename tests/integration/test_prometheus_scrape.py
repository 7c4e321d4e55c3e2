"""A real Prometheus on loopback scrapes a running pipeline component and answers queries about it.

The component is ``its simulate`` as a separate process against the test broker and registry, with its
``/metrics`` on a free port. Prometheus (Debian's ``prometheus`` package) runs from a generated config with a
1 s scrape interval and the project's own rule file; the test waits for ``up == 1``, reads an ``its_`` counter
back through ``/api/v1/query`` and checks that ``/api/v1/rules`` lists every rule of ``its.rules.yml``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from infra.topics import ensure_topics

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "infra" / "prometheus" / "rules" / "its.rules.yml"
INSTALL_HINT = (
    "the prometheus binary is missing: install Debian's package "
    "(`sudo apt-get install prometheus`; `.ci/run` and `make setup` do it as root)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _query(base: str, expr: str) -> list[dict]:
    doc = _get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def _wait(what: str, check, timeout: float, procs: dict[str, subprocess.Popen]) -> object:
    """Poll ``check`` until it returns something truthy; fail early when a process we started died."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}")
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:  # not up yet
            last_error = exc
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


def _stop(proc: subprocess.Popen | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def test_real_prometheus_scrapes_a_component_and_loads_the_rules(
    kafka_broker, schema_registry, tmp_path
) -> None:
    prometheus = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if prometheus is None:
        pytest.fail(INSTALL_HINT)
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})

    # A uniquely named copy of a scenario: camera ids no other test reads.
    name = f"prom{uuid.uuid4().hex[:8]}"
    text = (REPO / "tests" / "scenarios" / "intersection.yaml").read_text()
    (tmp_path / f"{name}.yaml").write_text(text.replace("name: intersection", f"name: {name}"))

    metrics_port, prom_port = _free_port(), _free_port()
    job = "its-simulator"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]},
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "ITS_SCHEMA_REGISTRY_URL": schema_registry,
        "ITS_SCENARIOS_DIR": str(tmp_path),
        "ITS_DATA_DIR": str(tmp_path / "its"),
        "ITS_LOG_LEVEL": "WARNING",
    }
    sim_cmd = [
        str(Path(sys.executable).parent / "its"),
        "simulate",
        "--scenario",
        name,
        "--duration",
        "120",  # paced by the capture clock: it keeps publishing (and serving /metrics) while we look
        "--fps",
        "5",
        "--metrics-port",
        str(metrics_port),
        "--no-ensure-topics",
    ]
    prom_cmd = [
        prometheus,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--log.level=warn",
    ]
    base = f"http://127.0.0.1:{prom_port}"
    sim = prom = None
    sim_log, prom_log = (tmp_path / "simulate.log").open("wb"), (tmp_path / "prometheus.log").open("wb")
    try:
        sim = subprocess.Popen(sim_cmd, env=env, stdout=sim_log, stderr=subprocess.STDOUT)
        prom = subprocess.Popen(prom_cmd, stdout=prom_log, stderr=subprocess.STDOUT, cwd=tmp_path)
        procs = {"its simulate": sim, "prometheus": prom}

        _wait(
            "Prometheus to be ready",
            lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
            60,
            procs,
        )
        up = _wait(
            f"up{{job={job!r}}} == 1",
            lambda: [r for r in _query(base, f'up{{job="{job}"}}') if r["value"][1] == "1"],
            90,
            procs,
        )
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{metrics_port}"

        # The simulator's records counter, read back through Prometheus (not from /metrics directly).
        expr = f'sum(its_simulator_records_total{{job="{job}"}})'
        value = _wait(
            f"{expr} > 0",
            lambda: [float(r["value"][1]) for r in _query(base, expr) if float(r["value"][1]) > 0],
            90,
            procs,
        )
        assert value[0] > 0
        per_topic = {
            r["metric"]["topic"]: float(r["value"][1]) for r in _query(base, "its_simulator_records_total")
        }
        assert per_topic.get("its.detections.v1", 0) > 0, per_topic

        # The project's rule file, loaded by this Prometheus: every group and alert from the file is listed.
        want = yaml.safe_load(RULES.read_text())
        want_rules = {rule.get("alert") or rule.get("record") for g in want["groups"] for rule in g["rules"]}
        doc = _get_json(f"{base}/api/v1/rules")
        assert doc["status"] == "success", doc
        groups = doc["data"]["groups"]
        assert {g["name"] for g in groups} == {g["name"] for g in want["groups"]}
        got_rules = {rule["name"] for g in groups for rule in g["rules"]}
        assert want_rules and want_rules == got_rules
        assert all(rule["health"] != "err" for g in groups for rule in g["rules"]), groups
        # A rule that reads the scraped component evaluates without error against live data.
        assert _query(base, 'up{job=~"its-.*"} == 0') == []

        # Every PromQL expression of the Grafana dashboards parses and evaluates in this Prometheus.
        dashboards = sorted((REPO / "infra" / "grafana" / "dashboards").glob("*.json"))
        exprs = [
            t["expr"]
            for path in dashboards
            for panel in json.loads(path.read_text())["panels"]
            for t in panel.get("targets", [])
            if "expr" in t
        ]
        assert len(exprs) >= 20
        for expr in exprs:
            plain = expr.replace("$__rate_interval", "1m").replace("$camera", ".*")
            _query(base, plain)  # asserts status == success (a syntax error is HTTP 400)
    finally:
        _stop(sim, "its simulate")
        _stop(prom, "prometheus")
        sim_log.close()
        prom_log.close()
