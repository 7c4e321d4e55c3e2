"""The tracker's ground-plane motion model: identities kept across the detection dropouts of the
simulator's noise model (runs of misses up to ~2 s) where image-space extrapolation loses them.

A perspective camera looks down a road: ground (X across, Y along, metres) -> image pixels, with the
horizon at y = 200 px and the near edge of the view at y = 720 px.
"""

from __future__ import annotations

import numpy as np
import pytest

from processors.analytics.geometry import apply_homography
from processors.analytics.tracker import GroundMap, Tracker

pytestmark = pytest.mark.unit

G2I = np.array([[20.0, 32.0, 640.0], [0.0, 10.0, 720.0], [0.0, 0.05, 1.0]])  # depth grows as 1 + 0.05 Y
I2G = np.linalg.inv(G2I)
SIZE_M = (1.8, 1.5)  # a car seen from behind: width, height


def box(x: float, y: float, rng: np.random.Generator) -> np.ndarray:
    """The image box of an object standing at ground (x, y), with detector-like edge jitter."""
    bx, by = apply_homography(G2I, np.array([[x, y]]))[0]
    s = 20.0 / (1 + 0.05 * y)  # px per metre at that depth
    w, h = SIZE_M[0] * s, SIZE_M[1] * s
    b = np.array([bx - w / 2, by - h, bx + w / 2, by])
    return b + rng.normal(0, 1, 4) * (0.5 + 0.02 * np.array([w, h, w, h]))


def run(frames: list[list[tuple[int, np.ndarray]]], ground: bool) -> dict[int, set[int]]:
    """Track ``frames`` (per frame: (true id, box) pairs); true id -> our confirmed ids it was given."""
    tr = Tracker(ground=GroundMap(I2G, (640.0, 700.0)) if ground else None)
    got: dict[int, set[int]] = {}
    for k, objs in enumerate(frames):
        xyxy = np.array([b for _, b in objs]).reshape(-1, 4)
        dead = tr.update(k * 100, xyxy, np.full(len(objs), 0.85), np.full(len(objs), 2), (1280, 720))
        tr.keep(~dead)
        for i in np.nonzero((tr["det"] >= 0) & (tr["id"] >= 0))[0]:
            got.setdefault(objs[tr["det"][i]][0], set()).add(int(tr["id"][i]))
    return got


def test_accelerating_car_keeps_its_id_through_a_19s_dropout() -> None:
    # Pulling away from a stop towards the camera: 1 m/s -> 13 m/s. Under perspective its image speed
    # triples over the dropout, which a constant pixel velocity cannot follow.
    rng = np.random.default_rng(1)
    frames = []
    for k in range(60):
        t = k / 10
        y = 70.0 - 1.0 * t - 1.0 * t * t
        frames.append([] if 20 < k <= 39 else [(1, box(1.5, y, rng))])
    assert run(frames, ground=True) == {1: {1}}


def test_parked_car_keeps_its_id_while_missed_as_a_car_passes_it() -> None:
    # A small far box, missed for 1.5 s while a car in the next lane drives past it (their boxes
    # overlap in the image): the parked track must neither die nor be taken by the passing car.
    rng = np.random.default_rng(2)
    frames = []
    for k in range(80):
        t = k / 10
        objs = [] if 30 < k <= 45 else [(1, box(2.0, 55.0, rng))]
        objs.append((2, box(-1.6, 80.0 - 7.0 * t, rng)))  # at the parked car's Y at t = 3.6 s
        frames.append(objs)
    got = run(frames, ground=True)
    assert len(got[1]) == 1 and len(got[2]) == 1 and got[1] != got[2]
