"""The one JSON shape every benchmark prints, and the machine it ran on."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Case:
    """One comparison: our figure and the peer's, same metric, same input, same run."""

    case: str
    metric: str
    unit: str
    ours: float
    peer: float | None
    peer_name: str
    target: str = ""
    higher_is_better: bool = True
    ratio: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.peer:
            self.ratio = round(self.ours / self.peer, 3)


@dataclass(slots=True)
class BenchReport:
    bench: str
    machine: dict[str, Any]
    cases: list[Case] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"bench": self.bench, "machine": self.machine, "cases": [asdict(c) for c in self.cases]}


def machine() -> dict[str, Any]:
    """What a reader needs to compare figures across runs."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def rate(fn: Callable[[], Any], items: int, repeats: int = 5) -> float:
    """Items per second of ``fn`` (which processes ``items`` items), best of ``repeats`` runs."""
    best = float("inf")
    fn()  # warm caches and lazy setup outside the timing
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best
