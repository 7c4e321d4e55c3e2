"""A stream processor (`its process ...`) as a child process the exactly-once tests can kill and restart."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessorUnderTest:
    """Runs ``its <args> --instance-id ID --metrics-port P``; the same instance id on every restart."""

    def __init__(self, args: Sequence[str], env: dict[str, str], instance: str, log_path: Path) -> None:
        self.args, self.env, self.instance, self.log_path = list(args), env, instance, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.port = free_port()
        its = str(Path(sys.executable).with_name("its"))
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.proc = subprocess.Popen(
            [its, *self.args, "--instance-id", self.instance, "--metrics-port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def committed_batches(self) -> int:
        try:
            return int(
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).json()["committed_batches"]
            )
        except (httpx.HTTPError, KeyError, ValueError):
            return 0

    def wait_for_progress(self, timeout: float = 120.0) -> None:
        """Until the processor has committed at least one transaction since it (re)started."""
        deadline = time.monotonic() + timeout
        while self.committed_batches() < 1:
            assert self.proc is not None and self.proc.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "no batch committed in time:\n" + self.log_path.read_text()[-3000:]
            )
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)
