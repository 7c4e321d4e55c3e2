"""The Boxes array object and the process service (metrics, health, stop flag)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter

from its.service import Service
from schemas.boxes import Boxes
from schemas.examples import example_records

pytestmark = pytest.mark.unit


def test_boxes_round_trip_the_record_columns() -> None:
    rec = example_records()["its.detections.v1"]
    boxes = Boxes.from_record(rec)
    assert len(boxes) == 2 and boxes.xyxy.shape == (2, 4) and boxes.track_id.tolist() == [7, 8]
    assert boxes.record_columns() == {"boxes": rec.boxes, "class_ids": rec.class_ids, "scores": rec.scores,
                                      "track_ids": rec.track_ids}  # fmt: skip
    cars = boxes[boxes.class_id == 2]
    assert len(cars) == 1 and cars.bottom_centers.tolist() == [[465.0, 470.0]]
    assert np.allclose(boxes.area, [110 * 90, 29.5 * 89.75])


def test_boxes_reject_ragged_columns() -> None:
    with pytest.raises(ValueError, match="column lengths differ"):
        Boxes(np.zeros((2, 4)), [1], [0.5, 0.5])
    assert len(Boxes.empty()) == 0


def test_service_serves_metrics_and_health_and_stops() -> None:
    registry = CollectorRegistry()
    Counter("its_test_things_total", "things", registry=registry).inc(3)
    healthy = {"ok": True}
    with Service("t", port=0, health=lambda: (healthy["ok"], {"lag": 0}), registry=registry) as svc:
        assert "its_test_things_total 3.0" in httpx.get(f"{svc.url}/metrics").text
        doc = httpx.get(f"{svc.url}/healthz")
        assert doc.status_code == 200 and doc.json()["lag"] == 0 and doc.json()["service"] == "t"
        healthy["ok"] = False
        assert httpx.get(f"{svc.url}/healthz").status_code == 503
        assert httpx.get(f"{svc.url}/nope").status_code == 404
        svc.stop()
        assert svc.stopping and svc.wait(0.01)
