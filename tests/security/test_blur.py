"""Faces blurred on a real photo with the shipped detector; nothing else in the image touched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from its.privacy.blur import FACE, PLATE, PrivacyFilter, redact, regions
from its.privacy.settings import PrivacySettings
from its.settings import Settings
from schemas.boxes import Boxes

pytestmark = pytest.mark.security

# Faces in zidane.jpg (1280x720) found by looking at the picture (eyes to chin, ear to nose), not by
# the code under test: the man leaning forward on the left and the man standing on the right.
FACES = [(495, 260, 665, 450), (905, 95, 1060, 285)]
# Lower bodies and background: no face there, so not one pixel may change.
UNTOUCHED = [(160, 560, 640, 720), (760, 520, 1100, 720), (0, 0, 90, 720), (1200, 420, 1280, 720)]
DILATE_PX = 2


@pytest.fixture(scope="module")
def zidane() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    settings = Settings()
    img = cv2.imread(str(settings.assets_path / "images" / "zidane.jpg"))
    assert img is not None and img.shape == (720, 1280, 3)
    out, found = PrivacyFilter(settings).redact(img)  # default settings: blur on, detector boxes
    return img, out, found.xyxy


def _lap_var(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_faces_are_blurred_beyond_threshold(zidane) -> None:
    img, out, _ = zidane
    for x1, y1, x2, y2 in FACES:
        before, after = img[y1:y2, x1:x2], out[y1:y2, x1:x2]
        mad = float(np.abs(after.astype(np.int16) - before.astype(np.int16)).mean())
        assert mad > 12, f"face {(x1, y1, x2, y2)} changed by only {mad:.1f} grey levels"
        # Detail gone, not just shifted: edge energy falls by more than 90 %.
        assert _lap_var(after) < 0.1 * _lap_var(before)


def test_nothing_outside_the_blurred_regions_changes(zidane) -> None:
    img, out, rects = zidane
    assert len(rects) >= 2
    mask = np.zeros(img.shape[:2], bool)
    for x1, y1, x2, y2 in rects.tolist():
        mask[max(y1 - DILATE_PX, 0) : y2 + DILATE_PX, max(x1 - DILATE_PX, 0) : x2 + DILATE_PX] = True
    assert np.array_equal(out[~mask], img[~mask])  # bit-identical outside the dilated regions
    for x1, y1, x2, y2 in UNTOUCHED:
        assert np.array_equal(out[y1:y2, x1:x2], img[y1:y2, x1:x2]), (x1, y1, x2, y2)
    # Faces, not the picture: well under half of the image is blurred.
    assert mask.mean() < 0.5


def test_violation_evidence_unblurred_only_when_allowed() -> None:
    img = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    boxes = Boxes(np.array([[100, 40, 160, 300], [300, 200, 500, 330]]), [0, 2], [0.9, 0.9])
    default = PrivacySettings()
    allowed = PrivacySettings(allow_unblurred_violation_evidence=True)
    assert not np.array_equal(redact(img, boxes, default, violation=True)[0], img)
    assert not np.array_equal(redact(img, boxes, allowed, violation=False)[0], img)
    same, found = redact(img, boxes, allowed, violation=True)
    assert same is img and len(found) == 0


def test_plate_region_is_the_lower_centre_of_a_vehicle() -> None:
    boxes = Boxes(np.array([[100, 100, 300, 200], [400, 50, 440, 200]]), [2, 0], [0.9, 0.9])
    found = regions(boxes, (720, 1280, 3), PrivacySettings(pad=0.0))
    assert found.plates.tolist() == [[124, 150, 276, 200]]
    assert found.faces.tolist() == [[400, 50, 440, 83]]  # top 22 % of a whole-body box
    assert set(found.kind.tolist()) == {FACE, PLATE}
