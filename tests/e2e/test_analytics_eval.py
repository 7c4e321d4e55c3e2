"""Acceptance of the analytics engine on simulated scenarios, read from ``its eval scenario``'s figures.

Targets (issue 5): counts exact with perfect detections and within 2 % with the default noise model;
speed MAE <= 2 km/h (perfect) and <= 5 km/h (noise); every planted violation reported exactly once;
no violation on the clean scenario. In process, no broker.
"""

from __future__ import annotations

import json
from functools import cache

import pytest
from typer.testing import CliRunner

from its.cli import app
from processors.analytics.evaluate import VIOLATION_TYPES, evaluate_scenario

pytestmark = pytest.mark.e2e


@cache
def result(scenario: str, noise: str) -> dict:
    return evaluate_scenario(scenario, seed=0, noise=noise)


@pytest.mark.parametrize("scenario", ["intersection", "highway"])
def test_perfect_detections(scenario: str) -> None:
    res = result(scenario, "none")
    assert res["count_error_pct"] == 0.0, res["per_line"]
    assert res["speed_mae_kmh"] is not None and res["speed_mae_kmh"] <= 2.0
    for name, v in res["violations"].items():
        assert v["reported"] == v["matched"] == v["planted"], (name, v)


@pytest.mark.parametrize("scenario", ["intersection", "highway"])
def test_default_noise(scenario: str) -> None:
    res = result(scenario, "default")
    assert res["count_error_pct"] <= 2.0, res["per_line"]
    assert res["speed_mae_kmh"] <= 5.0
    for name, v in res["violations"].items():
        assert v["reported"] == v["matched"] == v["planted"], (name, v)  # each planted one reported once


def test_every_violation_type_is_planted_in_intersection() -> None:
    res = result("intersection", "none")
    assert {k for k, v in res["violations"].items() if v["planted"]} == set(VIOLATION_TYPES)


@pytest.mark.parametrize("noise", ["none", "default"])
def test_clean_scenario_has_no_violation(noise: str) -> None:
    res = result("clean", noise)
    assert res["false_violations"] == 0, res["violations"]
    assert all(v["reported"] == 0 for v in res["violations"].values())
    assert res["count_error_pct"] <= (0.0 if noise == "none" else 2.0), res["per_line"]


def test_cli_prints_one_json_object() -> None:
    out = CliRunner().invoke(
        app,
        [
            "eval",
            "scenario",
            "--scenario",
            "clean",
            "--seed",
            "0",
            "--noise",
            "none",
            "--duration-s",
            "60",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert {"count_error_pct", "speed_mae_kmh", "violations"} <= set(doc)
    assert set(doc["violations"]["SPEEDING"]) >= {"precision", "recall", "planted", "reported"}
