"""Checks on the background processes the local stack runs (broker, registry, pipeline stages)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True if ``pid`` is a live process (reaping it first if it is our own exited child)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # A zombie still answers kill(0); field 3 of /proc/<pid>/stat is its state.
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def wait_for(check: Callable[[], object], timeout: float, step: float = 1.0) -> bool:
    """Poll ``check`` until it returns true (exceptions count as not yet) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(step)
    return False
