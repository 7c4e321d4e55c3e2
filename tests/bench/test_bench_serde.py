"""``its bench serde`` runs end to end against the real registry and prints the agreed JSON shape."""

from __future__ import annotations

import json

import pytest

from its.benchmarks import serde

pytestmark = pytest.mark.bench


def test_serde_bench_reports_ours_next_to_peer(schema_registry, capsys) -> None:
    report = serde.run(schema_registry, records=2_000).as_dict()
    print(json.dumps(report, indent=1))
    assert report["bench"] == "serde" and report["machine"]["cores"]
    cases = {c["case"]: c for c in report["cases"]}
    assert set(cases) == {
        "serialize Detections", "deserialize Detections", "serialize Event", "deserialize Event",
    }  # fmt: skip
    for case in cases.values():
        assert case["ours"] > 0 and case["peer"] > 0
        assert case["ratio"] == pytest.approx(case["ours"] / case["peer"], rel=1e-2)
        assert case["peer_name"].startswith("confluent-kafka")
