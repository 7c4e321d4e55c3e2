"""Contract changes stay compatible with what was released; incompatible ones are caught."""

from __future__ import annotations

import copy

import pytest

from schemas import compatibility, contracts, released

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", contracts.record_names())
def test_contract_is_backward_compatible_with_every_release(name: str) -> None:
    history = released.released(name)
    assert history, f"{name} has no released version: run python -m schemas.released"
    ok, messages = compatibility.is_compatible(contracts.schema(name), history, "BACKWARD_TRANSITIVE")
    assert ok, messages


def _detections_with(change) -> dict:
    schema = copy.deepcopy(contracts.schema("its.Detections"))
    change(schema["fields"])
    return schema


@pytest.mark.parametrize(
    ("why", "change"),
    [
        ("new field without a default", lambda f: f.append({"name": "lane_hint", "type": "string"})),
        ("type change long -> string", lambda f: f[1].update(type="string")),
        ("field renamed without an alias", lambda f: f[0].update(name="camera")),
        ("array item type narrowed", lambda f: f[8].update(type={"type": "array", "items": "int"})),
    ],
)
def test_incompatible_change_is_rejected(why: str, change) -> None:
    history = released.released("its.Detections")
    ok, messages = compatibility.is_compatible(_detections_with(change), history, "BACKWARD_TRANSITIVE")
    assert not ok, why
    assert messages


def test_compatible_change_is_accepted() -> None:
    def add_defaulted(fields: list) -> None:
        fields.append({"name": "lane_hint", "type": ["null", "string"], "default": None})

    ok, messages = compatibility.is_compatible(
        _detections_with(add_defaulted), released.released("its.Detections"), "BACKWARD_TRANSITIVE"
    )
    assert ok, messages
