"""The rule catalogue: names, default severities (deployment plan section 2.5) and default parameters.

A camera's ``SceneConfig.rules`` overrides any of these per rule (``enabled``, ``severity``,
``lane_ids``, ``params``); rules a camera does not mention run with the defaults below wherever the
scene has what they need (a red-light rule without stop lines tied to a signal never fires).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import EventType, RuleConfig, Severity

# Seed section 2.5: red light high, stop sign medium, speeding medium (threshold_over_limit 10),
# pedestrian in roadway critical, congestion low with threshold_duration 300 s, lane blockage medium.
# Wrong-way driving is not in the seed; it is a collision risk of the same order as a pedestrian in
# the roadway, so it is critical.
DEFAULTS: dict[EventType, tuple[Severity, dict[str, float]]] = {
    EventType.RED_LIGHT: (
        Severity.HIGH,
        # grace_s: a crossing in the first grace_s of red is not a violation (the amber dilemma zone);
        # min_speed_kmh: a vehicle creeping over the line while stopping is not running the light.
        {"grace_s": 0.5, "min_speed_kmh": 5.0},
    ),
    # A vehicle must get below max_stop_speed_kmh somewhere inside the STOP_ZONE.
    EventType.STOP_SIGN: (Severity.MEDIUM, {"max_stop_speed_kmh": 5.0}),
    EventType.SPEEDING: (
        Severity.MEDIUM,
        # Over limit + tolerance_kmh for min_duration_s; default_limit_kmh outside lanes (0: none).
        {"tolerance_kmh": 10.0, "min_duration_s": 1.0, "default_limit_kmh": 0.0},
    ),
    EventType.WRONG_WAY: (
        Severity.CRITICAL,
        # Moving against the lane direction (cosine below max_cos) at min_speed_kmh or more, for
        # min_distance_m of travel and min_duration_s: a U-turn, a lane change or a tracking glitch does not.
        {"min_distance_m": 10.0, "min_duration_s": 1.0, "min_speed_kmh": 8.0, "max_cos": -0.5},
    ),
    EventType.PEDESTRIAN_IN_ROADWAY: (Severity.CRITICAL, {"min_duration_s": 1.0}),
    EventType.LANE_BLOCKAGE: (
        Severity.MEDIUM,
        # min_duration_s is the T of "stopped in a travel lane longer than T"; a vehicle with another
        # stopped vehicle within queue_gap_m ahead, or first in line within stop_line_m of a stop line
        # whose signal is not green, is queueing, not blocking.
        {"min_duration_s": 60.0, "max_speed_kmh": 3.0, "queue_gap_m": 15.0, "stop_line_m": 8.0},
    ),
    EventType.CONGESTION: (
        Severity.LOW,
        # Seed: congestion_detected threshold_duration 300 s; min_los 5 = level of service E or worse
        # in every 1-minute window of the episode.
        {"min_duration_s": 300.0, "min_los": 5.0},
    ),
}

# Names accepted in RuleConfig.rule: ours plus the seed's spellings.
ALIASES: dict[str, EventType] = {
    "red_light": EventType.RED_LIGHT,
    "red_light_running": EventType.RED_LIGHT,
    "stop_sign": EventType.STOP_SIGN,
    "stop_sign_violation": EventType.STOP_SIGN,
    "speeding": EventType.SPEEDING,
    "wrong_way": EventType.WRONG_WAY,
    "pedestrian_in_roadway": EventType.PEDESTRIAN_IN_ROADWAY,
    "lane_blockage": EventType.LANE_BLOCKAGE,
    "congestion": EventType.CONGESTION,
    "congestion_detected": EventType.CONGESTION,
}

SUGGESTED_ACTION: dict[EventType, str] = {
    EventType.RED_LIGHT: "Review the evidence frame and forward to enforcement; check the signal timing "
    "if red-light runs repeat at this approach.",
    EventType.STOP_SIGN: "Review the evidence frame; consider enforcement presence at this stop sign.",
    EventType.SPEEDING: "Review the evidence; consider speed enforcement or a speed feedback sign.",
    EventType.WRONG_WAY: "Dispatch police immediately and warn oncoming traffic (VMS); track the vehicle "
    "on adjacent cameras.",
    EventType.PEDESTRIAN_IN_ROADWAY: "Check the live view now; warn approaching traffic and dispatch "
    "assistance if the person is in danger.",
    EventType.LANE_BLOCKAGE: "Check the live view; dispatch a tow or incident response unit and set lane "
    "closure signs.",
    EventType.CONGESTION: "Check for an incident upstream; consider adjusting signal timing or "
    "publishing a traveller advisory.",
}


class RuleError(ValueError):
    """A rule configuration that cannot run (unknown rule, unknown lane, bad parameter)."""


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule as it runs on one camera: defaults merged with the camera's overrides."""

    event_type: EventType
    enabled: bool
    severity: Severity
    lane_ids: frozenset[str]  # empty: every lane
    params: dict[str, float] = field(default_factory=dict)

    def applies_to(self, lane_id: str | None) -> bool:
        return not self.lane_ids or (lane_id is not None and lane_id in self.lane_ids)

    def __getitem__(self, name: str) -> float:
        return self.params[name]


def resolve(configs: list[RuleConfig], lane_ids: set[str]) -> dict[EventType, RuleSpec]:
    """Every rule for one camera; raises ``RuleError`` naming the offending rule."""
    overrides: dict[EventType, RuleConfig] = {}
    for cfg in configs:
        et = ALIASES.get(cfg.rule.strip().lower())
        if et is None:
            raise RuleError(f"unknown rule {cfg.rule!r}; known: {sorted(ALIASES)}")
        if et in overrides:
            raise RuleError(f"rule {cfg.rule!r} configured twice")
        unknown = sorted(set(cfg.lane_ids) - lane_ids)
        if unknown:
            raise RuleError(f"rule {cfg.rule!r} names unknown lane(s) {unknown}; lanes: {sorted(lane_ids)}")
        bad = sorted(set(cfg.params) - set(DEFAULTS[et][1]))
        if bad:
            raise RuleError(
                f"rule {cfg.rule!r} has unknown parameter(s) {bad}; known: {sorted(DEFAULTS[et][1])}"
            )
        overrides[et] = cfg
    specs: dict[EventType, RuleSpec] = {}
    for et, (severity, params) in DEFAULTS.items():
        cfg = overrides.get(et)
        if cfg is None:
            specs[et] = RuleSpec(et, True, severity, frozenset(), dict(params))
            continue
        try:
            sev = Severity(cfg.severity.upper()) if cfg.severity else severity
        except ValueError:
            raise RuleError(f"rule {cfg.rule!r}: unknown severity {cfg.severity!r}") from None
        specs[et] = RuleSpec(et, cfg.enabled, sev, frozenset(cfg.lane_ids), {**params, **cfg.params})
    return specs
