"""Run the pipeline's components as separate processes: start, watch, restart the dead, stop them all.

Each component is its own OS process (``its edge run``, ``its process inference`` ...), as in
production; the supervisor only keeps them alive on one machine for the demo and the end-to-end
tests. A component that exits unexpectedly is restarted (with a back-off) up to ``max_restarts``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Component:
    """One supervised process: a name, its command, extra environment, and whether it ends by itself."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    finite: bool = False  # a job that exits 0 when done (a producer of a bounded clip), not a service
    max_restarts: int = 5
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    exit_code: int | None = None
    log_path: Path | None = None


class Supervisor:
    """Starts components, restarts the ones that die, stops everything on ``stop()``; a context manager."""

    def __init__(self, log_dir: Path, base_env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.components: dict[str, Component] = {}

    def start(self, component: Component) -> Component:
        self.components[component.name] = component
        self._spawn(component)
        return component

    def _spawn(self, c: Component) -> None:
        c.log_path = self.log_dir / f"{c.name}.log"
        out = c.log_path.open("ab")
        # Own process group: a Ctrl-C in the demo's terminal reaches the supervisor, which stops
        # the children in order instead of every process dying at once mid-transaction.
        c.process = subprocess.Popen(
            list(c.command), env={**self.base_env, **c.env}, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        out.close()
        c.exit_code = None
        log.info("component started", extra={"component": c.name, "pid": c.process.pid})

    def poll(self) -> list[str]:
        """Restart components that died; returns the names restarted this call."""
        restarted = []
        for c in self.components.values():
            if c.process is None or c.exit_code is not None:
                continue
            code = c.process.poll()
            if code is None:
                continue
            c.exit_code = code
            if c.finite and code == 0:
                log.info("component finished", extra={"component": c.name})
                continue
            if c.restarts >= c.max_restarts:
                log.error("component keeps dying; giving up", extra={"component": c.name, "exit_code": code})
                continue
            c.restarts += 1
            log.warning("component died; restarting", extra={"component": c.name, "exit_code": code,
                                                              "restart": c.restarts})  # fmt: skip
            time.sleep(min(0.5 * 2**c.restarts, 5.0))
            self._spawn(c)
            restarted.append(c.name)
        return restarted

    def running(self, name: str) -> bool:
        c = self.components.get(name)
        return bool(c and c.process and c.process.poll() is None)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one component (chaos tests); ``poll`` then restarts it."""
        c = self.components[name]
        if c.process and c.process.poll() is None:
            os.kill(c.process.pid, sig)

    def stop(self, timeout: float = 30.0, order: Sequence[str] | None = None) -> dict[str, int | None]:
        """SIGTERM every component (in ``order`` first: sources before sinks), SIGKILL stragglers."""
        names = list(order or []) + [n for n in self.components if n not in (order or [])]
        for name in names:
            c = self.components[name]
            if c.process and c.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.process.send_signal(signal.SIGTERM)
                try:
                    c.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("component ignored SIGTERM; killing", extra={"component": name})
                    c.process.kill()
                    c.process.wait(10)
            if c.process:
                c.exit_code = c.process.returncode
        return {n: c.exit_code for n, c in self.components.items()}

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
