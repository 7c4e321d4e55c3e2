"""The analytics engine on small hand-built scenes: scene validation, tracking, crossings, speed,
rules, windows, alerts and snapshots. Ground truth here is the motion the test itself scripts."""

from __future__ import annotations

import numpy as np
import pytest

from processors.analytics.alerts import AlertManager, AlertPolicy
from processors.analytics.engine import CameraEngine, Engine, Output
from processors.analytics.geometry import apply_homography, fit_homography
from processors.analytics.scene import SceneError, SceneModel
from processors.analytics.settings import AnalyticsSettings
from processors.analytics.tracker import Tracker
from schemas import records as r

pytestmark = pytest.mark.unit
P = r.Point
T0 = 1_800_000_000_000 - (1_800_000_000_000 % 60_000)  # minute aligned
PX_PER_M = 10.0

# A road along x in a 1000 x 600 image at 10 px/m: lane "east" y 200..300 px, lane "west" y 300..400 px.
# A perspective calibration for the speed test is built separately.


def _cal_topdown() -> r.Calibration:
    img = [P(0, 0), P(1000, 0), P(1000, 600), P(0, 600)]
    return r.Calibration(img, [P(p.x / PX_PER_M, p.y / PX_PER_M) for p in img])


def camera(*, lines=None, zones=None, stop_lines=None, rules=None, limit=50.0, cal=None) -> r.Camera:
    lanes = [
        r.Lane("east", [P(0, 200), P(1000, 200), P(1000, 300), P(0, 300)], [P(0, 250), P(1000, 250)], limit),
        r.Lane("west", [P(0, 300), P(1000, 300), P(1000, 400), P(0, 400)], [P(1000, 350), P(0, 350)], limit),
    ]
    if lines is None:
        lines = [r.CountingLine("L1", [P(500, 150), P(500, 450)], "westbound", "eastbound")]
    scene = r.SceneConfig(lines, zones or [], lanes, stop_lines or [], cal or _cal_topdown(), rules or [])
    return r.Camera("cam", "cam", r.Location(1.0, 2.0), scene, T0)


class Script:
    """Objects moving in ground metres; frames rendered as Detections at ``fps``."""

    def __init__(self, fps: float = 10.0, h_g2i: np.ndarray | None = None) -> None:
        self.fps = fps
        self.h = h_g2i if h_g2i is not None else np.diag([PX_PER_M, PX_PER_M, 1.0])
        self.objects: list[tuple[int, callable, float, float, float]] = []  # cls, pos(t), t0, t1, length

    def add(self, cls: int, pos, t0: float, t1: float, size=(4.5, 1.8)) -> None:
        self.objects.append((cls, pos, t0, t1, size))

    def frames(self, duration_s: float, *, jitter: float = 0.0, drop=(), seed: int = 0) -> list[r.Detections]:
        rng = np.random.default_rng(seed)
        out = []
        n = int(duration_s * self.fps)
        for f in range(n):
            if f in drop:
                continue
            t = f / self.fps
            boxes, cls, scores = [], [], []
            for c, pos, t0, t1, (length, _width) in self.objects:
                if not t0 <= t <= t1:
                    continue
                gx, gy = pos(t)
                # Bottom centre at the ground point; box size from the object's extent at that point.
                bc = apply_homography(self.h, np.array([[gx, gy]]))[0]
                w = length * PX_PER_M if c != 0 else 6.0
                h = 15.0 if c != 0 else 17.0
                bx = bc + rng.normal(0, jitter, 2)
                boxes += [bx[0] - w / 2, bx[1] - h, bx[0] + w / 2, bx[1]]
                cls.append(c)
                scores.append(0.9)
            out.append(
                r.Detections(
                    "cam",
                    f,
                    T0 + round(t * 1000),
                    1000,
                    600,
                    "sim",
                    "1",
                    boxes,
                    cls,
                    scores,
                    frame_ref=r.FrameRef("its.frames.v1", 0, f),
                )
            )
        return out


def run(cam: r.Camera, frames, signals=(), settings=None) -> Output:
    eng = Engine(settings or AnalyticsSettings())
    eng.on_camera(cam)
    out = Output()
    pending = sorted(signals, key=lambda x: x.ts_ms)  # signals go in before the first frame at or after them
    for d in frames:
        while pending and pending[0].ts_ms <= d.capture_ts_ms:
            eng.on_signal(pending.pop(0))
        out.extend(eng.on_detections(d))
    out.extend(eng.flush())
    return out


def of(out: Output, et: r.EventType) -> list[r.Event]:
    return [e for e in out.events if e.event_type == et]


