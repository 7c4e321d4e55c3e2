"""Processing mode per camera (seed section 1.4's edge/cloud decision matrix).

* ``cloud``: every sampled frame goes to ``its.frames.v1``; central inference makes the detections.
* ``edge``: the local ONNX detector makes detections for every sampled frame; only keyframes go to
  ``its.frames.v1`` (evidence, re-inference), so the uplink carries a fraction of the JPEG bytes.
* ``hybrid``: both: local detections for every frame and every sampled frame to the cloud.
* ``auto``: chosen from measured round trip, uplink bandwidth and local load, in the seed's order:
  latency > 50 ms -> edge; bandwidth < 2 Mbps -> edge; utilisation > 0.8 -> cloud; else hybrid.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from dataclasses import dataclass

from schemas.records import ProcessingMode


def parse_mode(text: str | ProcessingMode) -> ProcessingMode:
    """``cloud`` / ``EDGE`` / ... -> ProcessingMode; a clear error for anything else."""
    try:
        return ProcessingMode(str(text).strip().upper())
    except ValueError:
        names = ", ".join(m.value.lower() for m in ProcessingMode)
        raise ValueError(f"unknown processing mode {text!r}; choose one of {names}") from None


@dataclass(frozen=True, slots=True)
class Measurements:
    """What ``auto`` decides from; None means not measured (that rule cannot fire)."""

    latency_ms: float | None
    bandwidth_mbps: float | None
    utilisation: float | None


@dataclass(frozen=True, slots=True)
class Thresholds:
    latency_ms: float = 50.0
    bandwidth_mbps: float = 2.0
    utilisation: float = 0.8


def decide(m: Measurements, t: Thresholds = Thresholds()) -> tuple[ProcessingMode, str]:
    """The mode and a one-line reason, in the seed's rule order."""
    if m.latency_ms is not None and m.latency_ms > t.latency_ms:
        return ProcessingMode.EDGE, f"round trip {m.latency_ms:.1f} ms > {t.latency_ms:g} ms"
    if m.bandwidth_mbps is not None and m.bandwidth_mbps < t.bandwidth_mbps:
        return ProcessingMode.EDGE, f"uplink {m.bandwidth_mbps:.2f} Mbps < {t.bandwidth_mbps:g} Mbps"
    if m.utilisation is not None and m.utilisation > t.utilisation:
        return ProcessingMode.CLOUD, f"local utilisation {m.utilisation:.2f} > {t.utilisation:g}"
    parts = [
        f"round trip {m.latency_ms:.1f} ms" if m.latency_ms is not None else "round trip not measured",
        f"uplink {m.bandwidth_mbps:.2f} Mbps" if m.bandwidth_mbps is not None else "uplink not limiting",
        f"utilisation {m.utilisation:.2f}" if m.utilisation is not None else "utilisation not measured",
    ]
    return ProcessingMode.HYBRID, "within limits: " + ", ".join(parts)


def measure_rtt_ms(bootstrap: str, probes: int = 3, timeout: float = 2.0) -> float | None:
    """Median TCP connect time to the first reachable bootstrap server, ms (None: unreachable)."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        samples = []
        for _ in range(probes):
            start = time.perf_counter()
            try:
                with socket.create_connection((host, int(port)), timeout=timeout):
                    samples.append((time.perf_counter() - start) * 1000)
            except (OSError, ValueError):
                break
        if samples:
            return statistics.median(samples)
    return None


def local_utilisation() -> float:
    """One-minute load average per core (1.0 = every core busy)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


class BandwidthMeter:
    """Uplink estimate from acknowledged bytes, counted only over intervals in which the publisher was
    saturated (records waiting): an idle link says nothing about its capacity."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.mbps: float | None = None

    def update(self, acked_bytes: int, saturated: bool) -> float | None:
        now = time.monotonic()
        if self._last is not None and saturated:
            dt = now - self._last[0]
            if dt > 0.5:
                self.mbps = (acked_bytes - self._last[1]) * 8 / dt / 1e6
        elif not saturated:
            self.mbps = None  # not saturated: the link is not the limit
        self._last = (now, acked_bytes)
        return self.mbps
