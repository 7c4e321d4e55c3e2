"""``Boxes``: all detections of one frame as numpy columns, the in-memory twin of ``records.Detections``.

Hot loops (NMS, tracking, zone tests, rules) work on whole arrays, as Roboflow supervision's
``Detections`` does, never on lists of box objects. Conversion to and from the Avro record happens
once at the Kafka boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas import records as r

# COCO class ids the traffic system keeps (ARCHITECTURE / assets MANIFEST).
COCO_NAMES: dict[int, str] = {
    0: "person", 1: "bicycle", 2: "car", 3: "motorcycle",
    5: "bus", 7: "truck", 9: "traffic light", 11: "stop sign",
}  # fmt: skip
TRAFFIC_CLASSES: tuple[int, ...] = tuple(COCO_NAMES)
VEHICLE_CLASSES: tuple[int, ...] = (2, 3, 5, 7)


@dataclass(slots=True)
class Boxes:
    """N boxes: ``xyxy`` (N, 4) float32 pixels; ``class_id``, ``score`` and optional ``track_id`` (N,)."""

    xyxy: np.ndarray
    class_id: np.ndarray
    score: np.ndarray
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        n = len(self.xyxy)
        if len(self.class_id) != n or len(self.score) != n:
            raise ValueError(
                f"column lengths differ: {n} boxes, {len(self.class_id)} classes, {len(self.score)} scores"
            )
        if self.track_id is not None:
            self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            if len(self.track_id) != n:
                raise ValueError(f"{n} boxes but {len(self.track_id)} track ids")

    @classmethod
    def empty(cls) -> Boxes:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32))

    @classmethod
    def from_record(cls, record: r.Detections) -> Boxes:
        """Columns from the Avro record (boxes flattened x1,y1,x2,y2)."""
        return cls(
            np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4),
            record.class_ids,
            record.scores,
            None if record.track_ids is None else record.track_ids,
        )

    def record_columns(self) -> dict[str, object]:
        """The column fields of ``records.Detections`` (boxes, class_ids, scores, track_ids)."""
        return {
            "boxes": self.xyxy.reshape(-1).tolist(),
            "class_ids": self.class_id.tolist(),
            "scores": self.score.tolist(),
            "track_ids": None if self.track_id is None else self.track_id.tolist(),
        }

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | list[int]) -> Boxes:
        """Select rows by boolean mask, index array or slice."""
        return Boxes(
            self.xyxy[index],
            self.class_id[index],
            self.score[index],
            None if self.track_id is None else self.track_id[index],
        )

    @property
    def centers(self) -> np.ndarray:
        """(N, 2) box centres."""
        return (self.xyxy[:, :2] + self.xyxy[:, 2:]) / 2

    @property
    def bottom_centers(self) -> np.ndarray:
        """(N, 2) bottom-centre points: where a vehicle or person touches the ground plane."""
        return np.stack([(self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, self.xyxy[:, 3]], axis=1)

    @property
    def area(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]
