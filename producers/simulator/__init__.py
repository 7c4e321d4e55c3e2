"""Traffic simulator: deterministic worlds per camera, detections with a noise model, exact truth.

from producers.simulator import simulate
sim = simulate("intersection", seed=1, noise="none")
for record in sim.stream(): ...          # Camera, SignalPhase, Detections in time order
sim.truth.counts, sim.truth.violations    # what really happened
"""

from producers.simulator.core import Simulation, list_scenarios, load_scenario, scenario_dirs, simulate
from producers.simulator.noise import NoiseProfile, apply_noise
from producers.simulator.truth import Crossing, LaneMinute, Truth, TruthTrack, Violation, write_truth

__all__ = [
    "Crossing",
    "LaneMinute",
    "NoiseProfile",
    "Simulation",
    "Truth",
    "TruthTrack",
    "Violation",
    "apply_noise",
    "list_scenarios",
    "load_scenario",
    "scenario_dirs",
    "simulate",
    "write_truth",
]
