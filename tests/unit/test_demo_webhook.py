"""The demo's webhook receiver: counts signed alert deliveries, refuses a wrong signature."""

from __future__ import annotations

import httpx
import pytest

from connectors.webhook.sink import deliver
from its.demo import WebhookReceiver
from schemas import records as r

pytestmark = pytest.mark.unit


def _alert(revision: int, status: r.AlertStatus) -> r.Alert:
    return r.Alert(
        f"cam-1:WRONG_WAY:5:{revision}", "cam-1:WRONG_WAY:5", "cam-1", r.EventType.WRONG_WAY, r.Severity.HIGH,
        5, 9, "Wrong-way driver at camera cam-1", revision=revision, status=status,
    )  # fmt: skip


def test_receiver_counts_signed_deliveries_and_refuses_bad_signatures():
    with WebhookReceiver("s3cret") as receiver, httpx.Client(timeout=5) as client:
        for rev, status in (
            (0, r.AlertStatus.OPEN),
            (1, r.AlertStatus.ESCALATED),
            (1, r.AlertStatus.ESCALATED),
        ):
            assert deliver(client, receiver.url, "s3cret", _alert(rev, status)).ok
        forged = deliver(client, receiver.url, "guess", _alert(2, r.AlertStatus.RESOLVED), attempts=1)
        assert not forged.ok and forged.status == 401
        got = receiver.summary()
    assert got["deliveries"] == 3 and got["distinct_alerts"] == 2 and got["bad_signatures"] == 1
    assert got["by_status"] == {"ESCALATED": 2, "OPEN": 1}
