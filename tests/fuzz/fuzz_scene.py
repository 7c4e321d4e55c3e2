"""Fuzz the scene-config parser: camera registrations (records and JSON) into the analytics engine.

Contract (as ``its camera register`` and ``its process analytics`` run it): a camera JSON/YAML
document becomes a ``Camera`` or raises ``CameraFileError``/``ValueError``; a ``Camera`` record is
accepted by ``Engine.on_camera`` or refused with ``SceneError`` (a dead letter); an accepted scene
then tracks a frame of detections without error. Anything else stops the processor on a poison
registration: a crash. Inputs: real cameras (the example and a simulated junction) with fuzzed numbers
(NaN, infinities, huge and tiny values), dropped and duplicated list items, and fuzzed JSON text.

    python -m tests.fuzz.fuzz_scene -max_total_time=10 CORPUS_DIR
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from tests.fuzz.harness import mutate, run

SPECIAL = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.0, 1e308, -1e308, 1e-308, 5e9, 2.0**53]


def _leaves(node: Any, out: list[tuple[Any, Any]], lists: list[list[Any]]) -> None:
    """(container, key) of every number in ``node``, and every non-empty list."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    if isinstance(node, list) and node:
        lists.append(node)
    for key, value in items:
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out.append((node, key))
        else:
            _leaves(value, out, lists)


def load() -> Callable[[bytes], None]:
    import atheris

    from processors.analytics.engine import Engine
    from processors.analytics.scene import SceneError
    from processors.analytics.settings import AnalyticsSettings
    from producers.registry import CameraFileError, camera_from_dict
    from schemas import codec
    from schemas import records as r
    from schemas.examples import example_camera

    cfg = AnalyticsSettings()
    base = example_camera()
    # A second base without calibration pairs: the metres-per-pixel path.
    approx = example_camera("cam-approx")
    approx.scene.calibration = r.Calibration(metres_per_pixel=0.05)
    bases = [codec.to_avro(base), codec.to_avro(approx)]
    # Cars on both lanes and a pedestrian on the crosswalk of the example junction.
    boxes = [420.0, 500.0, 500.0, 560.0, 760.0, 420.0, 840.0, 470.0, 600.0, 290.0, 630.0, 345.0]
    frames = [r.Detections("", 1, 0, 1280, 720, "fuzz", "1", boxes, [2, 2, 0], [0.9, 0.8, 0.7])]
    texts = [json.dumps(b).encode() for b in bases]
    for seed in bases:  # the seeds themselves are valid scenes
        Engine(cfg).on_camera(codec.from_avro(r.Camera, seed))

    def fuzz_record(fdp: Any) -> r.Camera:
        doc = copy.deepcopy(bases[fdp.ConsumeIntInRange(0, len(bases) - 1)])
        for _ in range(fdp.ConsumeIntInRange(1, 6)):
            numbers: list[tuple[Any, Any]] = []
            lists: list[list[Any]] = []
            _leaves(doc, numbers, lists)
            op = fdp.ConsumeIntInRange(0, 3)
            if op <= 1 and numbers:
                node, key = numbers[fdp.ConsumeIntInRange(0, len(numbers) - 1)]
                node[key] = (
                    SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)]
                    if op == 0
                    else fdp.ConsumeRegularFloat()
                )
            elif op == 2 and lists:
                seq = lists[fdp.ConsumeIntInRange(0, len(lists) - 1)]
                del seq[fdp.ConsumeIntInRange(0, len(seq) - 1)]
            elif lists:
                seq = lists[fdp.ConsumeIntInRange(0, len(lists) - 1)]
                seq.append(copy.deepcopy(seq[fdp.ConsumeIntInRange(0, len(seq) - 1)]))
        return codec.from_avro(r.Camera, doc)

    def target(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        if fdp.ConsumeBool():
            camera = fuzz_record(fdp)
        else:
            text = texts[fdp.ConsumeIntInRange(0, len(texts) - 1)]
            text = mutate(text, fdp, 6) if fdp.ConsumeBool() else fdp.ConsumeBytes(fdp.remaining_bytes())
            try:
                doc = json.loads(text)
            except ValueError:  # not JSON (UnicodeDecodeError and JSONDecodeError are ValueErrors)
                return
            if not isinstance(doc, dict):
                return
            try:
                camera = camera_from_dict(doc, now_ms=0)
            except (CameraFileError, ValueError):
                return
        engine = Engine(cfg)
        try:
            engine.on_camera(camera)
        except SceneError:
            return
        for det in frames:  # the accepted scene must also run a frame of boxes
            engine.on_detections(
                r.Detections(**{**{f: getattr(det, f) for f in det.__slots__}, "camera_id": camera.camera_id})
            )

    return target


if __name__ == "__main__":
    run(
        load,
        [
            "processors.analytics.scene",
            "processors.analytics.geometry",
            "processors.analytics.rules",
            "producers.registry",
        ],
    )
