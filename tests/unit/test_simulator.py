"""The traffic simulator: determinism, physics, truth consistency, geometry, noise statistics."""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import fastavro
import numpy as np
import pytest

from producers.simulator import NoiseProfile, apply_noise, simulate
from producers.simulator.geometry import apply_homography, fit_homography, side_of_line_image
from producers.simulator.load import SplicedDetections
from producers.simulator.world import CLASSES
from schemas import codec, contracts
from schemas import records as r
from schemas.boxes import Boxes

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

VIOLATION_TYPES = {
    "RED_LIGHT",
    "STOP_SIGN",
    "SPEEDING",
    "WRONG_WAY",
    "PEDESTRIAN_IN_ROADWAY",
    "LANE_BLOCKAGE",
    "CONGESTION",
}
LENGTH = {v[0]: v[1] for v in CLASSES.values()}


@pytest.fixture(scope="module")
def intersection():
    return simulate("intersection", 0, noise="none")


@pytest.fixture(scope="module")
def clean():
    return simulate("clean", 0, noise="none")


@pytest.fixture(scope="module")
def highway():
    return simulate("highway", 0, noise="none")


def test_same_seed_same_records_other_seed_differs(tmp_path) -> None:
    a = simulate("city", 3, duration_s=20, cameras=2)
    b = simulate("city", 3, duration_s=20, cameras=2)
    c = simulate("city", 4, duration_s=20, cameras=2)
    assert list(a.stream()) == list(b.stream())
    a.write_truth(tmp_path / "a.json")
    b.write_truth(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert [d.boxes for d in a.detections] != [d.boxes for d in c.detections]


def test_records_look_like_edge_detections(intersection) -> None:
    sim = intersection
    assert {d.source for d in sim.detections} == {r.DetectionSource.EDGE}
    assert {d.model_name for d in sim.detections} == {"simulator"}
    assert all(d.track_ids is None for d in sim.detections)
    for cam in sim.cameras:
        seqs = [d.frame_seq for d in sim.detections if d.camera_id == cam.camera_id]
        assert seqs == list(range(len(seqs)))
    stream = list(sim.stream())
    n_cam = len(sim.cameras)
    assert all(isinstance(x, r.Camera) for x in stream[:n_cam])
    ts = [x.ts_ms if isinstance(x, r.SignalPhase) else x.capture_ts_ms for x in stream[n_cam:]]
    assert ts == sorted(ts)
    assert len(sim.signals) > 10 and {s.phase for s in sim.signals} == {
        r.Phase.GREEN,
        r.Phase.AMBER,
        r.Phase.RED,
    }


def test_calibration_homography_round_trip_under_1cm(intersection, highway) -> None:
    for sim in (intersection, highway):
        for cam in sim.cameras:
            cal = cam.scene.calibration
            img = np.array([[p.x, p.y] for p in cal.image_points])
            ground = np.array([[p.x, p.y] for p in cal.ground_points])
            h_ig = fit_homography(img, ground)
            pts = np.random.default_rng(0).uniform(-40, 40, (200, 2)) + (
                0 if "inter" in cam.camera_id else [0, 80]
            )
            h_gi = sim.scenes[cam.camera_id].camera.ground_to_image
            back = apply_homography(h_ig, apply_homography(h_gi, pts))
            assert np.abs(back - pts).max() < 0.01
            # The perfect boxes' bottom-centres land on the true ground positions.
            for t in [t for t in sim.truth.tracks if t.camera_id == cam.camera_id][:30]:
                bc = np.stack([(t.box[:, 0] + t.box[:, 2]) / 2, t.box[:, 3]], axis=1)
                inside = (t.box[:, 0] > 0) & (t.box[:, 2] < 1280)
                err = np.linalg.norm(apply_homography(h_ig, bc[inside]) - t.ground[inside], axis=1)
                assert err.size == 0 or err.max() < 0.01, (t.track_id, err.max())


def test_no_overlap_in_a_lane_and_plausible_speeds(intersection, highway) -> None:
    for sim in (intersection, highway):
        lanes = {(c.camera_id, ln.lane_id): ln for c in sim.cameras for ln in c.scene.lanes}
        per_frame: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
        for t in sim.truth.tracks:
            if t.kind != "vehicle" or t.wrong_way:
                continue
            line = sim.scenes[t.camera_id].lanes[sim.scenes[t.camera_id].lane_index(t.lane_id)].line
            along = (t.ground - line.points[0]) @ line.dirs[0]
            for seq, s in zip(t.frame_seq.tolist(), along.tolist(), strict=True):
                per_frame.setdefault((t.camera_id, t.lane_id, seq), []).append((s, LENGTH[t.class_id]))
            assert (t.speed_kmh >= 0).all()
            limit = lanes[(t.camera_id, t.lane_id)].speed_limit_kmh
            if t.behaviour == "normal":
                assert t.speed_kmh.max() <= limit * 1.06 + 0.5, (t.track_id, t.speed_kmh.max())
        checked = 0
        for items in per_frame.values():
            items.sort()
            for (s0, l0), (s1, l1) in itertools.pairwise(items):
                assert s1 - s0 >= (l0 + l1) / 2 - 1e-6, (s0, s1)
                checked += 1
        assert checked > 1000


def test_true_speeds_match_the_motion_of_the_ground_positions(intersection) -> None:
    """What an analytics stage measures from positions (no noise) is the truth speed, to < 0.1 km/h."""
    worst = 0.0
    for t in intersection.truth.tracks:
        if len(t.ts_ms) < 2:
            continue
        moved = np.linalg.norm(np.diff(t.ground, axis=0), axis=1) / (np.diff(t.ts_ms) / 1000.0) * 3.6
        mean = (t.speed_kmh[1:] + t.speed_kmh[:-1]) / 2  # trapezoid integration between frames
        worst = max(worst, float(np.abs(moved - mean).max()))
    assert worst < 0.1


def test_intersection_has_every_violation_type_planted(intersection) -> None:
    truth = intersection.truth
    assert {v.type for v in truth.violations} == VIOLATION_TYPES
    assert all(v.planted for v in truth.violations), [v for v in truth.violations if not v.planted]
    # Every planted vehicle/pedestrian was spawned and produced its violation, exactly once.
    by_track = Counter((v.camera_id, v.track_id, v.type) for v in truth.violations if v.track_id is not None)
    for p in truth.plants:
        if p["type"] == "CONGESTION":
            continue
        assert p["track_id"] is not None, p
        assert by_track[(p["camera_id"], p["track_id"], p["type"])] == 1, p
    # Vehicles stop at red: every red-light crossing is a planted runner.
    runners = {p["track_id"] for p in truth.plants if p["type"] == "RED_LIGHT"}
    assert {v.track_id for v in truth.violations_of("RED_LIGHT")} == runners


def test_highway_speeders_wrong_way_stopped_vehicle_congestion(highway) -> None:
    truth = highway.truth
    kinds = Counter(v.type for v in truth.violations)
    assert kinds["SPEEDING"] == 3 and kinds["WRONG_WAY"] == 1 and kinds["LANE_BLOCKAGE"] == 1
    assert kinds["CONGESTION"] == 2  # both northbound lanes
    blocked = truth.violations_of("LANE_BLOCKAGE")[0]
    assert blocked.measurements["duration_s"] >= 60
    nb = [m for m in truth.lane_minutes if m.lane_id == "nb1"]
    assert nb[0].mean_speed_kmh > 70 and nb[-1].mean_speed_kmh < 30  # congestion builds
    ww = truth.violations_of("WRONG_WAY")[0]
    ww_dirs = {c.direction for c in truth.crossings if c.track_id == ww.track_id}
    assert ww_dirs == {"southbound"}  # it crosses the northbound line the wrong way


def test_clean_scenario_has_no_violation(clean) -> None:
    assert clean.truth.violations == []
    kinds = {p["type"] for p in clean.truth.plants}
    assert kinds == {"AMBER_STOP", "NEAR_SPEED"}
    assert all(p["track_id"] is not None for p in clean.truth.plants)
    # Near-misses really are near: the amber stopper stops before the line, the near-speeder is fast.
    tracks = {(t.camera_id, t.track_id): t for t in clean.truth.tracks}
    for p in clean.truth.plants:
        t = tracks[(p["camera_id"], p["track_id"])]
        if p["type"] == "NEAR_SPEED":
            assert t.speed_kmh.max() >= p["params"]["speed_kmh"] - 0.5
        else:
            assert t.speed_kmh.min() < 1.0
    peds = [t for t in clean.truth.tracks if t.kind == "pedestrian"]
    assert len(peds) > 5


def test_counts_equal_crossings_and_follow_the_line_convention(intersection) -> None:
    truth = intersection.truth
    assert sum(truth.counts.values()) == len(truth.crossings) > 100
    tracks = {(t.camera_id, t.track_id): t for t in truth.tracks}
    lines = {(c.camera_id, ln.line_id): ln for c in intersection.cameras for ln in c.scene.lines}
    for c in truth.crossings:
        t = tracks[(c.camera_id, c.track_id)]
        line = lines[(c.camera_id, c.line_id)]
        # The frames strictly before and after the crossing moment (a frame may lie exactly on the line).
        k0 = int(np.searchsorted(t.ts_ms, c.exact_ts_ms, side="left")) - 1
        k1 = int(np.searchsorted(t.ts_ms, c.exact_ts_ms, side="right"))
        pick = [k0, k1]
        bc = np.stack([(t.box[pick, 0] + t.box[pick, 2]) / 2, t.box[pick, 3]], axis=1)
        a, b = (np.array([p.x, p.y]) for p in line.points)
        before, after = side_of_line_image(a, b, bc)
        assert before == -after
        assert c.direction == (line.in_direction if after > 0 else line.out_direction)
    dirs = Counter(c.direction for c in truth.crossings)
    assert dirs["inbound"] > 20 and dirs["outbound"] > 20


def test_noise_model_statistics() -> None:
    rng = np.random.default_rng(7)
    n_ids, n_frames = 200, 300
    frames = []
    for f in range(n_frames):
        x = np.arange(n_ids) * 6.0 + f * 0.1
        xyxy = np.stack([x, np.full(n_ids, 300.0), x + 50, np.full(n_ids, 340.0)], axis=1)
        frames.append(Boxes(xyxy, np.full(n_ids, 2), np.ones(n_ids), np.arange(n_ids)))
    noisy = apply_noise(frames, rng, "default", image_size=(1920, 1080))
    seen = np.zeros((n_frames, n_ids), bool)
    fps = 0
    errs = []
    for f, b in enumerate(noisy):
        ids = b.track_id
        fps += int((ids == -1).sum())
        real = ids >= 0
        seen[f, ids[real]] = True
        errs.append(b.xyxy[real, 0] - frames[f].xyxy[ids[real], 0])
    miss = 1 - seen.mean()
    assert 0.085 < miss < 0.115
    missed = ~seen
    p_miss_after_miss = (missed[1:] & missed[:-1]).sum() / missed[:-1].sum()
    assert p_miss_after_miss > 0.5  # dropouts are correlated in time, not independent 10% coin flips
    assert 0.1 < fps / n_frames < 0.3
    sd = np.concatenate(errs).std()
    assert 0.9 < sd < 1.6  # 0.5 px + 2% of 50 px
    classes = np.concatenate([b.class_id[b.track_id >= 0] for b in noisy])
    assert 0.005 < (classes == 7).mean() < 0.04
    perfect = apply_noise(frames[:5], rng, "none")
    assert all(np.array_equal(p.xyxy, f.xyxy) for p, f in zip(perfect, frames[:5], strict=True))
    assert NoiseProfile.none().enabled is False


class _StubSerde:
    class _Ser:
        _header = b"\x00\x00\x00\x00\x07"

    def serializer(self, topic: str) -> _Ser:
        return self._Ser()


def test_spliced_load_records_decode_to_the_right_values() -> None:
    sim = simulate("city", 1, duration_s=2, cameras=1)
    recs = sim.detections[:5]
    spliced = SplicedDetections(_StubSerde(), recs)  # type: ignore[arg-type]
    from producers.simulator.load import _avro_string

    value = spliced.encode(3, _avro_string("load-00042"), 123456, 1_800_000_000_123)
    assert value[:5] == b"\x00\x00\x00\x00\x07"
    decoded = codec.from_avro_function(r.Detections)(
        fastavro.schemaless_reader(io.BytesIO(value[5:]), contracts.parsed("its.Detections"), None)
    )
    want = replace(
        recs[3],
        camera_id="load-00042",
        frame_seq=123456,
        capture_ts_ms=1_800_000_000_123,
        processed_ts_ms=1_800_000_000_123,
    )
    assert decoded == want


def test_truth_json_has_the_documented_shape(tmp_path, intersection) -> None:
    path = intersection.write_truth(tmp_path / "truth.json")
    doc = json.loads(path.read_text())
    assert {"counts", "crossings", "violations", "tracks", "lane_minutes", "direction_convention"} <= set(doc)
    v = doc["violations"][0]
    assert {"type", "camera_id", "track_id", "ts_ms", "lane_id", "measurements"} <= set(v)
    t = doc["tracks"][0]
    assert len(t["ts_ms"]) == len(t["box"]) == len(t["ground"]) == len(t["speed_kmh"])


def test_truth_reads_back_and_matches_event_boxes_to_true_tracks(tmp_path, intersection) -> None:
    truth = intersection.truth
    back = type(truth).read(truth.write(tmp_path / "t.json"))
    assert back.counts == truth.counts and back.violations == truth.violations
    assert len(back.tracks) == len(truth.tracks)
    runner = truth.violations_of("RED_LIGHT")[0]
    track = truth.track(runner.camera_id, runner.track_id)
    k = int(np.searchsorted(track.ts_ms, runner.ts_ms))
    noisy_box = track.box[k] + np.array([2.0, -1.0, 1.5, 2.0])
    assert back.match_box(runner.camera_id, runner.ts_ms, noisy_box) == runner.track_id
    assert back.match_box(runner.camera_id, runner.ts_ms, [0, 0, 3, 3]) is None


def test_noise_model_runs_on_mot_ground_truth() -> None:
    from producers.simulator.noise import read_mot_gt

    gt = REPO.parent / "shared" / "assets" / "mot" / "TUD-Campus" / "gt.txt"
    if not gt.is_file():
        pytest.skip(f"{gt} not present")
    frames, size = read_mot_gt(gt)
    assert len(frames) == 71 and sum(len(f) for f in frames) == 359
    noisy = apply_noise(frames, np.random.default_rng(0), "default", image_size=size)
    assert len(noisy) == len(frames)
    kept = sum(int((b.track_id >= 0).sum()) for b in noisy)
    assert 0.75 * 359 < kept < 0.97 * 359
    assert all(((b.xyxy[:, 2] <= size[0]) & (b.xyxy[:, 3] <= size[1])).all() for b in noisy)
