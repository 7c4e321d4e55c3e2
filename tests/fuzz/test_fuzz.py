"""Coverage-guided fuzzing in CI for a fixed budget, plus the crashes it found, kept as regressions.

Each harness (``fuzz_avro``, ``fuzz_frame``, ``fuzz_scene``) runs under atheris/libFuzzer in its own
process for ``BUDGET_S`` seconds, all three at once; a crash, a timeout or a memory blow-up fails the
test and leaves the input under the test's tmp directory. Saved inputs under ``corpus/<harness>``
(earlier crashes and seeds) are replayed in process first.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from processors.analytics.engine import Engine
from processors.analytics.scene import SceneError
from processors.analytics.settings import AnalyticsSettings
from processors.inference import postprocess as pp
from processors.inference.processor import FrameDecodeError, decode_jpeg
from schemas import records as r
from schemas.examples import example_camera
from schemas.validate import validate_frame

pytestmark = pytest.mark.security

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
HARNESSES = ("avro", "frame", "scene")
BUDGET_S = 10
NOW_MS = 1_795_000_000_000


def test_fuzzers_run_their_budget_without_a_crash(tmp_path: Path) -> None:
    procs = {}
    for name in HARNESSES:
        work = tmp_path / name
        corpus = work / "corpus"
        shutil.copytree(HERE / "corpus" / name, corpus)  # new inputs go to tmp, not the repository
        cmd = [
            sys.executable, "-m", f"tests.fuzz.fuzz_{name}", f"-max_total_time={BUDGET_S}",
            "-timeout=10", "-rss_limit_mb=3072", f"-artifact_prefix={work}/", "-print_final_stats=1",
            str(corpus),
        ]  # fmt: skip
        log = (work / "log").open("w")
        procs[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log, work)
    failures = []
    for name, (proc, log, work) in procs.items():
        rc = proc.wait(timeout=BUDGET_S + 90)
        log.close()
        text = (work / "log").read_text(errors="replace")
        runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
        artifacts = sorted(
            p.name for p in work.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))
        )
        if rc != 0 or artifacts or runs is None or int(runs.group(1)) < 20:
            failures.append(
                f"{name}: rc {rc}, artifacts {artifacts}, runs {runs and runs.group(1)}\n{text[-3000:]}"
            )
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("name", HARNESSES)
def test_saved_inputs_replay_cleanly(name: str) -> None:
    import importlib

    target = importlib.import_module(f"tests.fuzz.fuzz_{name}").load()
    files = sorted((HERE / "corpus" / name).iterdir())
    assert files
    for path in files:
        target(path.read_bytes())


# --- the crashes found, as literal regressions ---------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 3000), (3000, 1), (2, 5000)])
def test_very_uneven_image_letterboxes(shape: tuple[int, int]) -> None:
    # fuzz_frame: a 1 x 3000 px JPEG decoded fine, then cv2.resize to a 0-px side raised cv2.error
    # inside the batch, which aborted the inference transaction again and again.
    ok, buf = cv2.imencode(".jpg", np.full((*shape, 3), 90, np.uint8))
    assert ok
    img = decode_jpeg(buf.tobytes())
    for size, centre in (((416, 416), False), ((320, 320), True), ((640, 640), True)):
        box = pp.letterbox([img], size, center=centre)
        assert box.batch.shape == (1, *size, 3)


def _camera(**scene_changes: object) -> r.Camera:
    cam = example_camera()
    for path, value in scene_changes.items():
        obj: object = cam
        *parents, leaf = path.split("__")
        for part in parents:
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)  # type: ignore[index]
        if leaf.isdigit():
            obj[int(leaf)] = value  # type: ignore[index]
        else:
            setattr(obj, leaf, value)
    return cam


@pytest.mark.parametrize(
    "changes",
    [
        {"scene__zones__0__polygon__1": r.Point(float("nan"), 300.0)},  # was: ValueError in the raster
        {"scene__zones__1__polygon__2": r.Point(5e9, 720.0)},  # was: MemoryError (12 TiB raster)
        {"scene__lanes__0__polygon__0": r.Point(1e300, 1e300)},  # was: "Maximum allowed dimension"
        {"scene__calibration__ground_points__3": r.Point(float("inf"), 60.0)},
        {"scene__lanes__0__speed_limit_kmh": float("nan")},
        {"fps": 0.0},
    ],
)
def test_hostile_scene_numbers_are_scene_errors(changes: dict[str, object]) -> None:
    # fuzz_scene: such registrations raised ValueError/MemoryError, which the analytics processor does
    # not catch: one record on the compacted cameras topic stopped it on every restart.
    with pytest.raises(SceneError, match=r"finite|fps"):
        Engine(AnalyticsSettings()).on_camera(_camera(**changes))


def test_bombs_behind_garbage_and_other_formats_are_refused() -> None:
    # libjpeg skips junk between segments: the size check must find the header the decoder uses.
    _, buf = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))
    real = buf.tobytes()
    i = real.index(b"\xff\xc0")
    bomb = real[:i] + b"junk bytes" + real[i : i + 5] + struct.pack(">HH", 60000, 60000) + real[i + 9 :]
    frame = r.Frame("cam-1", 1, NOW_MS, 64, 48, True, bomb)
    assert "60000x60000 is oversized" in (validate_frame(frame, NOW_MS) or "")
    with pytest.raises(FrameDecodeError, match="oversized"):
        decode_jpeg(bomb)
    # imdecode would decode a PNG (any size its header claims); the frames topic carries JPEG only.
    _, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FrameDecodeError, match="no JPEG frame header"):
        decode_jpeg(png.tobytes())
