"""Load generator at full scale: 1,000 simulated cameras x 10 fps of detections (bench; prints figures)."""

from __future__ import annotations

import json
import os

import pytest

from infra.topics import ensure_topics
from its.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.bench]


def test_thousand_cameras_at_10_fps(kafka_broker, schema_registry) -> None:
    from producers.simulator.load import run_load

    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    settings = Settings(kafka_bootstrap=kafka_broker.bootstrap, schema_registry_url=schema_registry)
    seconds = float(os.environ.get("ITS_LOAD_SECONDS", "15"))
    report = run_load(settings, cameras=1000, fps=10.0, duration_s=seconds, scenario="city", register=False)
    print(json.dumps(report.as_dict()))
    assert report.delivery_errors == 0 and report.delivered == report.records == int(seconds * 10) * 1000
    # The target is 10,000 records/s; on a shared 2-core machine allow some slack, never a collapse.
    assert report.records_per_s > 7000, report
