"""``its bench inference`` runs on the real models and prints the agreed JSON shape."""

from __future__ import annotations

import json

import pytest

from its.benchmarks import inference
from its.settings import Settings

pytestmark = pytest.mark.bench


def test_inference_bench_reports_batches_next_to_the_naive_loop() -> None:
    report = inference.run(Settings().assets_path, frames=8, batches=(1, 8)).as_dict()
    print(json.dumps(report, indent=1))
    assert report["bench"] == "inference" and report["machine"]["cores"]
    cases = report["cases"]
    for model in inference.MODELS:
        for batch in (1, 8):
            mine = {c["metric"]: c for c in cases if c["case"] == f"{model} batch {batch}"}
            assert set(mine) == {"throughput", "latency p50", "latency p99"}
            assert mine["throughput"]["ours"] > 0 and mine["throughput"]["peer"] > 0
            assert mine["throughput"]["ratio"] == pytest.approx(
                mine["throughput"]["ours"] / mine["throughput"]["peer"], rel=1e-2
            )
            assert mine["latency p99"]["ours"] >= mine["latency p50"]["ours"] > 0
        (peer,) = [c for c in cases if c["case"] == f"{model} best batch"]
        # ultralytics needs torch, which this project does not install: null with the reason
        assert (peer["peer"] is None) == ("not installable" in peer["peer_name"])
