"""Draw simulated frames with OpenCV (road, markings, boxes) so the video path can be exercised."""

from __future__ import annotations

import cv2
import numpy as np

from producers.simulator.geometry import apply_homography
from producers.simulator.scene import Scene
from schemas import records as r

_ZONE_COLOURS = {
    r.ZoneKind.ROADWAY: (80, 80, 80),
    r.ZoneKind.CROSSWALK: (200, 200, 200),
    r.ZoneKind.INTERSECTION_BOX: (95, 95, 95),
    r.ZoneKind.STOP_ZONE: (60, 60, 140),
}
_CLASS_COLOURS = {
    0: (40, 200, 255),
    1: (255, 200, 0),
    2: (60, 180, 60),
    3: (200, 60, 200),
    5: (0, 140, 255),
    7: (200, 80, 40),
}


class Renderer:
    """Pre-draws a camera's background once; ``frame(boxes)`` paints the objects on a copy."""

    def __init__(self, scene: Scene) -> None:
        cam = scene.camera
        self.width, self.height = cam.width, cam.height
        img = np.full((cam.height, cam.width, 3), (70, 110, 70), np.uint8)
        h = cam.ground_to_image
        for kind in (
            r.ZoneKind.ROADWAY,
            r.ZoneKind.INTERSECTION_BOX,
            r.ZoneKind.CROSSWALK,
            r.ZoneKind.STOP_ZONE,
        ):
            for poly in scene.polygons(kind):
                pts = _clip_ground(poly)
                img_pts = apply_homography(h, pts).round().astype(np.int32)
                cv2.fillPoly(img, [img_pts], _ZONE_COLOURS[kind])
        for lane in scene.lanes:
            if lane.reverse_of is not None:
                continue
            pts = (
                apply_homography(h, lane.line.at(np.linspace(0, lane.line.length, 20))[0])
                .round()
                .astype(np.int32)
            )
            cv2.polylines(img, [pts], False, (230, 230, 230), 1)
            if lane.stop_s is not None:
                p, d = lane.line.at(np.array([lane.stop_s]))
                n = np.array([-d[0, 1], d[0, 0]]) * lane.width / 2
                a, b = apply_homography(h, np.array([p[0] + n, p[0] - n])).round().astype(int)
                cv2.line(img, tuple(a), tuple(b), (255, 255, 255), 3)
        for line in scene.lines:
            a, b = apply_homography(h, np.array([line.a, line.b])).round().astype(int)
            cv2.line(img, tuple(a), tuple(b), (0, 220, 255), 2)
        self.background = img

    def frame(self, xyxy: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        img = self.background.copy()
        for (x1, y1, x2, y2), c in zip(
            np.asarray(xyxy).round().astype(int), np.asarray(class_ids), strict=True
        ):
            colour = _CLASS_COLOURS.get(int(c), (255, 255, 255))
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
            cv2.rectangle(img, (x1, y1), (x2, y2), (20, 20, 20), 1)
        return img

    def jpeg(self, xyxy: np.ndarray, class_ids: np.ndarray, quality: int = 80) -> bytes:
        ok, buf = cv2.imencode(".jpg", self.frame(xyxy, class_ids), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()


def _clip_ground(poly: np.ndarray) -> np.ndarray:
    """Keep polygons in front of the camera: the scenes never extend behind it, so no clipping needed."""
    return np.asarray(poly, dtype=np.float64)
