"""Object detectors behind one interface, for the central processor and the edge producers alike.

    det = load_detector("../shared/assets/models/yolox_nano_coco_416.onnx")
    boxes = det.detect([bgr_image, ...])   # list[Boxes], original-image pixels

Backends:
* ``OnnxDetector``: ONNX Runtime with the best available execution provider (TensorRT > CUDA > CPU
  by default). Output formats are detected from the output shape and model metadata:
  Ultralytics YOLOv8/YOLO11 ``1 x (4+C) x N`` (RGB/255, centred letterbox) and YOLOX ``1 x N x (5+C)``
  (grid decoded with strides 8/16/32, score = obj * cls, BGR 0..255, top-left letterbox).
  A model with a dynamic batch dimension gets one forward pass per batch; a fixed batch-1 export
  (all four shipped models) runs once per image on the already letterboxed, batched tensor.
* ``UltralyticsDetector``: PyTorch through the ``ultralytics`` package (FP16 on GPU), only when the
  ``ultralytics`` extra is installed.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from processors.inference import postprocess as pp
from schemas.boxes import TRAFFIC_CLASSES, Boxes

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
OutputFormat = Literal["ultralytics", "yolox"]


@runtime_checkable
class Detector(Protocol):
    """What every backend offers: a name and version for the records, and batched detection."""

    name: str
    version: str
    input_size: tuple[int, int]  # (height, width) of the network input

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        """BGR uint8 HxWx3 images -> one ``Boxes`` per image, in original-image pixels."""
        ...


@cache
def file_sha256(path: str) -> str:
    """Hex sha256 of a file (cached: model files are immutable once shipped)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model_path(model_path: str | Path, assets_dir: Path | None = None) -> Path:
    """``model_path`` as given if it exists, else under ``assets_dir`` (models/ may be left out)."""
    p = Path(model_path).expanduser()
    if p.exists() or assets_dir is None or p.is_absolute():
        return p
    for candidate in (assets_dir / p, assets_dir / "models" / p):
        if candidate.exists():
            return candidate
    return p


