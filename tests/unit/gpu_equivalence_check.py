"""Run under an interpreter with torch: the GPU pipeline's letterbox and NMS equal the numpy ones.

Invoked by ``test_gpu_bench_script.py`` (the project's own interpreter has no torch); prints "ok".
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "processors" / "inference" / "gpu")]

import bench_gpu as g  # noqa: E402

from processors.inference import postprocess as pp  # noqa: E402


def main() -> None:
    pipe = g.GpuPipeline(torch.nn.Identity(), "cpu", 640, half=False)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (1080, 810, 3), np.uint8), rng.integers(0, 255, (720, 1280, 3), np.uint8)]
    batch, scales, pads = pipe.letterbox(
        [torch.from_numpy(f[..., ::-1].copy()).permute(2, 0, 1) for f in frames]
    )
    lb = pp.letterbox(frames, (640, 640), center=True)
    assert np.allclose(scales.numpy(), lb.scale) and np.allclose(pads.numpy(), lb.pad), (scales, pads)
    ref = pp.to_tensor(lb.batch, rgb=True, normalise=True)
    pad_rows = np.abs(batch.numpy() - ref)[1, :, :140]  # the grey border is identical
    assert pad_rows.max() < 1e-6

    raw = np.zeros((2, 84, 8400), np.float32)
    raw[:, 0:2] = rng.uniform(0, 640, (2, 2, 8400))
    raw[:, 2:4] = rng.uniform(5, 200, (2, 2, 8400))
    raw[:, 4:] = rng.uniform(0, 1, (2, 80, 8400)) ** 30
    shapes = [(1080, 810), (720, 1280)]
    got = pipe.postprocess(torch.from_numpy(raw), scales, pads, shapes)
    for i in range(2):
        xyxy, cls, _ = pp.select(pp.decode_ultralytics(raw[i]), conf=0.25, iou=0.45, classes=None)
        want = pp.unletterbox(xyxy, float(lb.scale[i]), lb.pad[i], lb.shapes[i])
        mine = got[i].numpy()
        assert len(mine) == len(want) > 0, (len(mine), len(want))
        assert np.abs(mine[:, :4] - want).max() < 1e-2
        assert (mine[:, 5].astype(int) == cls).all()
    print("ok")


if __name__ == "__main__":
    main()
