"""The demo's annotated keyframe: one frame of a camera with what the analytics saw on it.

The camera's detections are read back from ClickHouse and run through the analytics engine
(``processors.analytics.engine.CameraEngine``, the code ``its process analytics`` runs) to get track
ids and ground-plane speeds; the frame with the most tracks is drawn over the camera's picture (the
simulator's renderer for a simulated camera, a real JPEG for a video camera) with the scene's lanes,
zones, counting lines and stop lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from its.privacy.blur import redact
from its.privacy.settings import PrivacySettings
from its.settings import get_settings
from schemas import records as r
from schemas.boxes import Boxes

CLASS_NAMES = {0: "person", 1: "bicycle", 2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
_ZONE_BGR = {
    r.ZoneKind.ROADWAY: (160, 160, 160),
    r.ZoneKind.CROSSWALK: (255, 255, 255),
    r.ZoneKind.INTERSECTION_BOX: (255, 160, 0),
    r.ZoneKind.STOP_ZONE: (0, 0, 255),
}
_TRACK_BGR = [(0, 200, 255), (255, 120, 0), (60, 220, 60), (200, 60, 255), (0, 120, 255), (255, 255, 0)]


@dataclass(slots=True)
class Tracked:
    track_id: int
    class_id: int
    box: tuple[float, float, float, float]
    speed_kmh: float | None


@dataclass(slots=True)
class KeyframeChoice:
    detections: r.Detections
    tracks: list[Tracked] = field(default_factory=list)


def track_frames(camera: r.Camera, detections: list[r.Detections]) -> KeyframeChoice | None:
    """Run the engine over ``detections`` (capture order); the frame with the most tracks with speeds."""
    from processors.analytics.engine import CameraEngine
    from processors.analytics.settings import AnalyticsSettings

    engine = CameraEngine(camera, AnalyticsSettings())
    best: KeyframeChoice | None = None
    best_score = -1.0
    for det in detections:
        engine.on_detections(det)
        tr = engine.tracker
        matched = np.nonzero((tr["det"] >= 0) & tr.confirmed)[0]
        if not len(matched):
            continue
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
        tracks = []
        for i in matched:
            speed = float(tr["speed"][i])
            tracks.append(
                Tracked(
                    int(tr["id"][i]),
                    int(tr.cls[i]),
                    tuple(float(v) for v in boxes[int(tr["det"][i])]),  # type: ignore[arg-type]
                    None if not np.isfinite(speed) else speed,
                )
            )
        score = len(tracks) + 0.5 * sum(t.speed_kmh is not None and t.speed_kmh > 3 for t in tracks)
        if score >= best_score:
            best, best_score = KeyframeChoice(det, tracks), score
    return best


def _pts(points: list[r.Point]) -> np.ndarray:
    return np.asarray([[p.x, p.y] for p in points], dtype=np.float64).round().astype(np.int32)


def draw(image: np.ndarray, camera: r.Camera, choice: KeyframeChoice, title: str = "") -> np.ndarray:
    """Lanes, zones, counting lines, stop lines, then each track's box, id, class and speed."""
    img = image.copy()
    overlay = img.copy()
    scene = camera.scene
    for zone in scene.zones:
        cv2.fillPoly(overlay, [_pts(zone.polygon)], _ZONE_BGR.get(zone.kind, (200, 200, 200)))
    img = cv2.addWeighted(overlay, 0.25, img, 0.75, 0)
    for zone in scene.zones:
        cv2.polylines(img, [_pts(zone.polygon)], True, _ZONE_BGR.get(zone.kind, (200, 200, 200)), 1)
    for lane in scene.lanes:
        cv2.polylines(img, [_pts(lane.polygon)], True, (200, 200, 200), 1, cv2.LINE_AA)
        cl = _pts(lane.centerline)
        if len(cl) >= 2:
            cv2.arrowedLine(img, tuple(cl[-2]), tuple(cl[-1]), (200, 200, 200), 1, tipLength=0.2)
    for stop in scene.stop_lines:
        a, b = _pts(stop.points)[:2]
        cv2.line(img, tuple(a), tuple(b), (0, 0, 255), 3, cv2.LINE_AA)
    for line in scene.lines:
        a, b = _pts(line.points)[:2]
        cv2.line(img, tuple(a), tuple(b), (0, 255, 255), 2, cv2.LINE_AA)
        mid = ((a + b) / 2).astype(int)
        cv2.putText(
            img,
            f"{line.line_id} (in: {line.in_direction})",
            (int(mid[0]) + 4, int(mid[1]) - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 255, 255),
            1,
            cv2.LINE_AA,
        )
    for t in choice.tracks:
        colour = _TRACK_BGR[t.track_id % len(_TRACK_BGR)]
        x1, y1, x2, y2 = (round(v) for v in t.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
        label = f"#{t.track_id} {CLASS_NAMES.get(t.class_id, t.class_id)}"
        if t.speed_kmh is not None:
            label += f" {t.speed_kmh:.0f} km/h"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        cv2.rectangle(img, (x1, max(y1 - th - 6, 0)), (x1 + tw + 4, max(y1, th + 6)), colour, -1)
        cv2.putText(
            img,
            label,
            (x1 + 2, max(y1 - 4, th + 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    det = choice.detections
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(det.capture_ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    banner = title or f"{camera.camera_id}  frame {det.frame_seq}  {when} UTC  tracks {len(choice.tracks)}"
    cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(img, banner, (6, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def simulated_background(scenario: str, camera_index: int, det: r.Detections) -> np.ndarray:
    """The simulator's rendering of a simulated camera, with the frame's detected objects painted in."""
    from producers.simulator.core import load_scenario
    from producers.simulator.render import Renderer
    from producers.simulator.scene import build

    doc = load_scenario(scenario)
    tpl = doc["cameras"][camera_index % len(doc["cameras"])]
    scene = build(str(tpl["layout"]), float(tpl.get("speed_limit_kmh", 50.0)), tpl.get("camera"))
    boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
    return Renderer(scene).frame(boxes, np.asarray(det.class_ids, dtype=np.int64))


def write_keyframe(
    path: Path,
    camera: r.Camera,
    detections: list[r.Detections],
    background_for: object,
    privacy: PrivacySettings | None = None,
) -> dict[str, object] | None:
    """Choose, draw and write the keyframe; ``background_for(det) -> BGR image``. None if no track."""
    choice = track_frames(camera, detections)
    if choice is None:
        return None
    image = background_for(choice.detections)  # type: ignore[operator]
    # Faces and plates are blurred before anything is drawn or written (its.privacy.blur).
    cfg = privacy if privacy is not None else get_settings().privacy
    image, _ = redact(image, Boxes.from_record(choice.detections), cfg)
    img = draw(image, camera, choice)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise RuntimeError(f"could not write {path}")
    return {
        "path": str(path),
        "camera_id": camera.camera_id,
        "frame_seq": choice.detections.frame_seq,
        "capture_ts_ms": choice.detections.capture_ts_ms,
        "tracks": len(choice.tracks),
        "with_speed": sum(t.speed_kmh is not None for t in choice.tracks),
    }
