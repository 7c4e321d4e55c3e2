"""Every shipped ONNX model, through ``load_detector``, on real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from its.settings import Settings
from processors.inference.detector import Detector, OnnxDetector, load_detector

pytestmark = pytest.mark.integration

ASSETS = Settings().assets_path
MODELS = sorted((ASSETS / "models").glob("*.onnx"))
EXPECTED_FORMAT = {
    "yolox_nano_coco_416": "yolox",
    "yolov8n_coco_int8_640": "ultralytics",
    "yolov8n_coco_int8_320": "ultralytics",
    "yolo11n_coco_int8_320": "ultralytics",
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_all_four_shipped_models_are_present() -> None:
    assert {p.stem for p in MODELS} == set(EXPECTED_FORMAT)


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_model_finds_the_bus_and_four_people(model: Path) -> None:
    det = load_detector(model, conf=0.25)
    assert isinstance(det, Detector) and isinstance(det, OnnxDetector)
    assert det.format == EXPECTED_FORMAT[model.stem]
    img = cv2.imread(str(ASSETS / "images" / "bus.jpg"))
    (boxes,) = det.detect([img])
    assert sorted(boxes.class_id.tolist()) == [0, 0, 0, 0, 5]
    assert (boxes.score >= 0.25).all()
    bus = boxes.xyxy[boxes.class_id == 5][0]
    # the bus spans the picture's width in its upper half (810x1080 image)
    assert _iou(bus, np.array([20, 230, 805, 750], np.float32)) > 0.85
    # boxes are in original-image pixels, inside the image
    assert boxes.xyxy[:, [0, 2]].max() <= 810 and boxes.xyxy[:, [1, 3]].max() <= 1080
    assert (boxes.xyxy[:, 2] > boxes.xyxy[:, 0]).all() and (boxes.xyxy[:, 3] > boxes.xyxy[:, 1]).all()


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_batch_equals_one_by_one_and_class_filter_holds(model: Path) -> None:
    det = load_detector(model)
    bus = cv2.imread(str(ASSETS / "images" / "bus.jpg"))
    zidane = cv2.imread(str(ASSETS / "images" / "zidane.jpg"))
    together = det.detect([bus, zidane, bus])
    alone = [det.detect([im])[0] for im in (bus, zidane, bus)]
    for t, a in zip(together, alone, strict=True):
        assert t.class_id.tolist() == a.class_id.tolist()
        np.testing.assert_allclose(t.xyxy, a.xyxy, atol=1e-3)
    assert len(together[1]) >= 2 and set(together[1].class_id.tolist()) <= {0, 1, 2, 3, 5, 7, 9, 11}
    only_people = load_detector(model, classes=[0]).detect([bus])[0]
    assert only_people.class_id.tolist() == [0, 0, 0, 0]
    assert det.detect([]) == []


def test_name_version_and_providers() -> None:
    det = load_detector(ASSETS / "models" / "yolox_nano_coco_416.onnx", name="yolox", version="7")
    assert (det.name, det.version, det.input_size) == ("yolox", "7", (416, 416))
    default = load_detector(ASSETS / "models" / "yolox_nano_coco_416.onnx", providers=["NoSuchProvider"])
    assert default.name == "yolox_nano_coco_416" and len(default.version) == 12
    assert default.providers == ["CPUExecutionProvider"]
    assert default.sha256.startswith("d39bee73564e3380")


def test_ultralytics_backend_fails_clearly_without_the_extra() -> None:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="optional extra"):
            load_detector("yolo11n.pt")
    else:  # installed: a random-init network builds offline and detects (nothing, but in shape)
        det = load_detector("yolo11n.yaml")
        assert det.detect([np.zeros((480, 640, 3), np.uint8)])[0].xyxy.shape[1] == 4
