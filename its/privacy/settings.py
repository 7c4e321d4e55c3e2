"""Settings of evidence-image privacy: a section of the one ``its.settings.Settings`` (``ITS_PRIVACY__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PrivacySettings(BaseModel):
    """Which stored images get faces and licence plates blurred, and how."""

    blur_evidence: bool = Field(
        True, description="Blur faces and plates in every stored image (alert evidence, keyframes)"
    )
    allow_unblurred_violation_evidence: bool = Field(
        False, description="Keep violation evidence (red light, speeding, ...) unblurred for enforcement"
    )
    head_fraction: float = Field(
        0.22, description="Top fraction of a whole-body person box taken as the head region"
    )
    cut_head_fraction: float = Field(
        0.5, description="Top fraction of a person box cut by the frame's bottom edge (an upper body)"
    )
    plate_region: tuple[float, float, float, float] = Field(
        (0.12, 0.5, 0.88, 1.0),
        description="Plate region of a vehicle box as fractions (x1, y1, x2, y2) of the box",
    )
    min_score: float = Field(0.2, description="Boxes below this score are not used to place blur regions")
    pad: float = Field(0.1, description="Regions grow by this fraction of their size on every side")