def choose_providers(wanted: Sequence[str] | None = None) -> list[str]:
    """The wanted execution providers that this onnxruntime build has, in order; CPU always last."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [p for p in (wanted or DEFAULT_PROVIDERS) if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def _provider_entries(providers: Sequence[str]) -> list[str | tuple[str, dict[str, Any]]]:
    """Providers with options: TensorRT builds FP16 engines once and caches them across restarts."""
    cache = Path.home() / ".cache" / "its" / "tensorrt"
    out: list[str | tuple[str, dict[str, Any]]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            cache.mkdir(parents=True, exist_ok=True)
            opts = {
                "trt_fp16_enable": True,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            }
            out.append((p, opts))
        else:
            out.append(p)
    return out


class OnnxDetector:
    """ONNX Runtime detector for Ultralytics- and YOLOX-format exports."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        conf: float = 0.25,
        iou: float = 0.45,
        classes: Sequence[int] | None = TRAFFIC_CLASSES,
        providers: Sequence[str] | None = None,
        name: str | None = None,
        version: str | None = None,
        output_format: OutputFormat | None = None,
        intra_op_threads: int = 0,
        max_det: int = 300,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file {self.path} does not exist")
        self.sha256 = file_sha256(str(self.path.resolve()))
        self.name = name or self.path.stem
        self.version = version or self.sha256[:12]
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.classes = None if classes is None else np.asarray(sorted(classes), dtype=np.int64)

        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        self.providers = choose_providers(providers)
        self.session = ort.InferenceSession(
            str(self.path), sess_options=opts, providers=_provider_entries(self.providers)
        )
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        b, _c, h, w = inp.shape
        if not isinstance(h, int) or not isinstance(w, int):
            raise ValueError(f"{self.path.name}: dynamic spatial input {inp.shape} is not supported")
        self.input_size = (h, w)
        # A symbolic or missing batch dim means one forward pass can take the whole batch.
        self.dynamic_batch = not isinstance(b, int) or b <= 0
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        out_shape = self.session.get_outputs()[0].shape
        self.format: OutputFormat = output_format or self._detect_format(out_shape)
        self.class_names = self._class_names()
        self.num_classes = (
            (out_shape[1] - 4) if self.format == "ultralytics" else (out_shape[-1] - 5)
        )  # fmt: skip
        if self.format == "yolox":
            self._rgb, self._normalise, self._center = False, False, False
            self._grid, self._stride = pp.yolox_grids(self.input_size)
        else:
            self._rgb, self._normalise, self._center = True, True, True
            self._grid = self._stride = None
        self._buffer: np.ndarray | None = None  # letterbox buffer, reused across batches of one size
        self._tensor: np.ndarray | None = None  # network input buffer, likewise
        if self.format == "yolox" and not self._yolox_is_raw():
            self._grid = self._stride = None  # exported with decode_in_inference: boxes already decoded
        self.last_timings: dict[str, float] = {"pre_ms": 0.0, "infer_ms": 0.0, "post_ms": 0.0}

    # --- format detection -------------------------------------------------------------------------

    def _detect_format(self, shape: Sequence[Any]) -> OutputFormat:
        if self.metadata.get("author", "").lower().startswith("ultralytics") or "names" in self.metadata:
            return "ultralytics"
        if len(shape) != 3 or not all(isinstance(d, int) for d in shape[1:]):
            raise ValueError(f"{self.path.name}: cannot tell the output format from shape {shape}")
        _, a, b = shape
        # Channels-first (4+C) x N is Ultralytics; anchor rows N x (5+C) is YOLOX.
        return "ultralytics" if a < b else "yolox"

    def _yolox_is_raw(self) -> bool:
        """Raw YOLOX heads give cell offsets (|xy| of a few units); decoded ones give pixels."""
        probe = np.full((1, 3, *self.input_size), pp.PAD_VALUE, np.float32)
        out = self.session.run(None, {self.input_name: probe})[0][0]
        return float(np.abs(out[:, :2]).max()) < min(self.input_size) / 8

    def _class_names(self) -> dict[int, str]:
        names = self.metadata.get("names")
        if names:
            try:
                return {int(k): str(v) for k, v in ast.literal_eval(names).items()}
            except (ValueError, SyntaxError):
                pass
        from schemas.boxes import COCO_NAMES

        return dict(COCO_NAMES)

    # --- inference --------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, pp.Letterbox]:
        """Letterbox the batch into one reusable buffer and convert it to the network's tensor."""
        n = len(images)
        # Buffers grow to the largest batch seen and are sliced (contiguous views) for smaller ones.
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n, *self.input_size, 3), np.uint8)
            self._tensor = np.empty((n, 3, *self.input_size), np.float32)
        lb = pp.letterbox(images, self.input_size, center=self._center, out=self._buffer[:n])
        assert self._tensor is not None
        return pp.to_tensor(lb.batch, rgb=self._rgb, normalise=self._normalise, out=self._tensor[:n]), lb

    def forward(self, tensor: np.ndarray) -> np.ndarray:
        """Raw network output for a (B, 3, H, W) tensor: one pass if the batch dim is dynamic."""
        if self.dynamic_batch or len(tensor) == 1:
            return self.session.run(None, {self.input_name: tensor})[0]
        return np.concatenate(
            [self.session.run(None, {self.input_name: tensor[i : i + 1]})[0] for i in range(len(tensor))]
        )

    def postprocess(self, raw: np.ndarray, lb: pp.Letterbox) -> list[Boxes]:
        out = []
        for i in range(len(raw)):
            if self.format == "yolox":
                decoded = pp.decode_yolox(raw[i], self._grid, self._stride)
            else:
                decoded = pp.decode_ultralytics(raw[i])
            xyxy, cls, score = pp.select(
                decoded, conf=self.conf, iou=self.iou, classes=self.classes, max_det=self.max_det
            )
            out.append(Boxes(pp.unletterbox(xyxy, float(lb.scale[i]), lb.pad[i], lb.shapes[i]), cls, score))
        return out

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        if not len(images):
            return []
        t0 = time.perf_counter()
        tensor, lb = self.preprocess(images)
        t1 = time.perf_counter()
        raw = self.forward(tensor)
        t2 = time.perf_counter()
        boxes = self.postprocess(raw, lb)
        t3 = time.perf_counter()
        self.last_timings = {
            "pre_ms": (t1 - t0) * 1e3,
            "infer_ms": (t2 - t1) * 1e3,
            "post_ms": (t3 - t2) * 1e3,
        }
        return boxes

    def describe(self) -> dict[str, Any]:
        """What the model registry records about this model."""
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
            "dynamic_batch": self.dynamic_batch,
            "providers": self.session.get_providers(),
            "sha256": self.sha256,
        }

    def __repr__(self) -> str:
        return (
            f"OnnxDetector({self.name}:{self.version} {self.format} {self.input_size} "
            f"{self.session.get_providers()[0]})"
        )


