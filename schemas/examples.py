"""One realistic record per topic: the demo publishes them, the tests round-trip them."""

from __future__ import annotations

from typing import Any

from schemas import records as r
from schemas import topics as t

_T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def example_camera(camera_id: str = "cam-0001") -> r.Camera:
    """A signalised approach with one counting line, a crosswalk, two lanes and a calibration."""
    p = r.Point
    return r.Camera(
        camera_id=camera_id,
        name="Main St & 5th Ave, northbound",
        location=r.Location(40.7411, -73.9897, "Main St & 5th Ave", "int-0042"),
        mode=r.ProcessingMode.CLOUD,
        source="rtsp://10.0.0.12:554/stream1",
        fps=10.0,
        timezone="America/New_York",
        scene=r.SceneConfig(
            lines=[
                r.CountingLine("north-count", [p(100, 400), p(1180, 400)], "northbound", "southbound", None)
            ],
            zones=[
                r.Zone(
                    "crosswalk-n",
                    r.ZoneKind.CROSSWALK,
                    [p(100, 300), p(1180, 300), p(1180, 340), p(100, 340)],
                ),
                r.Zone("roadway", r.ZoneKind.ROADWAY, [p(0, 200), p(1280, 200), p(1280, 720), p(0, 720)]),
            ],
            lanes=[
                r.Lane(
                    "nb-1",
                    [p(300, 720), p(600, 720), p(620, 200), p(500, 200)],
                    [p(450, 720), p(560, 200)],
                    50.0,
                    "north",
                ),
                r.Lane(
                    "sb-1",
                    [p(700, 720), p(1000, 720), p(760, 200), p(640, 200)],
                    [p(700, 200), p(850, 720)],
                    50.0,
                    "south",
                ),
            ],
            stop_lines=[r.StopLine("stop-n", [p(300, 360), p(640, 360)], "sig-north", ["nb-1"])],
            calibration=r.Calibration(
                image_points=[p(300, 720), p(600, 720), p(620, 200), p(500, 200)],
                ground_points=[p(0, 0), p(3.5, 0), p(3.5, 60), p(0, 60)],
            ),
            rules=[
                r.RuleConfig("speeding", True, "MEDIUM", ["nb-1", "sb-1"], {"tolerance_kmh": 10.0}),
                r.RuleConfig("red_light", True, "HIGH", ["nb-1"], {"grace_s": 0.5}),
            ],
        ),
        labels={"district": "midtown"},
        registered_ts_ms=_T0,
    )


