"""The topic catalogue against the design: every topic of ARCHITECTURE.md, sane configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.topics import BY_NAME, CAMERAS, CATALOGUE, FRAMES

pytestmark = pytest.mark.unit

_ARCHITECTURE = [
    Path(__file__).resolve().parents[2] / "ARCHITECTURE.md",
    Path(__file__).resolve().parents[3] / "shared" / "ARCHITECTURE.md",
]
# The list as of the design, so the test still means something where ARCHITECTURE.md is not checked out.
_DESIGN_TOPICS = {
    "its.cameras.v1", "its.frames.v1", "its.detections.v1", "its.signals.v1", "its.events.v1",
    "its.alerts.v1", "its.traffic-stats.v1", "its.health.v1", "its.dlq.v1",
}  # fmt: skip


def _architecture_topics() -> set[str]:
    for path in _ARCHITECTURE:
        if path.is_file():
            return set(re.findall(r"^\| `(its\.[a-z0-9.-]+)` \|", path.read_text(), flags=re.MULTILINE))
    return set()


def test_every_design_topic_is_in_the_catalogue() -> None:
    documented = _architecture_topics() | _DESIGN_TOPICS
    assert documented - set(BY_NAME) == set()


def test_architecture_lists_the_topics() -> None:
    found = _architecture_topics()
    if not found:
        pytest.skip("ARCHITECTURE.md not found beside the repository")
    assert found >= _DESIGN_TOPICS  # the parser still reads the table


def test_names_unique_and_versioned() -> None:
    names = [t.name for t in CATALOGUE]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"its\.[a-z0-9-]+\.v\d+", name), name


def test_partitions_and_configs_are_valid() -> None:
    for spec in CATALOGUE:
        assert spec.partitions >= 1, spec.name
        assert all(isinstance(v, str) for v in spec.configs.values()), spec.name
        assert spec.value_subject == f"{spec.name}-value"


def test_cameras_topic_is_compacted() -> None:
    assert BY_NAME[CAMERAS].configs["cleanup.policy"] == "compact"


def test_frames_take_8_mib_messages() -> None:
    frames = BY_NAME[FRAMES].configs
    assert int(frames["max.message.bytes"]) >= 8 * 1024 * 1024
    assert "retention.ms" in frames  # short-lived: must not inherit the broker's 7 days


def test_broker_accepts_the_largest_topic_message() -> None:
    from infra.kafka.config import MESSAGE_MAX_BYTES

    largest = max(int(t.configs.get("max.message.bytes", 0)) for t in CATALOGUE)
    assert largest <= MESSAGE_MAX_BYTES
