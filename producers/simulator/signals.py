"""Fixed-time signal plan: two conflicting groups (N-S and E-W), green / amber / all-red."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.records import Phase


@dataclass(frozen=True, slots=True)
class SignalPlan:
    """Group ``signal_ids[k]`` gets green at ``k * (green + amber + all_red)`` within each cycle."""

    signal_ids: tuple[str, ...]
    green_s: float = 25.0
    amber_s: float = 4.0
    all_red_s: float = 2.0

    @property
    def stage_s(self) -> float:
        return self.green_s + self.amber_s + self.all_red_s

    @property
    def cycle_s(self) -> float:
        return self.stage_s * len(self.signal_ids)

    def _local(self, signal_id: str, t: float | np.ndarray) -> np.ndarray:
        k = self.signal_ids.index(signal_id)
        return np.mod(np.asarray(t, dtype=np.float64) - k * self.stage_s, self.cycle_s)

    def phase(self, signal_id: str, t: float) -> Phase:
        local = float(self._local(signal_id, t))
        if local < self.green_s:
            return Phase.GREEN
        if local < self.green_s + self.amber_s:
            return Phase.AMBER
        return Phase.RED

    def red_elapsed(self, signal_id: str, t: float) -> float:
        """Seconds since the current red began (negative when not red)."""
        local = float(self._local(signal_id, t))
        start = self.green_s + self.amber_s
        return local - start if local >= start else -1.0

    def green_left(self, signal_id: str, t: float) -> float:
        """Seconds of green left (0 when not green)."""
        local = float(self._local(signal_id, t))
        return self.green_s - local if local < self.green_s else 0.0

    def amber_left(self, signal_id: str, t: float) -> float:
        local = float(self._local(signal_id, t))
        g = self.green_s
        return g + self.amber_s - local if g <= local < g + self.amber_s else 0.0

    def changes(self, duration_s: float) -> list[tuple[float, str, Phase]]:
        """(t, signal, phase) at t = 0 for every signal, then at each change before ``duration_s``."""
        out: list[tuple[float, str, Phase]] = [(0.0, s, self.phase(s, 0.0)) for s in self.signal_ids]
        for k, sig in enumerate(self.signal_ids):
            start = k * self.stage_s
            n = 0
            while True:
                base = start + n * self.cycle_s - self.cycle_s
                for off, ph in (
                    (0.0, Phase.GREEN),
                    (self.green_s, Phase.AMBER),
                    (self.green_s + self.amber_s, Phase.RED),
                ):
                    t = base + off
                    if 0.0 < t < duration_s:
                        out.append((t, sig, ph))
                if base > duration_s:
                    break
                n += 1
        out.sort(key=lambda c: (c[0], c[1]))
        return out