def example_records() -> dict[str, Any]:
    """Topic name -> one example record of that topic's type."""
    evidence = r.Evidence(41, _T0 + 4_100, r.FrameRef(t.FRAMES, 3, 1234), [410.0, 380.0, 520.0, 470.0])
    return {
        t.CAMERAS: example_camera(),
        t.FRAMES: r.Frame(
            "cam-0001",
            41,
            _T0 + 4_100,
            1280,
            720,
            True,
            b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9",
            312.5,
            "edge-a",
        ),
        t.DETECTIONS: r.Detections(
            camera_id="cam-0001",
            frame_seq=41,
            capture_ts_ms=_T0 + 4_100,
            width=1280,
            height=720,
            model_name="yolox_nano_coco_416",
            model_version="1",
            source=r.DetectionSource.CLOUD,
            boxes=[410.0, 380.0, 520.0, 470.0, 100.5, 200.25, 130.0, 290.0],
            class_ids=[2, 0],
            scores=[0.875, 0.5],
            track_ids=[7, 8],
            frame_ref=r.FrameRef(t.FRAMES, 3, 1234),
            inference_ms=11.5,
            processed_ts_ms=_T0 + 4_180,
        ),
        t.SIGNALS: r.SignalPhase("cam-0001", "sig-north", r.Phase.RED, _T0 + 2_000, "ctrl-7"),
        t.EVENTS: r.Event(
            event_id="cam-0001:RED_LIGHT:7:1764000004100",
            camera_id="cam-0001",
            event_type=r.EventType.RED_LIGHT,
            severity=r.Severity.HIGH,
            ts_ms=_T0 + 4_100,
            track_id=7,
            class_id=2,
            lane_id="nb-1",
            line_id="stop-n",
            confidence=0.875,
            measurements={"speed_kmh": 42.5, "red_elapsed_s": 2.1},
            signal_phase="RED",
            evidence=evidence,
            model_version="yolox_nano_coco_416:1",
        ),
        t.ALERTS: r.Alert(
            alert_id="cam-0001:RED_LIGHT:1764000004100:0",
            incident_id="cam-0001:RED_LIGHT:1764000004100",
            camera_id="cam-0001",
            alert_type=r.EventType.RED_LIGHT,
            severity=r.Severity.HIGH,
            first_ts_ms=_T0 + 4_100,
            last_ts_ms=_T0 + 4_100,
            title="Red-light running at Main St & 5th Ave",
            description="Vehicle 7 crossed stop line stop-n 2.1 s into red at 42.5 km/h",
            suggested_action="Review evidence; notify enforcement",
            event_ids=["cam-0001:RED_LIGHT:7:1764000004100"],
            evidence=evidence,
            location=r.Location(40.7411, -73.9897, "Main St & 5th Ave", "int-0042"),
        ),
        t.TRAFFIC_STATS: r.TrafficStats(
            stats_id="cam-0001:nb-1:1764000000000:60",
            camera_id="cam-0001",
            lane_id="nb-1",
            window_start_ms=_T0,
            window_end_ms=_T0 + 60_000,
            window_s=60,
            volume=14,
            volume_by_class={"car": 12, "bus": 1, "truck": 1},
            mean_speed_kmh=38.5,
            p85_speed_kmh=47.0,
            occupancy=0.125,
            density_veh_per_km=22.0,
            queue_length_m=18.5,
            queue_vehicles=3,
            level_of_service=r.LevelOfService.C,
        ),
        t.HEALTH: r.Health(
            camera_id="cam-0001",
            ts_ms=_T0 + 5_000,
            mode=r.ProcessingMode.CLOUD,
            status=r.HealthStatus.ONLINE,
            producer_id="edge-a",
            fps_in=25.0,
            fps_out=10.0,
            frames_dropped=2,
            frames_skipped_blur=1,
            queue_depth=4,
            spool_bytes=0,
            uptime_s=3600.5,
        ),
        t.DLQ: r.DeadLetter(
            source_topic=t.FRAMES,
            source_partition=3,
            source_offset=99,
            reason="undecodable JPEG",
            error_type="FrameDecodeError",
            component="inference",
            ts_ms=_T0 + 6_000,
            key=b"cam-0001",
            payload=b"\x00\x00\x00\x00\x01garbage",
        ),
        t.MODELS: r.ModelEntry(
            name="yolox_nano_coco_416",
            version="1",
            path="/models/yolox_nano_coco_416.onnx",
            format="yolox",
            input_height=416,
            input_width=416,
            classes=list(range(80)),
            sha256="d39bee73564e3380" + "0" * 48,
            size_bytes=3713911,
            added_ts_ms=_T0,
            updated_ts_ms=_T0 + 7_000,
            stage=r.ModelStage.CANARY,
            canary_percent=10.0,
            metrics={"latency_ms_cpu": 11.0, "bus_jpg_detections": 5.0},
            promoted_ts_ms=0,
            note="example",
        ),
        t.ANALYTICS_STATE: r.AnalyticsState("cam-0001", _T0 + 4_100, 1, b"PK\x03\x04example-npz"),
        t.ALERT_ACKS: r.AlertAck(
            ack_id="6f1c2d3e-0000-4000-8000-000000000001",
            alert_id="inc-cam-0001-42:0",
            incident_id="inc-cam-0001-42",
            camera_id="cam-0001",
            acknowledged_by="operator-7",
            ts_ms=_T0 + 8_000,
            note="crew dispatched",
        ),
        t.AUDIT: r.AuditEntry(
            audit_id="6f1c2d3e-0000-4000-8000-000000000002",
            ts_ms=_T0 + 9_000,
            actor="admin",
            action="camera.token.create",
            target="cam-0001",
            outcome="ok",
            details={"expires_ts_ms": str(_T0 + 86_400_000)},
        ),
    }
