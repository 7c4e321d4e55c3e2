"""Pure-array pre- and post-processing shared by every detector backend: letterbox, decode, NMS.

Everything here works on whole arrays (a batch of images, all anchors of an output) so the hot path
has no per-box Python loop; only the resize itself is per image, because frames differ in size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # the grey both Ultralytics and YOLOX pad with


@dataclass(slots=True)
class Letterbox:
    """A letterboxed batch and how to map its boxes back: ``orig = (xy - pad) / scale``."""

    batch: np.ndarray  # (B, H, W, 3) uint8, channel order of the input images
    scale: np.ndarray  # (B,) float32 resize ratio per image
    pad: np.ndarray  # (B, 2) float32 (left, top) padding per image, pixels of the model input
    shapes: np.ndarray  # (B, 2) int (height, width) of the original images


def letterbox(
    images: Sequence[np.ndarray],
    size: tuple[int, int],
    *,
    center: bool = True,
    pad_value: int = PAD_VALUE,
    out: np.ndarray | None = None,
) -> Letterbox:
    """Resize each image to fit ``size`` (height, width) keeping its aspect ratio, pad the rest.

    ``center=True`` is Ultralytics' letterbox (padding split on both sides, rounded as Ultralytics
    rounds it); ``center=False`` is YOLOX's (image at the top-left, padding right and bottom).
    ``out`` lets a caller reuse one (B, H, W, 3) buffer across batches.
    """
    th, tw = size
    n = len(images)
    if out is None or out.shape != (n, th, tw, 3):
        out = np.empty((n, th, tw, 3), np.uint8)
    out.fill(pad_value)
    shapes = np.array([im.shape[:2] for im in images], dtype=np.int64).reshape(n, 2)
    h = shapes[:, 0].astype(np.float64)
    w = shapes[:, 1].astype(np.float64)
    scale = np.minimum(th / np.maximum(h, 1), tw / np.maximum(w, 1))
    if center:
        nw, nh = np.round(w * scale).astype(np.int64), np.round(h * scale).astype(np.int64)
    else:
        nw, nh = (w * scale).astype(np.int64), (h * scale).astype(np.int64)
    # A very uneven image (1 x 3000 px) would scale one side to 0 px, which cv2.resize refuses:
    # keep at least one row and column (found by tests/fuzz/fuzz_frame.py).
    nw, nh = np.maximum(nw, 1), np.maximum(nh, 1)
    if center:
        dw, dh = (tw - nw) / 2, (th - nh) / 2
        left, top = np.round(dw - 0.1).astype(np.int64), np.round(dh - 0.1).astype(np.int64)
    else:
        left = top = np.zeros(n, np.int64)
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"image {i} has shape {im.shape}, want HxWx3")
        resized = (
            im
            if (im.shape[0], im.shape[1]) == (nh[i], nw[i])
            else cv2.resize(im, (int(nw[i]), int(nh[i])), interpolation=cv2.INTER_LINEAR)
        )
        out[i, top[i] : top[i] + nh[i], left[i] : left[i] + nw[i]] = resized
    pad = np.stack([left, top], axis=1).astype(np.float32)
    return Letterbox(out, scale.astype(np.float32), pad, shapes)


def to_tensor(batch: np.ndarray, *, rgb: bool, normalise: bool, out: np.ndarray | None = None) -> np.ndarray:
    """(B, H, W, 3) uint8 BGR -> (B, 3, H, W) float32 in the model's channel order and value range.

    One strided channel copy per plane into a contiguous buffer (reusable through ``out``): about
    nine times faster than ``transpose().astype()``, which gathers every element across strides.
    """
    n, h, w, _ = batch.shape
    if out is None or out.shape != (n, 3, h, w):
        out = np.empty((n, 3, h, w), np.float32)
    scale = np.float32(1.0 / 255.0)
    for c in range(3):
        src = batch[..., 2 - c] if rgb else batch[..., c]
        if normalise:
            np.multiply(src, scale, out=out[:, c], casting="unsafe")
        else:
            out[:, c] = src
    return out


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[..., 2:4] / 2
    return np.concatenate([b[..., 0:2] - half, b[..., 0:2] + half], axis=-1)


def yolox_grids(size: tuple[int, int], strides: Sequence[int] = (8, 16, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-point grid (N, 2) and per-anchor stride (N, 1) of a YOLOX head for input ``size``."""
    th, tw = size
    grids, strides_col = [], []
    for s in strides:
        gh, gw = th // s, tw // s
        yv, xv = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack([xv, yv], axis=-1).reshape(-1, 2))
        strides_col.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides_col).astype(np.float32)


def decode_yolox(raw: np.ndarray, grid: np.ndarray | None, stride: np.ndarray | None) -> np.ndarray:
    """YOLOX rows (N, 5+C) -> (N, 4+C): xyxy in input pixels, then class scores = obj * cls.

    ``grid``/``stride`` None means the export already decoded the boxes (``decode_in_inference``).
    """
    if grid is not None and stride is not None:
        xy = (raw[:, 0:2] + grid) * stride
        wh = np.exp(raw[:, 2:4]) * stride
        boxes = np.concatenate([xy, wh], axis=1)
    else:
        boxes = raw[:, 0:4]
    scores = raw[:, 5:] * raw[:, 4:5]
    return np.concatenate([cxcywh_to_xyxy(boxes), scores], axis=1)


def decode_ultralytics(raw: np.ndarray) -> np.ndarray:
    """Ultralytics (4+C, N) -> (N, 4+C): xyxy in input pixels, then class scores."""
    rows = raw.T
    return np.concatenate([cxcywh_to_xyxy(rows[:, :4]), rows[:, 4:]], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy class-agnostic NMS; indices kept, highest score first.

    One vectorised IoU row per kept box; the candidates left after the confidence filter are few
    (tens to hundreds), so this is cheaper than a full N x N matrix.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def select(
    decoded: np.ndarray,
    *,
    conf: float,
    iou: float,
    classes: np.ndarray | None,
    max_det: int = 300,
    max_candidates: int = 30_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 4+C) decoded rows -> (xyxy, class_id, score) after threshold, class filter and NMS.

    As Ultralytics does: each anchor's class is its best class over all C, then the class filter
    drops anchors whose best class is not wanted (a 'train' does not become a 'bus'), before NMS.
    """
    scores_all = decoded[:, 4:]
    class_id = scores_all.argmax(axis=1)
    score = np.take_along_axis(scores_all, class_id[:, None], axis=1)[:, 0]
    keep = score > conf
    if classes is not None:
        keep &= np.isin(class_id, classes)
    boxes, class_id, score = decoded[keep, :4], class_id[keep], score[keep]
    if len(score) > max_candidates:
        top = np.argpartition(-score, max_candidates)[:max_candidates]
        boxes, class_id, score = boxes[top], class_id[top], score[top]
    kept = nms(boxes, score, iou)[:max_det]
    return boxes[kept], class_id[kept], score[kept]


def unletterbox(xyxy: np.ndarray, scale: float, pad: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Boxes in model-input pixels -> original-image pixels, clipped to the image."""
    h, w = int(shape[0]), int(shape[1])
    out = (xyxy - np.concatenate([pad, pad])) / scale
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out.astype(np.float32)
