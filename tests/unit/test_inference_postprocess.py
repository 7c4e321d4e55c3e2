"""Letterbox, YOLOX/Ultralytics decode and NMS on plain arrays, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from processors.inference import postprocess as pp

pytestmark = pytest.mark.unit


def test_centred_letterbox_matches_ultralytics_geometry() -> None:
    img = np.zeros((720, 1280, 3), np.uint8)
    img[:] = (10, 20, 30)
    lb = pp.letterbox([img], (640, 640), center=True)
    assert lb.batch.shape == (1, 640, 640, 3)
    assert lb.scale[0] == pytest.approx(0.5)
    # 1280x720 -> 640x360, 280 px of padding split 140 above, 140 below
    assert lb.pad[0].tolist() == [0.0, 140.0]
    assert (lb.batch[0, :140] == 114).all() and (lb.batch[0, 500:] == 114).all()
    assert (lb.batch[0, 140:500] == (10, 20, 30)).all()


def test_top_left_letterbox_is_yolox_geometry_and_batches_mixed_sizes() -> None:
    a = np.full((100, 200, 3), 7, np.uint8)
    b = np.full((300, 150, 3), 9, np.uint8)
    lb = pp.letterbox([a, b], (416, 416), center=False)
    assert lb.pad.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert lb.scale.tolist() == pytest.approx([416 / 200, 416 / 300])
    assert (lb.batch[0, :208] == 7).all() and (lb.batch[0, 208:] == 114).all()
    assert (lb.batch[1, :, :208] == 9).all() and (lb.batch[1, :, 208:] == 114).all()
    assert lb.shapes.tolist() == [[100, 200], [300, 150]]


def test_to_tensor_orders_channels_and_scales() -> None:
    batch = np.zeros((2, 4, 4, 3), np.uint8)
    batch[..., 0], batch[..., 2] = 255, 51  # B=255, R=51
    rgb = pp.to_tensor(batch, rgb=True, normalise=True)
    assert rgb.shape == (2, 3, 4, 4) and rgb.dtype == np.float32 and rgb.flags.c_contiguous
    assert rgb[0, 0, 0, 0] == pytest.approx(0.2) and rgb[0, 2, 0, 0] == pytest.approx(1.0)
    bgr = pp.to_tensor(batch, rgb=False, normalise=False)
    assert bgr[1, 0, 3, 3] == 255.0 and bgr[1, 2, 3, 3] == 51.0


def test_yolox_grid_decode() -> None:
    grid, stride = pp.yolox_grids((64, 64))
    assert len(grid) == 8 * 8 + 4 * 4 + 2 * 2 and stride[0, 0] == 8 and stride[-1, 0] == 32
    raw = np.zeros((len(grid), 5 + 3), np.float32)
    k = 8 * 8 + 4 * 1 + 2  # stride-16 level, row 1, column 2
    raw[k, :5] = [0.5, 0.5, np.log(2.0), 0.0, 0.8]  # centre (2.5, 1.5) cells, w = 2 cells, h = 1 cell
    raw[k, 5:] = [0.1, 0.5, 0.2]
    out = pp.decode_yolox(raw, grid, stride)
    assert out[k, :4].tolist() == pytest.approx([40 - 16, 24 - 8, 40 + 16, 24 + 8])
    assert out[k, 4:].tolist() == pytest.approx([0.08, 0.4, 0.16])


def test_ultralytics_decode_is_channels_first_cxcywh() -> None:
    raw = np.zeros((4 + 2, 3), np.float32)
    raw[:, 1] = [100, 50, 20, 10, 0.1, 0.9]
    out = pp.decode_ultralytics(raw)
    assert out.shape == (3, 6) and out[1].tolist() == pytest.approx([90, 45, 110, 55, 0.1, 0.9])


def test_nms_is_class_agnostic_and_greedy() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.9], [50, 50, 60, 60]], np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1], np.float32)
    keep = pp.nms(boxes, scores, iou=0.45)
    # 3 beats 0 (IoU 0.99) and 1 (IoU ~0.67); 2 and 4 overlap nothing
    assert keep.tolist() == [3, 2, 4]
    assert pp.nms(boxes[:0], scores[:0], 0.5).tolist() == []
    # an IoU threshold above every overlap keeps everything, ordered by score
    assert pp.nms(boxes, scores, iou=0.999).tolist() == [3, 0, 1, 2, 4]


def test_select_thresholds_filters_classes_and_suppresses_across_classes() -> None:
    # rows: xyxy + 3 class scores
    decoded = np.array(
        [
            [0, 0, 10, 10, 0.9, 0.0, 0.0],  # class 0 best
            [0, 0, 10, 10.5, 0.0, 0.8, 0.0],  # class 1, same object: suppressed by the class-0 box
            [20, 20, 30, 30, 0.0, 0.0, 0.6],  # class 2: dropped by the class filter
            [40, 40, 50, 50, 0.2, 0.0, 0.0],  # below conf
            [60, 60, 70, 70, 0.3, 0.7, 0.0],  # class 1 best
        ],
        np.float32,
    )
    xyxy, cls, score = pp.select(decoded, conf=0.25, iou=0.45, classes=np.array([0, 1]))
    assert cls.tolist() == [0, 1] and score.tolist() == pytest.approx([0.9, 0.7])
    assert xyxy.tolist() == [[0, 0, 10, 10], [60, 60, 70, 70]]
    _, cls_all, _ = pp.select(decoded, conf=0.25, iou=0.45, classes=None)
    assert sorted(cls_all.tolist()) == [0, 1, 2]


def test_unletterbox_inverts_letterbox_and_clips() -> None:
    lb = pp.letterbox([np.zeros((720, 1280, 3), np.uint8)], (640, 640), center=True)
    model_px = np.array([[100, 190, 200, 240], [-5, 130, 700, 600]], np.float32)
    orig = pp.unletterbox(model_px, float(lb.scale[0]), lb.pad[0], lb.shapes[0])
    assert orig[0].tolist() == pytest.approx([200, 100, 400, 200])
    assert orig[1].tolist() == pytest.approx([0, 0, 1280, 720])
