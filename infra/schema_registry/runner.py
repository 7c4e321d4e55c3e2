"""Start and stop the local registry: a detached process for operators, a thread for tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from threading import Thread
from typing import Any

import httpx

from infra.process import process_alive
from infra.schema_registry.kafkalog import KafkaLog
from infra.schema_registry.server import RegistryHTTPServer, serve
from infra.schema_registry.service import Registry
from its.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODULE = "infra.schema_registry"


def _dir(settings: Settings) -> Path:
    return settings.data_path / "registry"


def _pid_file(settings: Settings) -> Path:
    return _dir(settings) / "registry.pid"


def _state_file(settings: Settings) -> Path:
    return _dir(settings) / "registry.json"


def log_file(settings: Settings) -> Path:
    return _dir(settings) / "registry.log"


def _ours(pid: int) -> bool:
    """True when ``pid`` is alive and is a registry process (a pid file can outlive its process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid file
    return MODULE in cmdline


def _read_pid(settings: Settings) -> int | None:
    try:
        pid = int(_pid_file(settings).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _ours(pid) else None


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start_background(
    settings: Settings, host: str = "127.0.0.1", port: int = 8081, timeout: float = 60.0
) -> int:
    """Start a detached registry (pid file and log under ``data_path/registry``); wait until healthy."""
    url = f"http://{host}:{port}"
    running = _read_pid(settings)
    if running is not None:
        if healthy(_state(settings).get("url", url)):
            return running
        raise RuntimeError(f"registry pid {running} is running but not healthy; see {log_file(settings)}")
    if healthy(url):
        raise RuntimeError(f"something else already answers at {url}")
    _dir(settings).mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", MODULE,
        "--host", host, "--port", str(port),
        "--bootstrap", settings.kafka_bootstrap, "--topic", settings.schema_registry_topic,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with log_file(settings).open("ab") as out:
        # A new session: the registry outlives the CLI (and its terminal) that started it.
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=env,
            start_new_session=True,
        )
    _pid_file(settings).write_text(str(process.pid))
    state = {"pid": process.pid, "url": url, "topic": settings.schema_registry_topic}
    _state_file(settings).write_text(json.dumps({**state, "bootstrap": settings.kafka_bootstrap}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _pid_file(settings).unlink(missing_ok=True)
            raise RuntimeError(f"registry exited with {process.returncode}:\n{_tail(log_file(settings))}")
        if healthy(url, timeout=1.0):
            return process.pid
        time.sleep(0.2)
    stop_background(settings)
    raise TimeoutError(f"registry not healthy at {url} after {timeout}s:\n{_tail(log_file(settings))}")


def stop_background(settings: Settings, timeout: float = 15.0) -> bool:
    """SIGTERM the registry started by ``start_background`` (SIGKILL after ``timeout``); False if none ran."""
    pid = _read_pid(settings)
    _pid_file(settings).unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _state(settings: Settings) -> dict[str, Any]:
    try:
        return dict(json.loads(_state_file(settings).read_text()))
    except (OSError, ValueError):
        return {}


def status(settings: Settings) -> dict[str, Any]:
    """Whether the background registry runs, where, and whether it answers its health check."""
    pid = _read_pid(settings)
    state = _state(settings)
    url = state.get("url", settings.schema_registry_url)
    return {
        "running": pid is not None,
        "pid": pid,
        "url": url,
        "healthy": healthy(url) if pid is not None else False,
        "topic": state.get("topic", settings.schema_registry_topic),
        "bootstrap": state.get("bootstrap", settings.kafka_bootstrap),
        "log": str(log_file(settings)),
    }


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class ServerHandle:
    """A registry served on a thread of this process."""

    registry: Registry
    server: RegistryHTTPServer
    thread: Thread

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        self.registry.close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def serve_in_thread(
    bootstrap: str,
    topic: str,
    port: int = 0,
    host: str = "127.0.0.1",
    kafka_config: dict[str, Any] | None = None,
) -> ServerHandle:
    """Load the registry from ``topic`` and serve it on a thread (port 0 picks a free port)."""
    registry = Registry(KafkaLog({**(kafka_config or {}), "bootstrap.servers": bootstrap}, topic))
    registry.load()
    server, thread = serve(registry, host, port)
    return ServerHandle(registry, server, thread)
