"""Tracking benchmarks next to trackers' ByteTrack (the ``bench`` extra): quality on TUD-Campus with
noisy detections made from its ground truth, and frames/s per core at 20 objects a frame."""

from __future__ import annotations

import json

import pytest

from its.benchmarks import tracking
from its.settings import get_settings

pytestmark = pytest.mark.bench


def test_quality_on_tud_campus_at_least_the_peer() -> None:
    report = tracking.quality(get_settings().assets_path / "mot" / "TUD-Campus")
    print(json.dumps(report.as_dict()))
    by = {c.metric: c for c in report.cases}
    for metric in ("MOTA", "IDF1", "HOTA"):
        assert by[metric].peer is not None, by[metric].peer_name  # trackers missing: pip install -e .[bench]
        assert by[metric].ours >= by[metric].peer, (metric, by[metric].ours, by[metric].peer)
    assert by["MOTA"].ours > 0.7


def test_throughput_at_20_objects_per_frame() -> None:
    report = tracking.throughput(frames=1000)
    print(json.dumps(report.as_dict()))
    full, alone = report.cases
    # Figures are printed and compared, not gated: timings on a shared CI machine would make a flaky gate.
    for case in (full, alone):
        assert case.peer is not None, case.peer_name
        assert case.ours > 0 and case.peer > 0 and case.unit == "frames/s"
        assert case.ratio == pytest.approx(case.ours / case.peer, rel=1e-2)
