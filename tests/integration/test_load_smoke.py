"""``its load run`` at smoke scale: 20 cameras x 10 fps for 10 s through the real analytics process
and the real ClickHouse sink process, on the session broker and registry."""

from __future__ import annotations

import json

import pytest

from its.loadtest import LoadOptions, run_loadtest
from its.settings import Settings
from schemas import topics as t


@pytest.mark.integration
def test_load_smoke_every_stage_consumes_everything(
    kafka_settings: Settings, schema_registry: str, tmp_path
) -> None:
    settings = kafka_settings.model_copy(update={"schema_registry_url": schema_registry})
    opts = LoadOptions(
        cameras=20,
        fps=10.0,
        duration_s=10.0,
        sample_s=1.0,
        drain_s=90.0,
        profile_s=0.0,
        work_dir=tmp_path / "load",
    )
    lines: list[str] = []
    result = json.loads(json.dumps(run_loadtest(settings, opts, say=lines.append)))
    print("phases (s):", result["phases_s"], "load average:", result["machine"])  # shown with -s

    for key in ("config", "machine", "producer", "stages", "processes", "latency", "metrics", "timeline",
                "lag_bounded", "below_offered_rate", "drained", "produced", "exit_codes"):  # fmt: skip
        assert key in result, key
    assert result["producer"]["delivery_errors"] == 0
    produced = result["produced"]
    assert produced == result["producer"]["records"] == 20 * 10 * 10

    # Every stage consumed everything produced, and its lag went back to 0.
    assert result["drained"], result["timeline"][-3:]
    for stage in ("analytics", "sink"):
        v = result["stages"][stage]
        assert v["consumed"] == produced, (stage, v)
        assert v["lag_final"] == 0, (stage, v)
        for field in ("records_per_s", "records_per_s_second_half", "lag_max", "lag_slope_per_s", "bounded",
                      "holds_offered_rate", "ceiling_records_per_s"):  # fmt: skip
            assert field in v, (stage, field)
    # The load was seen in flight: some reading during the load had records not yet consumed.
    assert max(s["lag"]["analytics"] for s in result["timeline"]) > 0
    assert result["metrics"]["analytics_records_in"] >= produced

    # ClickHouse holds every detection once, and every event analytics published (no transaction aborted).
    rows = result["latency"]["clickhouse_rows"]
    assert result["warmup"] == {
        "records": 20,
        "analytics_s": result["warmup"]["analytics_s"],
        "complete": True,
    }
    assert rows["detections"] == produced + 20  # the warm-up's one frame per camera, then the load
    assert result["metrics"]["analytics_transactions"]["aborted"] == 0
    assert rows["events"] == result["metrics"]["analytics_out"][t.EVENTS] > 0
    det = result["latency"]["detections (load -> sink)"]
    assert det["rows"] == produced + 20 and 0 <= det["p50_ms"] <= det["p99_ms"]

    # Memory of each process, and a clean exit of the components.
    for name in ("analytics-0", "sink", "load generator (this process)"):
        assert result["processes"][name]["rss_mb_max"] > 10, name
    assert set(result["exit_codes"].values()) == {0}, result["exit_codes"]
    assert result["work_dir"] is None and not (tmp_path / "load").exists()


@pytest.mark.unit
def test_verdict_names_the_stage_that_falls_behind_with_its_ceiling() -> None:
    from its.loadtest import Sample, lag_of, stage_verdict

    # 100 s at 1,000 records/s offered: "fast" keeps up (lag ~ one batch), "slow" commits 400/s.
    samples = [
        Sample(
            float(k),
            1000 * k,
            {"fast": max(1000 * k - 300, 0), "slow": 400 * k},
            {"fast": min(300, 1000 * k), "slow": 600 * k},
            {},
            {},
            0.0,
        )
        for k in range(0, 101, 5)
    ]
    fast = stage_verdict(samples, "fast", 100.0, 1000.0)
    slow = stage_verdict(samples, "slow", 100.0, 1000.0)
    assert fast["bounded"] and fast["holds_offered_rate"] and fast["ceiling_records_per_s"] is None
    assert not slow["bounded"] and not slow["holds_offered_rate"]
    assert slow["ceiling_records_per_s"] == pytest.approx(400.0) and slow["lag_slope_per_s"] == pytest.approx(
        600.0
    )
    # A transaction's trailing commit marker is not a record behind; a detection is.
    ends = {(t.EVENTS, 0): 10, (t.DETECTIONS, 0): 10}
    assert lag_of(ends, {(t.EVENTS, 0): 9, (t.DETECTIONS, 0): 9}, (t.EVENTS, t.DETECTIONS)) == 1