def east(v_ms: float, y: float = 27.0, x0: float = 0.0):
    return lambda t: (x0 + v_ms * t, y)


# --- scene validation ----------------------------------------------------------------------------


def test_scene_builds_and_flags_mpp_as_approximate() -> None:
    assert not SceneModel(camera()).approximate
    approx = SceneModel(camera(cal=r.Calibration(metres_per_pixel=0.1)))
    assert approx.approximate
    np.testing.assert_allclose(approx.to_ground(np.array([[100.0, 50.0]])), [[10.0, 5.0]])


def test_self_intersecting_polygon_is_rejected() -> None:
    bowtie = [P(0, 0), P(100, 100), P(100, 0), P(0, 100)]
    with pytest.raises(SceneError, match=r"zone 'z1'.*self-intersecting"):
        SceneModel(camera(zones=[r.Zone("z1", r.ZoneKind.CROSSWALK, bowtie)]))


def test_degenerate_homography_is_rejected() -> None:
    collinear = r.Calibration([P(0, 0), P(1, 1), P(2, 2), P(3, 3)], [P(0, 0), P(1, 0), P(2, 0), P(3, 0)])
    with pytest.raises(SceneError, match="degenerate homography"):
        SceneModel(camera(cal=collinear))


def test_unknown_lane_in_rule_is_rejected() -> None:
    with pytest.raises(SceneError, match=r"unknown lane.*'north'"):
        SceneModel(camera(rules=[r.RuleConfig("speeding", lane_ids=["north"])]))
    with pytest.raises(SceneError, match="unknown rule"):
        SceneModel(camera(rules=[r.RuleConfig("jaywalking_cat")]))


def test_homography_fit_recovers_a_perspective_map() -> None:
    h = np.array([[12.0, 3.0, 100.0], [0.5, 8.0, 50.0], [0.0005, 0.004, 1.0]])
    ground = np.array([[0, 0], [40, 0], [40, 60], [0, 60], [20, 30.0]])
    fitted = fit_homography(ground, apply_homography(h, ground))
    np.testing.assert_allclose(
        apply_homography(fitted, np.array([[13.0, 7.0]])),
        apply_homography(h, np.array([[13.0, 7.0]])),
        atol=1e-6,
    )


# --- tracking ------------------------------------------------------------------------------------


def test_tracker_keeps_ids_through_skipped_frames_by_time() -> None:
    tr = Tracker()
    ids = []
    for t_ms in [0, 100, 200, 300, 800, 900, 1000]:  # 0.5 s gap: the edge sampler skipped frames
        x = 100 + 150 * t_ms / 1000  # 150 px/s
        dead = tr.update(t_ms, np.array([[x - 20, 100, x + 20, 130.0]]), np.array([0.9]), np.array([2]))
        tr.keep(~dead)
        ids.append(int(tr["id"][tr["det"] >= 0][0]))
    assert ids[0] == -1  # tentative on its first frame
    assert len(set(ids[1:])) == 1


def test_tracker_two_stage_revives_with_low_score_box() -> None:
    tr = Tracker()
    for t_ms, score in [(0, 0.9), (100, 0.9), (200, 0.9), (300, 0.3), (400, 0.9)]:
        x = 100 + 10 * t_ms / 100
        dead = tr.update(t_ms, np.array([[x, 100, x + 40, 130.0]]), np.array([score]), np.array([2]))
        tr.keep(~dead)
        assert (tr["det"] >= 0).sum() == 1, f"box at {t_ms} ms left unmatched"
    assert len(tr) == 1 and tr["id"][0] == 1


def test_persons_never_take_over_vehicle_tracks() -> None:
    tr = Tracker()
    for t_ms in (0, 100, 200):
        tr.update(t_ms, np.array([[100, 100, 140, 130.0]]), np.array([0.9]), np.array([2]))
    tr.update(300, np.array([[100, 100, 140, 130.0]]), np.array([0.9]), np.array([0]))
    assert set(tr.cls.tolist()) == {0, 2}


# --- crossings and speed -------------------------------------------------------------------------


def test_counts_both_directions_once_despite_jitter() -> None:
    s = Script()
    s.add(2, east(10.0, y=25.0), 0.0, 9.0)  # eastbound across x = 50 m
    s.add(2, lambda t: (100 - 12.0 * (t - 1), 35.0), 1.0, 9.0)  # westbound
    # A car creeping along the line with 3 px jitter: sits on the line for seconds.
    s.add(7, lambda t: (50.0 + 0.02 * np.sin(t * 7), 29.0), 0.0, 9.0)
    out = run(camera(), s.frames(9.0, jitter=3.0))
    cross = of(out, r.EventType.LINE_CROSSING)
    assert sorted(e.direction for e in cross) == ["eastbound", "westbound"]
    assert all(e.class_id == 2 for e in cross)


