"""The model registry on its compacted topic, through the `its model` CLI, and the processor's routing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from infra.topics import ensure_topics
from processors.inference.processor import ModelRouter
from processors.inference.registry import ModelRegistry, canary_bucket
from schemas.topics import BY_NAME, MODELS

pytestmark = pytest.mark.integration


def _its(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("its")), "model", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_add_canary_promote_rollback_through_the_cli(kafka_broker, schema_registry, kafka_settings, tmp_path):
    ensure_topics({"bootstrap.servers": kafka_broker.bootstrap})
    assert BY_NAME[MODELS].configs["cleanup.policy"] == "compact"
    env = {
        **os.environ,
        "ITS_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "ITS_SCHEMA_REGISTRY_URL": schema_registry,
        "ITS_ASSETS_DIR": str(kafka_settings.assets_path),
        "ITS_DATA_DIR": str(tmp_path),
    }
    name = f"det-{uuid.uuid4().hex[:6]}"
    models = kafka_settings.assets_path / "models"
    v1, v2 = models / "yolox_nano_coco_416.onnx", models / "yolo11n_coco_int8_320.onnx"

    added = _its(env, "add", str(v1), "--name", name, "--version", "1", "--json")
    assert added.returncode == 0, added.stderr
    (entry,) = json.loads(added.stdout)
    assert entry["format"] == "yolox" and (entry["input_height"], entry["input_width"]) == (416, 416)
    assert entry["sha256"].startswith("d39bee73564e3380") and entry["stage"] == "CANDIDATE"
    assert len(entry["classes"]) == 80 and entry["metrics"]["latency_ms_cpu"] > 0
    assert entry["metrics"]["bus_jpg_detections"] >= 5

    assert _its(env, "add", str(v2), "--name", name, "--version", "2", "--no-measure").returncode == 0
    again = _its(env, "add", str(v2), "--name", name, "--version", "2")
    assert again.returncode == 1 and "immutable" in again.stderr

    assert _its(env, "promote", name, "1").returncode == 0
    canary = _its(env, "canary", name, "2", "--percent", "25", "--json")
    assert canary.returncode == 0, canary.stderr

    # A fresh reader (another process's view) folds the compacted topic into the same state.
    reg = ModelRegistry(kafka_settings.model_copy(update={"schema_registry_url": schema_registry}))
    reg.refresh()
    stages = {e.version: (e.stage.value, e.canary_percent) for e in reg.versions(name)}
    assert stages == {"1": ("STABLE", 0.0), "2": ("CANARY", 25.0)}

    # The processor's router sends the hashed 25 % of cameras to version 2, the rest to 1.
    inference = kafka_settings.inference.model_copy(
        update={"model": str(v1), "model_name": name, "model_version": "1"}
    )
    settings = kafka_settings.model_copy(
        update={"schema_registry_url": schema_registry, "inference": inference}
    )
    router = ModelRouter(settings, ModelRegistry(settings))
    router.refresh(force=True)
    cams = [f"cam-{i:03d}" for i in range(200)]
    chosen = {c: router.detector_for(c).version for c in cams}
    assert {c for c, v in chosen.items() if v == "2"} == {c for c in cams if canary_bucket(c, name) < 25}
    assert 30 < sum(v == "2" for v in chosen.values()) < 70

    promoted = _its(env, "promote", name, "2", "--json")
    assert promoted.returncode == 0
    listed = json.loads(_its(env, "list", name, "--json").stdout)
    assert {e["version"]: e["stage"] for e in listed} == {"1": "RETIRED", "2": "STABLE"}

    rolled = _its(env, "rollback", name, "--json")
    assert rolled.returncode == 0, rolled.stderr
    listed = json.loads(_its(env, "list", name, "--json").stdout)
    assert {e["version"]: e["stage"] for e in listed} == {"1": "STABLE", "2": "RETIRED"}
    nothing = _its(env, "rollback", name)
    assert nothing.returncode == 1 and "nothing to roll back" in nothing.stderr

    unknown = _its(env, "promote", name, "9")
    assert unknown.returncode == 1 and "no model" in unknown.stderr


def test_export_without_ultralytics_is_a_clear_error(tmp_path) -> None:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        out = _its(dict(os.environ), "export", "--weights", "yolo11m.pt", "--format", "onnx")
        assert out.returncode == 1 and "optional extra" in out.stderr
    else:
        pytest.skip("ultralytics is installed here: export is exercised by the GPU script")
