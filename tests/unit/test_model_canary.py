"""Canary selection: a stable hash of camera_id picks the candidate for the configured share of cameras."""

from __future__ import annotations

import pytest

from processors.inference.registry import canary_bucket, choose, stable_entry
from schemas.records import ModelEntry, ModelStage

pytestmark = pytest.mark.unit


def _entry(version: str, stage: ModelStage, percent: float = 0.0, promoted: int = 0) -> ModelEntry:
    return ModelEntry(
        name="det",
        version=version,
        path=f"/m/{version}.onnx",
        format="yolox",
        input_height=416,
        input_width=416,
        classes=[0, 2],
        sha256="0" * 64,
        size_bytes=1,
        added_ts_ms=1,
        updated_ts_ms=promoted or 1,
        stage=stage,
        canary_percent=percent,
        promoted_ts_ms=promoted,
    )


def test_bucket_is_stable_uniform_and_salted_by_model() -> None:
    cams = [f"cam-{i:05d}" for i in range(20_000)]
    buckets = [canary_bucket(c, "det") for c in cams]
    assert buckets == [canary_bucket(c, "det") for c in cams]  # deterministic (no per-process hash seed)
    assert all(0 <= b < 100 for b in buckets)
    share = sum(b < 10 for b in buckets) / len(buckets)
    assert 0.09 < share < 0.11
    # another model's canary picks a different set of cameras
    other = [canary_bucket(c, "other") < 10 for c in cams]
    overlap = sum(a and b for a, b in zip([b < 10 for b in buckets], other, strict=True)) / len(cams)
    assert overlap < 0.02
    assert canary_bucket("cam-00001", "det") == pytest.approx(canary_bucket("cam-00001", "det"))


def test_choose_routes_the_canary_share_and_grows_monotonically() -> None:
    cams = [f"cam-{i:04d}" for i in range(2_000)]
    entries = {
        ("det", "1"): _entry("1", ModelStage.STABLE, promoted=10),
        ("det", "2"): _entry("2", ModelStage.CANARY, 10.0),
    }
    at10 = {c for c in cams if choose(entries, "det", c).version == "2"}
    assert 0.07 < len(at10) / len(cams) < 0.13
    entries[("det", "2")] = _entry("2", ModelStage.CANARY, 30.0)
    at30 = {c for c in cams if choose(entries, "det", c).version == "2"}
    assert at10 < at30 and 0.26 < len(at30) / len(cams) < 0.34  # raising the share only adds cameras
    entries[("det", "2")] = _entry("2", ModelStage.CANARY, 0.0)
    assert all(choose(entries, "det", c).version == "1" for c in cams)
    assert choose(entries, "unknown", "cam-0001") is None


def test_stable_is_the_latest_promotion() -> None:
    entries = {
        ("det", "1"): _entry("1", ModelStage.STABLE, promoted=10),
        ("det", "2"): _entry("2", ModelStage.STABLE, promoted=20),
        ("det", "3"): _entry("3", ModelStage.RETIRED, promoted=30),
    }
    assert stable_entry(entries, "det").version == "2"