def test_speed_from_the_homography_under_perspective() -> None:
    # Ground -> image with strong perspective: the far end of the road is compressed ~3x.
    h = np.array([[10.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.012, 1.0]])
    ground_pts = np.array([[0, 0], [100, 0], [100, 60], [0, 60.0]])
    img_pts = apply_homography(h, ground_pts)
    cal = r.Calibration([P(*p) for p in img_pts], [P(*p) for p in ground_pts])
    mid = apply_homography(h, np.array([[50.0, 10.0], [50.0, 50.0]]))
    lane_img = apply_homography(h, np.array([[0, 0], [100, 0], [100, 60], [0, 60.0]]))
    lanes_cam = camera(cal=cal, lines=[r.CountingLine("L1", [P(*mid[0]), P(*mid[1])], "a", "b")])
    lanes_cam.scene.lanes = [
        r.Lane(
            "east",
            [P(*p) for p in lane_img],
            [P(*p) for p in apply_homography(h, np.array([[0, 30], [100, 30.0]]))],
            50.0,
        )
    ]
    s = Script(h_g2i=h)
    v = 54 / 3.6  # 54 km/h
    for k, y in enumerate((15.0, 45.0)):  # near and far: same ground speed, different pixel speed
        s.add(2, east(v, y=y, x0=-5.0 - 20 * k), 0.0, 12.0)
    out = run(lanes_cam, s.frames(12.0, jitter=0.5))
    speeds = [e.measurements["speed_kmh"] for e in of(out, r.EventType.LINE_CROSSING)]
    assert len(speeds) == 2
    np.testing.assert_allclose(speeds, [54.0, 54.0], atol=1.5)


# --- rules ---------------------------------------------------------------------------------------


def _signalised() -> r.Camera:
    stop = r.StopLine("stop-east", [P(600, 200), P(600, 300)], signal_id="sig-1", lane_ids=["east"])
    return camera(lines=[], stop_lines=[stop])


def _sig(ts_s: float, phase: r.Phase) -> r.SignalPhase:
    return r.SignalPhase("cam", "sig-1", phase, T0 + int(ts_s * 1000))


def test_red_light_after_grace_is_a_violation_inside_grace_is_not() -> None:
    s = Script()
    s.add(2, east(12.0, x0=0.0), 0.0, 8.0)  # crosses x = 60 m at 5.0 s
    red_long = run(_signalised(), s.frames(8.0), [_sig(0, r.Phase.GREEN), _sig(3.0, r.Phase.RED)])
    ev = of(red_long, r.EventType.RED_LIGHT)
    assert len(ev) == 1
    assert ev[0].severity == r.Severity.HIGH and ev[0].signal_phase == "RED"
    assert abs(ev[0].ts_ms - (T0 + 5000)) <= 100
    assert ev[0].measurements["red_elapsed_s"] == pytest.approx(2.0, abs=0.15)
    assert ev[0].evidence.frame_ref is not None and len(ev[0].evidence.box) == 4
    in_grace = run(_signalised(), s.frames(8.0), [_sig(0, r.Phase.GREEN), _sig(4.8, r.Phase.RED)])
    assert not of(in_grace, r.EventType.RED_LIGHT)
    green = run(_signalised(), s.frames(8.0), [_sig(0, r.Phase.GREEN)])
    assert not of(green, r.EventType.RED_LIGHT)


def test_speeding_needs_sustained_excess() -> None:
    s = Script()
    s.add(2, east(80 / 3.6), 0.0, 4.0)  # 80 km/h in a 50 zone, 4 s
    s.add(2, lambda t: (10 + (60 if 2.0 < t < 2.5 else 40) / 3.6 * t, 35.0), 0.0, 8.0)  # a 0.5 s spike
    out = run(camera(lines=[]), s.frames(8.0))
    ev = of(out, r.EventType.SPEEDING)
    assert len(ev) == 1 and ev[0].lane_id == "east"
    assert ev[0].measurements["speed_kmh"] == pytest.approx(80, abs=3)
    assert ev[0].measurements["limit_kmh"] == 50


