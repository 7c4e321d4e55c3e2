"""The compose file and Dockerfile are consistent: every service healthy-gated, every dependency defined."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_dependency_is_a_service_with_a_healthcheck() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
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


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_config_accepts_the_file() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
