"""The contracts as last released, kept so that every change is checked for compatibility.

Producers and consumers of a city deployment upgrade one at a time, so a contract may only change in
ways an older reader and a newer reader both survive. ``released/<Record>.avsc`` holds each record as
released; the unit tests check the working contracts against them at the BACKWARD_TRANSITIVE level
that the registry enforces. After a deliberate, compatible change run ``python -m schemas.released``
to record the new release.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas import contracts

RELEASED_DIR = Path(__file__).parent / "released"


def released(full_name: str) -> list[str]:
    """Released versions of a record, oldest first (files ``<Name>.v<N>.avsc``)."""
    short = full_name.rsplit(".", 1)[-1]
    files = sorted(RELEASED_DIR.glob(f"{short}.v*.avsc"), key=lambda p: int(p.stem.rsplit(".v", 1)[1]))
    return [p.read_text() for p in files]


def freeze() -> list[Path]:
    """Record every contract that differs from its last release as a new released version."""
    RELEASED_DIR.mkdir(exist_ok=True)
    written = []
    for name in contracts.record_names():
        history = released(name)
        current = json.dumps(contracts.schema(name), indent=1, sort_keys=True) + "\n"
        if history and json.loads(history[-1]) == json.loads(current):
            continue
        path = RELEASED_DIR / f"{name.rsplit('.', 1)[-1]}.v{len(history) + 1}.avsc"
        path.write_text(current)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in freeze():
        print(f"released {p}")