def test_wrong_way_driver_in_a_lane() -> None:
    s = Script()
    s.add(2, lambda t: (90 - 15 * t, 27.0), 0.0, 5.0)  # westwards in the eastbound lane
    s.add(2, east(15.0, y=25.0), 0.0, 5.0)
    ev = of(run(camera(lines=[]), s.frames(5.0)), r.EventType.WRONG_WAY)
    assert len(ev) == 1 and ev[0].lane_id == "east" and ev[0].severity == r.Severity.CRITICAL


def test_pedestrian_in_roadway_but_not_on_crosswalk() -> None:
    cw = r.Zone("cw", r.ZoneKind.CROSSWALK, [P(700, 150), P(760, 150), P(760, 450), P(700, 450)])
    s = Script()
    s.add(0, lambda t: (73.0, 15 + 1.4 * t), 0.0, 15.0)  # on the crosswalk across both lanes
    s.add(0, lambda t: (30.0, 15 + 1.4 * t), 0.0, 15.0)  # jaywalking
    ev = of(run(camera(lines=[], zones=[cw]), s.frames(15.0)), r.EventType.PEDESTRIAN_IN_ROADWAY)
    assert len(ev) == 1
    assert abs(ev[0].evidence.box[0] - 300) < 20


def test_lane_blockage_after_t_but_not_for_a_queue_at_red() -> None:
    rules = [r.RuleConfig("lane_blockage", params={"min_duration_s": 20.0})]
    s = Script()
    s.add(2, lambda t: (min(20 + 10 * t, 40.0), 25.0), 0.0, 40.0)  # stops at x=40 m and stays
    out = run(camera(lines=[], rules=rules), s.frames(40.0))
    ev = of(out, r.EventType.LANE_BLOCKAGE)
    assert len(ev) == 1 and ev[0].measurements["stopped_s"] >= 20
    assert ev[0].ts_ms == pytest.approx(T0 + 2000, abs=1500)
    # The same stop right before a red stop line is a queue.
    cam = _signalised()
    cam.scene.rules = rules
    s2 = Script()
    s2.add(2, lambda t: (min(20 + 10 * t, 57.0), 25.0), 0.0, 40.0)
    queued = run(cam, s2.frames(40.0), [_sig(0, r.Phase.RED)])
    assert not of(queued, r.EventType.LANE_BLOCKAGE)


def test_stop_sign_rolling_vs_full_stop() -> None:
    zone = r.Zone("stop", r.ZoneKind.STOP_ZONE, [P(500, 200), P(600, 200), P(600, 300), P(500, 300)])

    def stop_then_go(t: float) -> tuple[float, float]:
        # 10 m/s until x=52, stand still 2 s, then go on.
        if t < 5.2:
            return (min(10 * t, 52.0), 25.0)
        if t < 7.2:
            return (52.0, 25.0)
        return (52 + 10 * (t - 7.2), 25.0)

    s = Script()
    s.add(2, stop_then_go, 0.0, 12.0)
    s.add(2, east(6.0, y=27.0, x0=0.0), 0.0, 12.0)  # rolls through at 21.6 km/h
    ev = of(run(camera(lines=[], zones=[zone]), s.frames(12.0)), r.EventType.STOP_SIGN)
    assert len(ev) == 1
    assert ev[0].measurements["min_speed_kmh"] > 15


# --- windows -------------------------------------------------------------------------------------


def test_windows_emit_once_per_closed_window_with_lateness_counted() -> None:
    s = Script()
    for k in range(12):  # one eastbound car every 30 s
        s.add(2, east(10.0, y=25.0, x0=-20.0), 30.0 * k, 30.0 * k + 12.0)
        s.objects[-1] = (
            2,
            (lambda k0: lambda t: (-20 + 10.0 * (t - 30 * k0), 25.0))(k),
            30.0 * k,
            30.0 * k + 12,
            (4.5, 1.8),
        )
    frames = s.frames(400.0)
    late = r.Detections("cam", 99_999, frames[10].capture_ts_ms, 1000, 600, "sim", "1", [], [], [])
    frames.insert(2000, late)  # a frame from long ago arrives after two windows have closed
    out = run(camera(), frames)
    ids = [x.stats_id for x in out.stats]
    assert len(ids) == len(set(ids))
    one_min = [x for x in out.stats if x.window_s == 60 and x.lane_id is None]
    assert [x.window_start_ms for x in one_min] == [T0 + 60_000 * i for i in range(7)]
    assert sum(x.volume for x in one_min) == 12
    assert sum(x.late_records for x in one_min) == 1
    five = [x for x in out.stats if x.window_s == 300 and x.lane_id is None]
    assert five and five[0].window_start_ms == T0 and five[0].volume == sum(x.volume for x in one_min[:5])
    x = one_min[1]
    assert x.mean_speed_kmh == pytest.approx(36.0, abs=1.5) and x.volume_by_class == {"car": 2}
    assert x.level_of_service == r.LevelOfService.A


