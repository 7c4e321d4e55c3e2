"""Faces and licence plates blurred in every stored image (alert evidence, console tiles, demo keyframe).

Approach (what ships, nothing downloaded): the boxes of the shipped COCO detectors. OpenCV 5 no longer
has Haar cascades (``CascadeClassifier`` moved out of the main module and ``cv2.data`` holds no XML)
and its DNN face detector (YuNet) needs a model that is not shipped, so faces and plates are placed
from the person and vehicle boxes the pipeline already has for that frame (or that ``PrivacyFilter``
finds with the configured detector when a frame comes without boxes):

* face: the top ``head_fraction`` (22 %) of a whole-body person box, full box width; a person box cut
  by the frame's bottom edge is an upper body (a close camera), whose top ``cut_head_fraction`` (50 %)
  is taken instead;
* plate: the lower-central part of a car, motorcycle, bus or truck box (``plate_region``: x 12-88 %,
  y 50-100 %), where front and rear plates sit in road-camera views;
* every region grows by ``pad`` on each side and is pixelated (at most ~8 cells across its short side)
  then smoothed: a mosaic keeps no identity for a deblurring filter to recover.

Not covered (README "Hostile input and privacy"): faces of people the detector does not find as a
person (heavily occluded, tiny, or seen through a windscreen: drivers), plates on the side or roof of a
vehicle, plates of vehicles the detector misses, text on vehicles, and boxes below ``min_score``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from its.privacy.settings import PrivacySettings
from schemas.boxes import VEHICLE_CLASSES, Boxes
from schemas.records import EventType

if TYPE_CHECKING:
    from its.settings import Settings
    from processors.inference.detector import Detector

log = logging.getLogger(__name__)

PERSON = 0
# Events whose evidence may be kept unblurred for enforcement (allow_unblurred_violation_evidence).
VIOLATIONS = frozenset({EventType.RED_LIGHT, EventType.STOP_SIGN, EventType.SPEEDING, EventType.WRONG_WAY})
FACE, PLATE = 0, 1


@dataclass(slots=True)
class Regions:
    """Blurred rectangles: ``xyxy`` (N, 4) int pixel bounds (x2, y2 exclusive), ``kind`` FACE or PLATE."""

    xyxy: np.ndarray
    kind: np.ndarray

    def __len__(self) -> int:
        return len(self.xyxy)

    @property
    def faces(self) -> np.ndarray:
        return self.xyxy[self.kind == FACE]

    @property
    def plates(self) -> np.ndarray:
        return self.xyxy[self.kind == PLATE]


def should_blur(cfg: PrivacySettings, *, violation: bool = False) -> bool:
    """Blur by default; unblurred only for violation evidence where the setting allows it."""
    if not cfg.blur_evidence:
        return False
    return not (violation and cfg.allow_unblurred_violation_evidence)


def is_violation(event_type: EventType | str | None) -> bool:
    """True for the event types whose evidence is enforcement evidence."""
    return event_type is not None and str(event_type) in {v.value for v in VIOLATIONS}


def regions(boxes: Boxes, shape: tuple[int, ...], cfg: PrivacySettings) -> Regions:
    """Face and plate rectangles for the person and vehicle boxes of one frame (vectorised)."""
    h, w = int(shape[0]), int(shape[1])
    keep = boxes.score >= cfg.min_score
    xyxy = boxes.xyxy[keep].astype(np.float64)
    cls = boxes.class_id[keep]
    out: list[np.ndarray] = []
    kinds: list[np.ndarray] = []

    person = xyxy[cls == PERSON]
    if len(person):
        bh = person[:, 3] - person[:, 1]
        # A box ending at the bottom edge (within 2 %) is a person cut by the frame: an upper body.
        cut = person[:, 3] >= h * 0.98
        frac = np.where(cut, cfg.cut_head_fraction, cfg.head_fraction)
        head = person.copy()
        head[:, 3] = person[:, 1] + frac * bh
        out.append(head)
        kinds.append(np.full(len(head), FACE))

    vehicle = xyxy[np.isin(cls, VEHICLE_CLASSES)]
    if len(vehicle):
        fx1, fy1, fx2, fy2 = cfg.plate_region
        bw = vehicle[:, 2] - vehicle[:, 0]
        bh = vehicle[:, 3] - vehicle[:, 1]
        plate = np.stack(
            [
                vehicle[:, 0] + fx1 * bw,
                vehicle[:, 1] + fy1 * bh,
                vehicle[:, 0] + fx2 * bw,
                vehicle[:, 1] + fy2 * bh,
            ],
            axis=1,
        )
        out.append(plate)
        kinds.append(np.full(len(plate), PLATE))

    if not out:
        return Regions(np.zeros((0, 4), np.int32), np.zeros(0, np.int64))
    rect = np.concatenate(out)
    kind = np.concatenate(kinds)
    pad = cfg.pad * (rect[:, 2:] - rect[:, :2])
    rect[:, :2] -= pad
    rect[:, 2:] += pad
    # Outward rounding, then clipped to the image: a region never shrinks below what it covers.
    rect[:, :2] = np.floor(rect[:, :2])
    rect[:, 2:] = np.ceil(rect[:, 2:])
    rect[:, 0::2] = np.clip(rect[:, 0::2], 0, w)
    rect[:, 1::2] = np.clip(rect[:, 1::2], 0, h)
    ok = np.isfinite(rect).all(axis=1) & (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
    return Regions(rect[ok].astype(np.int32), kind[ok])


def blur_regions(image: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with each rectangle pixelated and smoothed; nothing outside them changes."""
    out = image.copy()
    for x1, y1, x2, y2 in rects.tolist():
        roi = out[y1:y2, x1:x2]
        rh, rw = roi.shape[:2]
        cell = max(4, min(rw, rh) // 8)
        small = cv2.resize(roi, (max(1, rw // cell), max(1, rh // cell)), interpolation=cv2.INTER_AREA)
        mosaic = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_NEAREST)
        k = cell | 1  # odd kernel: soften the cell edges without bringing detail back
        # The blur reads only the ROI (borders reflected inside it), so pixels outside stay untouched.
        out[y1:y2, x1:x2] = cv2.GaussianBlur(mosaic, (k, k), 0, borderType=cv2.BORDER_REFLECT)
    return out


def redact(
    image: np.ndarray, boxes: Boxes, cfg: PrivacySettings, *, violation: bool = False
) -> tuple[np.ndarray, Regions]:
    """``image`` with faces and plates blurred (unless the settings exempt it) and the regions blurred."""
    if not should_blur(cfg, violation=violation):
        return image, Regions(np.zeros((0, 4), np.int32), np.zeros(0, np.int64))
    found = regions(boxes, image.shape, cfg)
    return blur_regions(image, found.xyxy), found


class PrivacyFilter:
    """``redact`` for images that may come without boxes: the configured detector finds them (lazily)."""

    def __init__(self, settings: Settings, detector: Detector | None = None) -> None:
        self.settings = settings
        self.cfg = settings.privacy
        self._detector = detector

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            from processors.inference.detector import load_detector, resolve_model_path

            inf = self.settings.inference
            path = resolve_model_path(inf.model, self.settings.assets_path)
            # Low threshold, persons and vehicles only: a missed face costs more than an extra blur.
            self._detector = load_detector(
                path, conf=min(inf.conf, self.cfg.min_score), iou=inf.iou, classes=[PERSON, *VEHICLE_CLASSES]
            )
        return self._detector

    def redact(
        self, image: np.ndarray, boxes: Boxes | None = None, *, violation: bool = False
    ) -> tuple[np.ndarray, Regions]:
        """Blur faces and plates; ``boxes`` None runs the detector on the image first."""
        if not should_blur(self.cfg, violation=violation):
            return image, Regions(np.zeros((0, 4), np.int32), np.zeros(0, np.int64))
        if boxes is None:
            boxes = self.detector.detect([image])[0]
        return redact(image, boxes, self.cfg, violation=violation)
