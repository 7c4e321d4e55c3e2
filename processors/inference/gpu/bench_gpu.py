"""GPU benchmark: JPEG bytes -> boxes for YOLO11n/m at FP16, batch 1-64, next to the Ultralytics predictor.

One command on a single-GPU machine with only torch + torchvision (and ultralytics brought as a
wheel, installed with --no-deps; see the README):

    python processors/inference/gpu/bench_gpu.py --wheels wheels/ --json gpu.json

Our path, all on the GPU: nvJPEG batch decode (``torchvision.io.decode_jpeg(device='cuda')``),
letterbox by one ``interpolate`` + pad per batch, FP16 forward pass, confidence filter and
``torchvision.ops.batched_nms`` with the image index as the group (class-agnostic within an image),
boxes scaled back to original pixels and copied to the host. The peer is ``YOLO.predict`` on the same
network (CPU JPEG decode with OpenCV, its own letterbox and NMS), batch for batch.

Weights are random-init (``YOLO('yolo11n.yaml')``): the same compute as trained weights, with
nothing to download. ``--device cpu --quick`` is a smoke run of the same code on a CPU (a small
stand-in network when ultralytics is not installed), used by the test suite.

Standalone on purpose: imports only torch, torchvision, the standard library, and optionally
ultralytics / OpenCV, so it runs on a GPU machine without the project's other dependencies.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

STRIDES = (8, 16, 32)
PAD = 114 / 255


def _need_torch() -> Any:
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(f"bench_gpu: torch and torchvision are required ({exc})\n")
        raise SystemExit(2) from exc
    return torch


def ensure_ultralytics(wheels: str | None) -> Any | None:
    """``ultralytics.YOLO``, installing wheels from ``wheels`` with --no-deps if needed; None if absent."""
    try:
        from ultralytics import YOLO

        return YOLO
    except ImportError:
        pass
    files = sorted(glob.glob(os.path.join(wheels, "*.whl"))) if wheels else []
    if not files:
        return None
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", *files], check=True)
    try:
        from ultralytics import YOLO

        return YOLO
    except ImportError as exc:
        sys.stderr.write(f"bench_gpu: ultralytics installed from {wheels} but does not import: {exc}\n")
        return None


# --- inputs ----------------------------------------------------------------------------------------


def synthetic_jpegs(n: int, height: int, width: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct street-like frames (gradient sky/road, boxes as vehicles), JPEG quality 90."""
    import torch
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(seed)
    out = []
    y = torch.linspace(0, 1, height).view(height, 1)
    x = torch.linspace(0, 1, width).view(1, width)
    for i in range(n):
        img = torch.empty(3, height, width)
        img[0] = 0.35 + 0.3 * y + 0.05 * x
        img[1] = 0.40 + 0.2 * y
        img[2] = 0.45 + 0.1 * y - 0.05 * x
        for _ in range(12):  # vehicles: filled boxes of random colour
            w = int(torch.randint(width // 20, width // 6, (1,), generator=gen))
            h = int(w * 0.6)
            x0 = int(torch.randint(0, width - w, (1,), generator=gen))
            y0 = int(torch.randint(height // 3, height - h, (1,), generator=gen))
            img[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(3, 1, 1, generator=gen)
        img += 0.03 * torch.randn(3, height, width, generator=gen)  # sensor noise: realistic JPEG sizes
        img[:, :, (i * 7) % width] = 1.0
        out.append(encode_jpeg((img.clamp(0, 1) * 255).to(torch.uint8), quality=90).numpy().tobytes())
    return out


# --- our GPU pipeline ------------------------------------------------------------------------------


class GpuPipeline:
    """JPEG bytes -> per-image (xyxy, score, class) on one device, batched end to end."""

    def __init__(self, net: Any, device: str, imgsz: int = 640, half: bool = True, conf: float = 0.25,
                 iou: float = 0.45, max_det: int = 300) -> None:  # fmt: skip
        import torch

        self.torch = torch
        self.net, self.device, self.imgsz = net, torch.device(device), imgsz
        self.dtype = torch.float16 if half else torch.float32
        self.conf, self.iou, self.max_det = conf, iou, max_det

    def decode(self, jpegs: list[bytes]) -> list[Any]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
        if self.device.type == "cuda":
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)  # nvJPEG, batched
        return [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data]

    def letterbox(self, images: list[Any]) -> tuple[Any, Any, Any]:
        """(B,3,S,S) input, per-image scale (B,) and pad (B,2): centred, grey 114, as Ultralytics."""
        torch = self.torch
        s = self.imgsz
        batch = torch.full((len(images), 3, s, s), PAD, dtype=self.dtype, device=self.device)
        scales = torch.empty(len(images), device=self.device)
        pads = torch.empty(len(images), 2, device=self.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault((int(im.shape[1]), int(im.shape[2])), []).append(i)
        for (h, w), idx in groups.items():  # one resize per frame size: cameras share a few sizes
            r = min(s / h, s / w)
            nh, nw = round(h * r), round(w * r)
            top, left = round((s - nh) / 2 - 0.1), round((s - nw) / 2 - 0.1)
            stack = torch.stack([images[i] for i in idx]).to(self.dtype).div_(255)
            resized = torch.nn.functional.interpolate(
                stack, size=(nh, nw), mode="bilinear", align_corners=False
            )
            index = torch.tensor(idx, device=self.device)
            batch[index, :, top : top + nh, left : left + nw] = resized
            scales[index] = r
            pads[index] = torch.tensor([left, top], dtype=pads.dtype, device=self.device)
        return batch, scales, pads

    def postprocess(self, raw: Any, scales: Any, pads: Any, shapes: list[tuple[int, int]]) -> list[Any]:
        """(B, 4+C, N) -> per image (K, 6) [x1, y1, x2, y2, score, class] in original pixels."""
        from torchvision.ops import batched_nms

        torch = self.torch
        # Scores in the network's precision; only the few candidates are gathered and made float32.
        score, cls = raw[:, 4:, :].max(dim=1)  # (B, N)
        keep = score > self.conf
        img_idx, anchor = keep.nonzero(as_tuple=True)
        rows = raw[img_idx, :4, anchor].float()  # (K, 4) cx, cy, w, h
        cxcy, wh = rows[:, 0:2], rows[:, 2:4] / 2
        boxes = torch.cat([cxcy - wh, cxcy + wh], dim=1)
        sc, cl = score[img_idx, anchor].float(), cls[img_idx, anchor]
        kept = batched_nms(boxes, sc, img_idx, self.iou)  # per image, class-agnostic
        boxes, sc, cl, img_idx = boxes[kept], sc[kept], cl[kept], img_idx[kept]
        boxes = (boxes - pads[img_idx].repeat(1, 2)) / scales[img_idx, None]
        out = torch.cat([boxes, sc[:, None], cl[:, None].float()], dim=1).cpu()  # one copy to the host
        img_cpu = img_idx.cpu()
        results = []
        for i, (h, w) in enumerate(shapes):
            det = out[img_cpu == i][: self.max_det]
            det[:, 0:4:2] = det[:, 0:4:2].clamp(0, w)
            det[:, 1:4:2] = det[:, 1:4:2].clamp(0, h)
            results.append(det)
        return results

    def __call__(self, jpegs: list[bytes]) -> list[Any]:
        torch = self.torch
        with torch.inference_mode():
            images = self.decode(jpegs)
            shapes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
            batch, scales, pads = self.letterbox(images)
            raw = self.net(batch)
            raw = raw[0] if isinstance(raw, (tuple, list)) else raw  # ultralytics eval: (y, features)
            if not isinstance(raw, torch.Tensor) or raw.ndim != 3:
                raise TypeError(f"expected a (B, 4+C, N) tensor from the network, got {type(raw)}")
            return self.postprocess(raw, scales, pads, shapes)


# --- networks --------------------------------------------------------------------------------------


def build_net(name: str, yolo_cls: Any, device: str, half: bool) -> tuple[Any, Any, str]:
    """(torch module, ultralytics YOLO object or None, description) for ``name`` (yolo11n/yolo11m)."""
    torch = _need_torch()
    if yolo_cls is not None:
        yolo = yolo_cls(f"{name}.yaml")  # random init, offline
        net = yolo.model.fuse(verbose=False) if hasattr(yolo.model, "fuse") else yolo.model
        net = net.to(device).eval()
        net = net.half() if half else net.float()
        return net, yolo, f"{name} random-init (ultralytics)"
    return StandIn(torch, 80).to(device).eval().to(torch.float16 if half else torch.float32), None, "stand-in"


def StandIn(torch: Any, nc: int) -> Any:
    """A small YOLO-shaped network (strides 8/16/32 -> (B, 4+nc, N)) for smoke runs without ultralytics."""

    class _Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = [3, 16, 32, 64, 64, 64]
            self.stem = torch.nn.Sequential(
                *[
                    torch.nn.Sequential(torch.nn.Conv2d(c[i], c[i + 1], 3, 2, 1), torch.nn.SiLU())
                    for i in range(5)
                ]
            )
            self.heads = torch.nn.ModuleList([torch.nn.Conv2d(64, 4 + nc, 1) for _ in STRIDES])

        def forward(self, x: Any) -> Any:
            feats, outs = [], []
            for i, layer in enumerate(self.stem):
                x = layer(x)
                if i >= 2:
                    feats.append(x)
            for f, head, stride in zip(feats, self.heads, STRIDES, strict=True):
                y = head(f)
                b, _, h, w = y.shape
                gy, gx = torch.meshgrid(torch.arange(h, device=y.device), torch.arange(w, device=y.device),
                                        indexing="ij")  # fmt: skip
                grid = torch.stack([gx, gy]).to(y.dtype).view(1, 2, h, w)
                xy = (y[:, 0:2].sigmoid() * 2 - 0.5 + grid) * stride
                wh = y[:, 2:4].sigmoid() * 4 * stride
                outs.append(torch.cat([xy, wh, y[:, 4:].sigmoid()], 1).view(b, 4 + nc, -1))
            return torch.cat(outs, 2)

    return _Net()


# --- timing ----------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(
    fn: Any, batches: list[Any], device: str, min_seconds: float, warmup: int = 2
) -> tuple[float, list[float]]:
    """(items/s, per-call latencies in s): calls ``fn`` over ``batches`` round-robin for >= min_seconds."""
    for b in batches[:warmup]:
        fn(b)
    _sync(device)
    lat: list[float] = []
    items = 0
    start = time.perf_counter()
    i = 0
    while True:
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        fn(b)
        _sync(device)
        lat.append(time.perf_counter() - t0)
        items += len(b) if isinstance(b, list) else int(b.shape[0])
        i += 1
        if time.perf_counter() - start >= min_seconds and i >= len(batches):
            break
    return items / (time.perf_counter() - start), lat


def _pct(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))] * 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch = _need_torch()
    import torchvision

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.stderr.write("bench_gpu: CUDA is not available; use --device cpu --quick for a smoke run\n")
        raise SystemExit(2)
    half = device.startswith("cuda")
    yolo_cls = ensure_ultralytics(args.wheels)
    w, h = (int(v) for v in args.frame.split("x"))
    jpegs = synthetic_jpegs(args.pool, h, w)
    card = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
    report: dict[str, Any] = {
        "bench": "gpu-inference",
        "machine": {
            "device": card,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "frame": args.frame,
            "jpeg_kb_mean": round(statistics.mean(len(j) for j in jpegs) / 1024, 1),
            "precision": "fp16" if half else "fp32",
            "ultralytics": getattr(sys.modules.get("ultralytics"), "__version__", None),
        },
        "cases": [],
    }

    def case(name: str, metric: str, unit: str, ours: float, peer: float | None, peer_name: str) -> None:
        report["cases"].append({
            "case": name, "metric": metric, "unit": unit, "ours": round(ours, 2),
            "peer": None if peer is None else round(peer, 2), "peer_name": peer_name,
            "ratio": round(ours / peer, 3) if peer else None,
        })  # fmt: skip
        shown = f"{peer:>9.1f}" if peer else "        -"
        print(
            f"{name:<24} {metric:<12} ours {ours:>10.1f} {unit:<9} peer {shown}  {peer_name}", file=sys.stderr
        )

    # nvJPEG alone, for orientation
    pipe0 = GpuPipeline(torch.nn.Identity(), device, args.imgsz, half)
    bs = max(args.batches)
    fps, _ = timed(
        pipe0.decode, [jpegs[i : i + bs] for i in range(0, len(jpegs), bs)] or [jpegs], device, args.seconds
    )
    case(
        f"decode {args.frame}", "throughput", "images/s", fps, None, "nvJPEG batch decode" if half else "CPU"
    )

    for model in args.models:
        net, yolo, desc = build_net(model, yolo_cls, device, half)
        pipe = GpuPipeline(net, device, args.imgsz, half, conf=args.conf)
        for batch in args.batches:
            groups = [jpegs[i : i + batch] for i in range(0, max(len(jpegs) - batch + 1, 1), batch)]
            fps, lat = timed(pipe, groups, device, args.seconds)
            tensor = torch.rand(batch, 3, args.imgsz, args.imgsz, device=device,
                                dtype=torch.float16 if half else torch.float32)  # fmt: skip
            with torch.inference_mode():
                net_fps, _ = timed(net, [tensor], device, args.seconds / 2)
            peer, peer_name = None, "ultralytics not installed"
            if yolo is not None and batch in args.peer_batches:
                peer, peer_name = (
                    ultralytics_fps(yolo, jpegs, batch, device, half, args),
                    "ultralytics predict",
                )
            label = f"{model} bs{batch}"
            case(label, "throughput", "frames/s", fps, peer, peer_name)
            case(label, "latency p50", "ms/batch", _pct(lat, 50), None, "")
            case(label, "latency p99", "ms/batch", _pct(lat, 99), None, "")
            case(label, "bare network", "frames/s", net_fps, None, f"{desc}, forward only")
        del net, pipe
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return report


def ultralytics_fps(yolo: Any, jpegs: list[bytes], batch: int, device: str, half: bool, args: Any) -> float:
    """Frames/s of YOLO.predict from the same JPEG bytes (OpenCV decode on the host, its own pipeline)."""
    import cv2
    import numpy as np

    def predict(chunk: list[bytes]) -> None:
        images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in chunk]
        yolo.predict(images, imgsz=args.imgsz, half=half, device=device, conf=args.conf, iou=0.45,
                     agnostic_nms=True, verbose=False, batch=batch)  # fmt: skip

    groups = [jpegs[i : i + batch] for i in range(0, max(len(jpegs) - batch + 1, 1), batch)]
    fps, _ = timed(predict, groups, device, args.seconds)
    return fps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--models", default="yolo11n,yolo11m", type=lambda s: s.split(","))
    p.add_argument("--batches", default="1,2,4,8,16,32,64", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--peer-batches", default="1,8,32,64", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--frame", default="1920x1080", help="WxH of the synthetic camera frames")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--pool", type=int, default=256, help="distinct JPEG frames cycled through")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per case")
    p.add_argument(
        "--wheels", default=None, help="folder of wheels (ultralytics, ultralytics-thop) to install"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one model, batches 1,2")
    p.add_argument("--json", dest="json_out", default=None, help="also write the report to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batches, args.peer_batches = args.models[:1], [1, 2], [2]
        args.frame, args.imgsz, args.pool, args.seconds = "320x240", 160, 4, 0.2
    report = run(args)
    text = json.dumps(report)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
