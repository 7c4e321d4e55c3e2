"""Prometheus config and alert rules: promtool validates both and runs the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PROM = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `apt-get install prometheus` (make setup does it when run as root)"
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=PROM, timeout=120)


def test_config_and_rules_are_valid() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "rules/its.rules.yml")):
        out = _promtool(*args)
        assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_unit_tests_pass() -> None:
    out = _promtool("test", "rules", "tests/its.rules.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_rule_is_unit_tested() -> None:
    import yaml

    rules = yaml.safe_load((PROM / "rules" / "its.rules.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROM / "tests" / "its.rules.test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])}
    assert names == tested, f"untested rules: {names - tested}"
