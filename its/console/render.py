"""Server-side drawing of camera tiles and evidence images (OpenCV into JPEG).

A tile is the camera's latest keyframe (or, for a camera that sends no frames, a dark canvas of the
frame's size) with the scene's zones, lanes, counting and stop lines and the latest boxes with track
ids and speeds, drawn by ``its.demo_keyframe.draw`` (the demo's annotated keyframe). Track ids come
from the detections when the edge tracked; otherwise from the analytics engine (the code
``its process analytics`` runs), one per camera, fed forward with the frames that arrived since the
last tile request: only cameras someone looks at cost anything.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from its.demo_keyframe import KeyframeChoice, Tracked, draw
from its.privacy.blur import PrivacyFilter, is_violation
from its.settings import get_settings
from schemas import records as r
from schemas.boxes import Boxes

_CANVAS_BGR = (48, 40, 36)


def _decode(frame: r.Frame | None) -> np.ndarray | None:
    if frame is None:
        return None
    img = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


_PRIVACY: list[PrivacyFilter] = []
_PRIVACY_LOCK = threading.Lock()


def _privacy() -> PrivacyFilter:
    """The process's privacy filter (faces and plates blurred unless the settings say otherwise)."""
    with _PRIVACY_LOCK:  # tiles are drawn on many request threads at once: build one filter only
        if not _PRIVACY:
            _PRIVACY.append(PrivacyFilter(get_settings()))
        return _PRIVACY[0]


def _canvas(width: int, height: int) -> np.ndarray:
    img = np.empty((max(height, 1), max(width, 1), 3), np.uint8)
    img[:] = _CANVAS_BGR
    return img


