"""Per-camera frame sequence that stays strictly increasing across restarts and crashes.

Writing the counter on every frame would cost a file write per frame; instead the store leases
blocks: the file holds the first number *not yet leased*. A clean stop writes the exact next number;
a crash loses at most one unused block (a gap), never a repeat.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)  # a crash leaves the old or the new value, never half a number


class FrameSequence:
    """``next()`` gives 0, 1, 2, ... for one camera, resuming after the last value of any earlier run."""

    def __init__(self, directory: Path, camera_id: str, block: int = 1000) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{_SAFE.sub('_', camera_id)}.seq"
        self.block = block
        self._lock = threading.Lock()
        try:
            self._next = int(self.path.read_text().strip() or 0)
        except FileNotFoundError:
            self._next = 0
        except ValueError as exc:
            raise ValueError(f"frame sequence file {self.path} is corrupt: {exc}") from exc
        self._leased = self._next  # nothing leased yet in this run

    def next(self) -> int:
        with self._lock:
            if self._next >= self._leased:
                self._leased = self._next + self.block
                _write_atomic(self.path, f"{self._leased}\n")
            value = self._next
            self._next += 1
            return value

    @property
    def peek(self) -> int:
        """The number ``next()`` would return."""
        return self._next

    def close(self) -> None:
        """Persist the exact next value (a clean stop leaves no gap)."""
        with self._lock:
            _write_atomic(self.path, f"{self._next}\n")
            self._leased = self._next