# --- alerts --------------------------------------------------------------------------------------


def _ev(ts_s: float, n: int, et=r.EventType.SPEEDING, sev=r.Severity.MEDIUM) -> r.Event:
    return r.Event(f"cam:{et.value}:{n}:{ts_s}", "cam", et, sev, T0 + int(ts_s * 1000), track_id=n)


def test_alerts_throttle_correlate_escalate_and_resolve() -> None:
    am = AlertManager(
        "cam", None, AlertPolicy(throttle_s=60, resolve_after_s=600, escalate_after_s=(300, 900))
    )
    first = am.on_event(_ev(0, 1))
    assert [a.status for a in first] == [r.AlertStatus.OPEN] and first[0].alert_id.endswith(":0")
    assert am.on_event(_ev(10, 2)) == [] and am.on_event(_ev(20, 3)) == []  # throttled, correlated
    upd = am.on_time(T0 + 61_000)
    assert len(upd) == 1 and upd[0].status == r.AlertStatus.UPDATED and upd[0].count == 3
    assert upd[0].incident_id == first[0].incident_id and len(upd[0].event_ids) == 3
    am.on_event(_ev(250, 4))
    esc = am.on_time(T0 + 301_000)
    assert [a.status for a in esc] == [r.AlertStatus.ESCALATED] and esc[0].escalation_level == 2
    assert esc[0].count == 4 and esc[0].suggested_action
    res = am.on_time(T0 + 851_000)
    assert [a.status for a in res] == [r.AlertStatus.RESOLVED]
    assert len({a.alert_id for a in first + upd + esc + res}) == 4


def test_low_severity_does_not_escalate() -> None:
    am = AlertManager("cam", None, AlertPolicy())
    am.on_event(_ev(0, 1, r.EventType.CONGESTION, r.Severity.LOW))
    am.on_event(_ev(200, 2, r.EventType.CONGESTION, r.Severity.LOW))
    out = am.on_time(T0 + 400_000)
    assert all(a.escalation_level == 1 for a in out)


# --- snapshots -----------------------------------------------------------------------------------


def test_snapshot_restore_continues_exactly() -> None:
    s = Script()
    for k in range(6):
        s.add(
            2, (lambda k0: lambda t: (-20 + 12.0 * (t - 8 * k0), 25.0 + k0 % 2 * 4))(k), 8.0 * k, 8.0 * k + 12
        )
    s.add(2, east(90 / 3.6, y=35.0), 0.0, 5.0)
    frames = s.frames(70.0, jitter=1.0)
    cam = camera()
    whole = run(cam, frames)
    # Same input, but the engine is snapshotted and rebuilt from the snapshot half way.
    cfg = AnalyticsSettings()
    a = CameraEngine(cam, cfg)
    out = Output()
    for d in frames[:333]:
        out.extend(a.on_detections(d))
    blob = a.to_state()
    b = CameraEngine(cam, cfg)
    b.load_state(blob)
    for d in frames[333:]:
        out.extend(b.on_detections(d))
    out.extend(b.flush())
    assert [e.event_id for e in out.events] == [e.event_id for e in whole.events]
    assert [x.stats_id for x in out.stats] == [x.stats_id for x in whole.stats]
    assert out.stats == whole.stats and out.events == whole.events


def test_snapshot_rejects_foreign_bytes() -> None:
    eng = CameraEngine(camera(), AnalyticsSettings())
    with pytest.raises(ValueError, match="not an analytics snapshot"):
        eng.load_state(b"\x80\x04garbage")


def test_lane_blockage_clock_survives_a_jittered_box_after_a_dropout() -> None:
    # A parked car missed for 0.9 s, then one box 0.9 m off: the short fit window after the gap reads
    # ~10 km/h, above the stop's exit speed. It has not moved, so the blockage clock must not restart.
    rules = [r.RuleConfig("lane_blockage", params={"min_duration_s": 20.0})]
    s = Script()
    s.add(2, lambda t: (min(20 + 10 * t, 40.0) + (0.9 if abs(t - 15.2) < 0.05 else 0.0), 25.0), 0.0, 30.0)
    out = run(camera(lines=[], rules=rules), s.frames(30.0, drop=range(143, 152)))
    ev = of(out, r.EventType.LANE_BLOCKAGE)
    assert len(ev) == 1 and ev[0].ts_ms == pytest.approx(T0 + 2000, abs=1500)
