"""Accuracy of the analytics engine against the simulator's truth (``its eval scenario``).

The simulated stream (camera registrations, signal phases, detections) goes through the same
``Engine`` the processor runs, in process. Our track ids are tied to the simulator's true objects by a
majority vote over the detections each track was matched to (the simulator says which true object
each box came from, -1 for a false positive), so events can be compared with the truth per object:

- counts: per camera, line, direction and class; ``count_error_pct`` is the worst line's sum of
  absolute differences over (direction, class) divided by its true total;
- speed: each true crossing matched to our crossing of the same object, line and direction;
- violations: our event of a type matched one-to-one to a true violation of that type by the same
  object (congestion: the same lane); a second report of the same violation is a false positive.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from processors.analytics.engine import Engine, Output
from processors.analytics.settings import AnalyticsSettings
from schemas import records as r

VIOLATION_TYPES = (
    "RED_LIGHT",
    "STOP_SIGN",
    "SPEEDING",
    "WRONG_WAY",
    "PEDESTRIAN_IN_ROADWAY",
    "LANE_BLOCKAGE",
    "CONGESTION",
)


def run_simulation(sim: Any, settings: AnalyticsSettings | None = None) -> tuple[Output, dict]:
    """Feed a ``producers.simulator.Simulation`` through the engine; (outputs, our id -> truth id)."""
    eng = Engine(settings)
    out = Output()
    votes: dict[tuple[str, int], Counter] = defaultdict(Counter)
    truth_ids = {id(d): t for d, t in zip(sim.detections, sim.detection_truth_ids, strict=True)}
    for rec in sim.stream():
        if isinstance(rec, r.Camera):
            eng.on_camera(rec)
        elif isinstance(rec, r.SignalPhase):
            eng.on_signal(rec)
        else:
            out.extend(eng.on_detections(rec))
            tr = eng.cameras[rec.camera_id].tracker
            matched = (tr["det"] >= 0) & (tr["id"] >= 0)
            if matched.any():
                tids = truth_ids[id(rec)]
                # The engine drops untracked classes before the tracker: map back to record indices.
                kept = np.nonzero(np.isin(np.asarray(rec.class_ids), [0, 1, 2, 3, 5, 7]))[0]
                for our, det in zip(tr["id"][matched].tolist(), tr["det"][matched].tolist(), strict=True):
                    votes[(rec.camera_id, our)][int(tids[kept[det]])] += 1
    out.extend(eng.flush())
    mapping = {k: c.most_common(1)[0][0] for k, c in votes.items()}
    return out, mapping


def _pct(ours: int, truth: int) -> float:
    return 0.0 if truth == 0 and ours == 0 else (100.0 * abs(ours - truth) / truth if truth else 100.0)


def evaluate(sim: Any, settings: AnalyticsSettings | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    out, mapping = run_simulation(sim, settings)
    elapsed = time.perf_counter() - t0
    truth = sim.truth

    def truth_of(e: r.Event) -> int | None:
        return None if e.track_id is None else mapping.get((e.camera_id, e.track_id))

    crossings = [e for e in out.events if e.event_type == r.EventType.LINE_CROSSING]
    ours_counts = Counter((e.camera_id, e.line_id, e.direction, e.class_id) for e in crossings)
    true_counts = truth.counts
    lines: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"truth": 0, "ours": 0, "abs_diff": 0})
    for key in set(ours_counts) | set(true_counts):
        row = lines[(key[0], key[1])]
        row["truth"] += true_counts.get(key, 0)
        row["ours"] += ours_counts.get(key, 0)
        row["abs_diff"] += abs(ours_counts.get(key, 0) - true_counts.get(key, 0))
    per_line = {
        f"{c}/{ln}": {
            **v,
            "error_pct": round(100.0 * v["abs_diff"] / v["truth"], 3)
            if v["truth"]
            else (0.0 if v["ours"] == 0 else 100.0),
        }
        for (c, ln), v in sorted(lines.items())
    }
    count_error = max((v["error_pct"] for v in per_line.values()), default=0.0)

    # Speeds at crossings: same true object, line and direction.
    ours_by = defaultdict(list)
    for e in crossings:
        if "speed_kmh" in e.measurements:
            ours_by[(e.camera_id, e.line_id, e.direction, truth_of(e))].append(e)
    errors = []
    for c in truth.crossings:
        cands = ours_by.get((c.camera_id, c.line_id, c.direction, c.track_id))
        if cands:
            e = min(cands, key=lambda x: abs(x.ts_ms - c.exact_ts_ms))
            if abs(e.ts_ms - c.exact_ts_ms) <= 2000:
                errors.append(abs(e.measurements["speed_kmh"] - c.speed_kmh))
    speed_mae = round(float(np.mean(errors)), 3) if errors else None

    violations: dict[str, dict[str, Any]] = {}
    for vt in VIOLATION_TYPES:
        true_v = [v for v in truth.violations if v.type == vt]
        ours_v = [e for e in out.events if e.event_type.value == vt]
        used: set[int] = set()
        tp = 0
        for e in sorted(ours_v, key=lambda x: x.ts_ms):
            for i, v in enumerate(true_v):
                if i in used or v.camera_id != e.camera_id:
                    continue
                if vt == "CONGESTION":
                    same = e.lane_id is None or e.lane_id == v.lane_id or e.lane_id in v.lane_ids
                else:
                    same = truth_of(e) == v.track_id
                if same:
                    used.add(i)
                    tp += 1
                    break
        violations[vt] = {
            "planted": len(true_v),
            "reported": len(ours_v),
            "matched": tp,
            "precision": round(tp / len(ours_v), 3) if ours_v else (1.0 if not true_v else 0.0),
            "recall": round(tp / len(true_v), 3) if true_v else 1.0,
        }
    frames = len(sim.detections)
    stats_1m = [s for s in out.stats if s.window_s == 60]
    return {
        "scenario": sim.scenario,
        "seed": sim.seed,
        "cameras": len(sim.cameras),
        "frames": frames,
        "count_error_pct": round(count_error, 3),
        "counts_total": {"truth": sum(true_counts.values()), "ours": sum(ours_counts.values())},
        "speed_mae_kmh": speed_mae,
        "speed_matched": len(errors),
        "violations": violations,
        "false_violations": sum(v["reported"] - v["matched"] for v in violations.values()),
        "per_line": per_line,
        "events": len(out.events),
        "alerts": len(out.alerts),
        "traffic_stats": {
            "windows": len(out.stats),
            "one_minute": len(stats_1m),
            "worst_los": max((s.level_of_service.value for s in stats_1m), default=None),
        },
        "frames_per_s": round(frames / elapsed, 1) if elapsed else None,
    }


def evaluate_scenario(
    scenario: str, seed: int = 0, noise: str = "default", **sim_kwargs: Any
) -> dict[str, Any]:
    from producers.simulator import simulate

    sim = simulate(scenario, seed=seed, noise=noise, **sim_kwargs)
    result = evaluate(sim)
    result["noise"] = noise
    return result
