"""Fuzz the inference processor's frame path: validation, JPEG decode, letterbox, tensor.

Contract (as ``InferenceHandler`` runs it): ``validate_frame`` returns a reason or None and never
raises; a frame it accepts either decodes or raises ``FrameDecodeError`` (a dead letter); a decoded
image always letterboxes into each shipped model's input. Anything else would abort the batch
transaction three times and stop the processor: a crash. Inputs: raw bytes, real JPEGs of odd sizes
with byte edits, and the same JPEGs with fuzzed frame-header dimensions (decompression bombs).

    python -m tests.fuzz.fuzz_frame -max_total_time=10 CORPUS_DIR
"""

from __future__ import annotations

from collections.abc import Callable

from tests.fuzz.harness import mutate, run

NOW_MS = 1_795_000_000_000


def load() -> Callable[[bytes], None]:
    import atheris
    import cv2
    import numpy as np

    from processors.inference import postprocess as pp
    from processors.inference.processor import FrameDecodeError, decode_jpeg
    from schemas import records as r
    from schemas.validate import validate_frame

    rng = np.random.default_rng(0)
    seeds: list[bytes] = []
    for h, w, flags in (
        (48, 64, []),
        (8, 8, []),
        (1, 96, []),
        (96, 1, []),
        (37, 53, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ):
        ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (h, w, 3), dtype=np.uint8), flags)
        assert ok
        seeds.append(buf.tobytes())
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (16, 24), dtype=np.uint8))  # greyscale JPEG
    seeds.append(buf.tobytes())
    # (size, centre) of the shipped models' letterboxes: YOLOX 416 top-left, Ultralytics 320/640 centred.
    inputs = (((416, 416), False), ((320, 320), True), ((640, 640), True))

    def target(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        mode = fdp.ConsumeIntInRange(0, 2)
        if mode == 0:
            payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        else:
            payload = seeds[fdp.ConsumeIntInRange(0, len(seeds) - 1)]
            if mode == 2:  # rewrite the frame header's height and width
                sof = payload.find(b"\xff\xc0")
                sof = sof if sof >= 0 else payload.find(b"\xff\xc2")
                # Log-uniform sides: tiny, huge and very uneven images all come up within seconds.
                height = fdp.ConsumeIntInRange(0, 0xFFFF) >> fdp.ConsumeIntInRange(0, 16)
                width = fdp.ConsumeIntInRange(0, 0xFFFF) >> fdp.ConsumeIntInRange(0, 16)
                dims = height.to_bytes(2, "big") + width.to_bytes(2, "big")
                payload = payload[: sof + 5] + dims + payload[sof + 9 :]
            payload = mutate(payload, fdp, 4) if fdp.ConsumeBool() else payload
        frame = r.Frame("cam-fuzz", 1, NOW_MS, 64, 48, True, payload)
        if validate_frame(frame, NOW_MS) is not None:
            return
        try:
            img = decode_jpeg(payload)
        except FrameDecodeError:
            return
        for size, centre in inputs:
            box = pp.letterbox([img], size, center=centre)
            assert box.batch.shape == (1, *size, 3)
            pp.to_tensor(box.batch, rgb=centre, normalise=centre)

    return target


if __name__ == "__main__":
    run(load, ["schemas.validate", "processors.inference.postprocess"])
