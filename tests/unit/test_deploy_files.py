"""Compose file, its Prometheus config and Dockerfile: consistent, and accepted by Debian's tools."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
# Compose service -> (the `its` command it runs, the metrics port Prometheus scrapes, the job name).
COMPONENTS = {
    "edge": ("edge run", 9101, "its-edge"),
    "inference": ("process inference", 9102, "its-inference"),
    "analytics": ("process analytics", 9103, "its-analytics"),
    "sink-clickhouse": ("sink clickhouse", 9104, "its-sink"),
    "sink-webhook": ("sink webhook", 9105, "its-webhook"),
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_dependency_is_a_service_with_a_healthcheck() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if dep == "init":  # the one-shot job (topics + migrations) must have finished, not be healthy
                assert cond == {"condition": "service_completed_successfully"}
                continue
            assert cond == {"condition": "service_healthy"}
            assert "healthcheck" in services[dep], f"{dep} is waited on but has no healthcheck"


def test_components_point_at_the_compose_services() -> None:
    init = _compose()["services"]["init"]
    env = init["environment"]
    assert env["ITS_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["ITS_SCHEMA_REGISTRY_URL"].startswith("http://schema-registry:")
    assert (
        env["ITS_CLICKHOUSE_URL"].startswith("http://") and "@clickhouse:8123/" in env["ITS_CLICKHOUSE_URL"]
    )


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for package in ("its", "schemas", "producers", "processors", "connectors", "infra"):
        assert f"COPY {package} {package}" in text
    # Numeric user (Kubernetes runAsNonRoot can verify it; infra/k8s runs as 10001) and reachable /metrics.
    assert re.search(r"^USER 10001$", text, re.M) and "--uid 10001" in text
    assert "ITS_METRICS_HOST=0.0.0.0" in text
    assert "curl" in text  # the compose health checks curl /healthz


def _command(svc: dict) -> str:
    cmd = svc.get("command") or ""
    return " ".join(cmd) if isinstance(cmd, list) else " ".join(cmd.split())


def test_every_component_runs_from_the_one_image_with_healthcheck_and_metrics_port() -> None:
    services = _compose()["services"]
    for name, (command, port, _job) in COMPONENTS.items():
        svc = services[name]
        assert svc["image"] == "its-camera-ai:latest" and svc["build"] == ".", name
        assert _command(svc).startswith(command), f"{name} runs {_command(svc)!r}"
        env = svc["environment"]
        assert env["ITS_METRICS_HOST"] == "0.0.0.0", f"{name}: /metrics must be reachable from Prometheus"
        assert env["ITS_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert svc["restart"] == "unless-stopped"
        test = " ".join(svc["healthcheck"]["test"])
        assert f"http://localhost:{port}/healthz" in test, f"{name}: {test}"
        # The port the health check reads is the one the command (or its env setting) serves.
        served = re.search(r"--metrics-port[ =](\d+)", _command(svc))
        served_port = int(served.group(1)) if served else int(env.get("ITS_SINK__METRICS_PORT", 0))
        assert served_port == port, f"{name} serves /metrics on {served_port}, checked on {port}"
    assert "/healthz" not in " ".join(services["init"].get("healthcheck", {}).get("test", []))
    for name in ("prometheus", "grafana", "kafka", "clickhouse", "schema-registry"):
        assert services[name]["healthcheck"]["test"], name


def test_compose_prometheus_scrapes_every_component_by_service_name() -> None:
    compose = _compose()
    prom = compose["services"]["prometheus"]
    assert "./infra/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in prom["command"]
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.compose.yml").read_text())
    assert config["rule_files"] == ["rules/its.rules.yml"]
    assert (ROOT / "infra" / "prometheus" / "rules" / "its.rules.yml").is_file()
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    for name, (_cmd, port, job) in COMPONENTS.items():
        assert jobs[job] == [f"{name}:{port}"], job
    # The loopback config scrapes the same jobs on the same ports.
    local = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    local_jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in local["scrape_configs"]}
    for _name, (_cmd, port, job) in COMPONENTS.items():
        assert local_jobs[job] == [f"127.0.0.1:{port}"], job


def test_compose_grafana_mounts_provisioning_and_dashboards() -> None:
    grafana = _compose()["services"]["grafana"]
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./infra/grafana/dashboards:/var/lib/grafana/dashboards/its:ro" in grafana["volumes"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    provisioning = (ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "its.yml").read_text()
    for var in set(re.findall(r"\$\{([A-Z_]+)\}", provisioning)):
        assert var in grafana["environment"], f"the datasource file reads ${{{var}}}, compose does not set it"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "infra" / "grafana" / "dashboards" / Path(home).name).is_file()


def test_service_binds_the_metrics_host_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry

    from its.service import Service

    monkeypatch.setenv("ITS_METRICS_HOST", "0.0.0.0")
    svc = Service("t", registry=CollectorRegistry(), handle_signals=False)
    try:
        assert svc._server.server_address[0] == "0.0.0.0"
    finally:
        svc._server.server_close()
    monkeypatch.delenv("ITS_METRICS_HOST")
    svc = Service("t", registry=CollectorRegistry(), handle_signals=False)
    try:
        assert svc._server.server_address[0] == "127.0.0.1"
    finally:
        svc._server.server_close()


def test_docker_compose_config_accepts_the_file() -> None:
    # .ci/run installs Debian's docker-compose; a skip here would hide a broken compose file.
    assert shutil.which("docker-compose"), "docker-compose is missing: sudo apt-get install docker-compose"
    for profile in ([], ["--profile", "webhook"]):
        out = subprocess.run(
            ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: sudo apt-get install prometheus"
    out = subprocess.run(
        [promtool, "check", "config", str(ROOT / "infra" / "prometheus" / "prometheus.compose.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