class UltralyticsDetector:
    """PyTorch detector through ``ultralytics`` (optional extra): FP16 on CUDA, class-agnostic NMS."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        conf: float = 0.25,
        iou: float = 0.45,
        classes: Sequence[int] | None = TRAFFIC_CLASSES,
        name: str | None = None,
        version: str | None = None,
        imgsz: int = 640,
        device: str | None = None,
    ) -> None:
        yolo_cls = ultralytics_yolo()
        import torch

        self.path = Path(model_path)
        self.model = yolo_cls(str(self.path))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.half = self.device.startswith("cuda")
        self.conf, self.iou = conf, iou
        self.classes = None if classes is None else list(classes)
        self.name = name or self.path.stem
        self.version = version or (
            file_sha256(str(self.path.resolve()))[:12] if self.path.is_file() else "random-init"
        )
        self.input_size = (imgsz, imgsz)
        self.last_timings: dict[str, float] = {"pre_ms": 0.0, "infer_ms": 0.0, "post_ms": 0.0}

    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        if not len(images):
            return []
        results = self.model.predict(
            list(images),
            imgsz=self.input_size[0],
            conf=self.conf,
            iou=self.iou,
            classes=self.classes,
            agnostic_nms=True,
            half=self.half,
            device=self.device,
            verbose=False,
        )
        out = []
        for res in results:
            b = res.boxes
            out.append(Boxes(b.xyxy.cpu().numpy(), b.cls.cpu().numpy(), b.conf.cpu().numpy()))
        speed = results[0].speed if results else {}
        n = len(images)
        self.last_timings = {
            "pre_ms": speed.get("preprocess", 0.0) * n,
            "infer_ms": speed.get("inference", 0.0) * n,
            "post_ms": speed.get("postprocess", 0.0) * n,
        }
        return out


def ultralytics_yolo() -> Any:
    """The ``ultralytics.YOLO`` class, or a clear error naming the extra to install."""
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise RuntimeError(
            "the ultralytics backend needs the optional extra: pip install 'its-camera-ai[ultralytics]' "
            f"(ultralytics + torch); import failed: {exc}"
        ) from exc
    return YOLO


def load_detector(
    model_path: str | Path,
    *,
    conf: float = 0.25,
    iou: float = 0.45,
    classes: Sequence[int] | None = TRAFFIC_CLASSES,
    providers: Sequence[str] | None = None,
    name: str | None = None,
    version: str | None = None,
    intra_op_threads: int = 0,
) -> Detector:
    """A detector for ``model_path``: ONNX Runtime for ``.onnx``, ultralytics for ``.pt/.engine/.yaml``."""
    suffix = Path(model_path).suffix.lower()
    if suffix in (".pt", ".engine", ".yaml", ".torchscript"):
        return UltralyticsDetector(
            model_path, conf=conf, iou=iou, classes=classes, name=name, version=version
        )
    det = OnnxDetector(
        model_path,
        conf=conf,
        iou=iou,
        classes=classes,
        providers=providers,
        name=name,
        version=version,
        intra_op_threads=intra_op_threads,
    )
    log.info("detector loaded", extra={"model": repr(det)})
    return det
