"""``its demo`` end to end: its own broker, registry and store, a short run, then nothing left behind.

The demo starts a broker on ports of its own (not the test session's), runs every component as a
supervised process for a short while, drains, prints the summary from ClickHouse and stops it all.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("ITS_ASSETS_DIR") or REPO / ".." / "shared" / "assets").resolve()

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_block(n: int) -> int:
    """The first of ``n`` consecutive free ports."""
    for _ in range(200):
        base = random.randint(20_000, 45_000)
        if all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no block of free ports")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of someone else still answers kill(0); read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _pgrep(pattern: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_demo_runs_the_pipeline_and_leaves_nothing_behind(tmp_path: Path) -> None:
    ports = _free_block(10)
    bootstrap = f"127.0.0.1:{ports}"
    data_dir = tmp_path / "data"
    artifacts = tmp_path / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITS_")}
    env.update(
        ITS_DATA_DIR=str(data_dir),
        ITS_CACHE_DIR=os.environ.get("ITS_CACHE_DIR", str(REPO / ".cache")),
        ITS_ASSETS_DIR=str(ASSETS),
        ITS_KAFKA_BOOTSTRAP=bootstrap,
        ITS_KAFKA_CONTROLLER_PORT=str(ports + 1),
        ITS_SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{ports + 2}",
        COLUMNS="160",
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", "from its.cli import main; main()", "demo", "--duration", "70",
         "--cameras", "4", "--port-base", str(ports + 3), "--artifacts", str(artifacts)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "demo passed" in proc.stdout, out[-6000:]

    summary = json.loads((artifacts / "summary.json").read_text())
    empty = [table for table, rows in summary["table_rows"].items() if rows <= 0]
    assert not empty, f"empty tables {empty}: {summary['table_rows']}\n{out[-4000:]}"
    crossings = summary["sections"]["crossings by class and direction"]["rows"]
    assert sum(row[2] for row in crossings) > 0, crossings
    latency = summary["sections"]["end-to-end latency, capture -> ClickHouse (ms)"]["rows"]
    assert latency and all(row[3] is not None and row[3] >= 0 for row in latency), latency
    for needle in ("crossings by class and direction", "violations by type", "end-to-end latency", "its sql"):
        assert needle in proc.stdout, needle
    image = artifacts / "annotated_keyframe.jpg"
    assert image.is_file() and image.stat().st_size > 10_000, summary.get("keyframe")
    assert summary["keyframe"]["tracks"] > 0

    # Nothing left behind: no component, no broker, no registry of this run.
    time.sleep(1)
    alive = {name: pid for name, pid in summary["pids"].items() if _alive(pid)}
    assert not alive, f"components still running: {alive}"
    assert not _pgrep(str(data_dir)), _pgrep(str(data_dir))
    assert not _pgrep(bootstrap), _pgrep(bootstrap)
    assert not _pgrep("kafka.Kafka.*" + str(data_dir)), "broker still running"
    print(f"its demo --duration 70 took {took:.0f} s")
