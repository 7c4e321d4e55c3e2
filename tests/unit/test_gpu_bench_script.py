"""The GPU benchmark script's CPU smoke mode (`--device cpu --quick`) runs the same code end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "processors" / "inference" / "gpu" / "bench_gpu.py"


def _python_with_torch() -> str | None:
    """This interpreter if it has torch; else ITS_TORCH_PYTHON (a venv with torch + torchvision)."""
    import os

    if importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision"):
        return sys.executable
    return os.environ.get("ITS_TORCH_PYTHON")


def test_quick_cpu_smoke_run_reports_every_case(tmp_path) -> None:
    python = _python_with_torch()
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [python or sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if python is None:
        # The project does not install torch (a multi-GB CUDA build on PyPI); the script says so.
        assert proc.returncode == 2 and "torch and torchvision are required" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["bench"] == "gpu-inference" and report["machine"]["precision"] == "fp32"
    cases = {(c["case"], c["metric"]): c for c in report["cases"]}
    assert cases[("decode 320x240", "throughput")]["ours"] > 0
    model = "yolo11n"
    for bs in (1, 2):
        assert cases[(f"{model} bs{bs}", "throughput")]["ours"] > 0
        assert (
            cases[(f"{model} bs{bs}", "latency p99")]["ours"]
            >= cases[(f"{model} bs{bs}", "latency p50")]["ours"]
        )
        assert cases[(f"{model} bs{bs}", "bare network")]["ours"] > 0
    # The GPU path's letterbox and batched NMS give the numpy pipeline's boxes (on the CPU here).
    check = subprocess.run(
        [python, str(Path(__file__).with_name("gpu_equivalence_check.py"))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stderr[-3000:]
