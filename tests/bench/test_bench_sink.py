"""``its bench sink --json`` runs end to end (real broker, registry, embedded ClickHouse) and prints the
agreed JSON shape: the sink's rows/s next to a plain bulk insert of the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]


def test_sink_bench_reports_ours_next_to_the_bulk_insert_ceiling(
    kafka_broker, schema_registry, tmp_path
) -> None:
    env = {
        **os.environ,
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "ITS_SCHEMA_REGISTRY_URL": schema_registry,
        "ITS_SINK__METRICS_PORT": "0",
        "ITS_LOG_LEVEL": "WARNING",
    }
    its = str(Path(sys.executable).with_name("its"))
    done = subprocess.run(
        [its, "bench", "sink", "--json", "--records", "20000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))
    assert report["bench"] == "sink"
    cases = {c["case"]: c for c in report["cases"]}
    assert set(cases) == {"detections into embedded chdb", "events into embedded chdb"}
    for case in cases.values():
        assert case["unit"] == "rows/s" and case["ours"] > 0 and case["peer"] > 0
        assert case["ratio"] == pytest.approx(case["ours"] / case["peer"], rel=1e-2)