def _encode(img: np.ndarray, width: int | None, quality: int = 80) -> bytes:
    if width and img.shape[1] > width:
        scale = width / img.shape[1]
        img = cv2.resize(img, (width, max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class Trackers:
    """One analytics engine per camera, fed forward with new frames: building its scene costs ~1 s."""

    def __init__(self, max_cameras: int = 256) -> None:
        self._max = max_cameras
        self._lock = threading.Lock()
        # camera_id -> (lock, engine, registration it was built for, last fed (ts, seq), tracks then)
        self._engines: OrderedDict[str, list[Any]] = OrderedDict()

    def _slot(self, camera: r.Camera) -> list[Any]:
        with self._lock:
            slot = self._engines.get(camera.camera_id)
            if slot is None or slot[2] != camera.registered_ts_ms:
                slot = self._engines[camera.camera_id] = [threading.Lock(), None, camera.registered_ts_ms,
                                                          (-1, -1), []]  # fmt: skip
            self._engines.move_to_end(camera.camera_id)
            while len(self._engines) > self._max:
                self._engines.popitem(last=False)
            return slot

    def tracks(self, camera: r.Camera, dets: list[r.Detections]) -> tuple[r.Detections, list[Tracked]]:
        """Feed the frames newer than the last fed one; the newest frame and its confirmed tracks."""
        from processors.analytics.engine import CameraEngine
        from processors.analytics.settings import AnalyticsSettings

        slot = self._slot(camera)
        with slot[0]:
            if slot[1] is None:
                slot[1] = CameraEngine(camera, AnalyticsSettings())
            engine = slot[1]
            fed = None
            for d in dets:
                if (d.capture_ts_ms, d.frame_seq) > slot[3]:
                    engine.on_detections(d)
                    slot[3] = (d.capture_ts_ms, d.frame_seq)
                    fed = d
            if fed is not None:
                tr = engine.tracker
                boxes = np.asarray(fed.boxes, dtype=np.float64).reshape(-1, 4)
                out = []
                for i in np.nonzero((tr["det"] >= 0) & tr.confirmed)[0]:
                    speed = float(tr["speed"][i])
                    b = boxes[int(tr["det"][i])]
                    out.append(Tracked(int(tr["id"][i]), int(tr.cls[i]), (b[0], b[1], b[2], b[3]),
                                       speed if np.isfinite(speed) else None))  # fmt: skip
                slot[4] = [fed, out]
            return tuple(slot[4]) if slot[4] else (dets[-1], [])  # type: ignore[return-value]


def tracks_of(
    trackers: Trackers, camera: r.Camera | None, dets: list[r.Detections]
) -> tuple[r.Detections, list[Tracked]]:
    """The frame to draw and its tracks: from the record when the edge tracked, else from ``trackers``."""
    det = dets[-1]
    boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
    if det.track_ids is not None and len(det.track_ids) == len(boxes):
        return det, [
            Tracked(int(t), int(c), (b[0], b[1], b[2], b[3]), None)
            for t, c, b in zip(det.track_ids, det.class_ids, boxes.tolist(), strict=True)
        ]
    if camera is None:  # no scene to track against yet: boxes without ids
        return det, [
            Tracked(0, int(c), (b[0], b[1], b[2], b[3]), None)
            for c, b in zip(det.class_ids, boxes.tolist(), strict=True)
        ]
    return trackers.tracks(camera, dets)


def tile(
    camera_id: str,
    camera: r.Camera | None,
    frame: r.Frame | None,
    dets: list[r.Detections],
    trackers: Trackers,
    width: int | None = 640,
) -> bytes:
    """The camera's tile as JPEG: keyframe (or canvas), scene, boxes with track ids."""
    image = _decode(frame)
    if not dets:
        # Faces and plates blurred before anything is drawn or served (its.privacy.blur).
        img = _privacy().redact(image)[0] if image is not None else _canvas(1280, 720)
        if camera is not None:
            det = r.Detections(camera_id, -1, frame.capture_ts_ms if frame else 0, img.shape[1], img.shape[0],
                               "", "", [], [], [])  # fmt: skip
            img = draw(img, camera, KeyframeChoice(det), title=f"{camera_id}  no detections yet")
        return _encode(img, width)
    if frame is not None:
        # The keyframe goes under its own frame's boxes: track up to that frame when it is buffered.
        key = (frame.frame_seq, frame.capture_ts_ms)
        own = [i for i, d in enumerate(dets) if (d.frame_seq, d.capture_ts_ms) == key]
        dets = dets[: own[-1] + 1] if own else dets
    det, tracks = tracks_of(trackers, camera, dets)
    # Boxes of another frame (moved vehicles) or another size would be misplaced: canvas instead.
    if (
        image is None
        or frame is None
        or image.shape[:2] != (det.height, det.width)
        or det.frame_seq != frame.frame_seq
    ):
        image = _canvas(det.width or 1280, det.height or 720)
    else:
        # Faces and plates blurred first: with the frame's own boxes when these are its detections.
        image = _privacy().redact(
            image, Boxes.from_record(det) if det.frame_seq == frame.frame_seq else None
        )[0]
    cam = camera or r.Camera(camera_id, camera_id, r.Location(0.0, 0.0), r.SceneConfig(), 0)
    return _encode(draw(image, cam, KeyframeChoice(det, tracks)), width)


def evidence(
    alert: r.Alert, camera: r.Camera | None, frame: r.Frame | None, width: int | None = 960
) -> bytes:
    """The alert's evidence: its keyframe (or a canvas when the frame is gone) with the evidence box."""
    image = _decode(frame)
    if image is None:
        image = _canvas(frame.width if frame else 1280, frame.height if frame else 720)
    else:  # faces and plates blurred; violation evidence only where the settings allow it unblurred
        image = _privacy().redact(image, violation=is_violation(alert.alert_type))[0]
    ev = alert.evidence
    cam = camera or r.Camera(alert.camera_id, alert.camera_id, r.Location(0.0, 0.0), r.SceneConfig(), 0)
    seq, ts = (ev.frame_seq, ev.capture_ts_ms) if ev else (-1, alert.first_ts_ms)
    det = r.Detections(alert.camera_id, seq, ts, image.shape[1], image.shape[0], "", "", [], [], [])
    source = "keyframe" if frame is not None else "frame not available"
    img = draw(image, cam, KeyframeChoice(det), title=f"{alert.title}  {alert.camera_id}  ({source})")
    if ev is not None and len(ev.box) == 4:
        x1, y1, x2, y2 = (round(v) for v in ev.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 3)
        cv2.putText(img, alert.alert_type.value, (x1, max(y2 + 16, 30)), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (0, 0, 255), 2, cv2.LINE_AA)  # fmt: skip
    return _encode(img, width)
