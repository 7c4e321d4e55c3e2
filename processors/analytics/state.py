"""Snapshot encoding of a camera's engine state for the changelog topic.

A snapshot is an ``.npz`` archive (numpy's zip of ``.npy`` arrays) holding the tracker's columns and
one JSON document with everything else. Deliberately not pickle: the changelog is read back on every
rebalance, and unpickling bytes from a topic would execute whatever anyone managed to write there.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from schemas.records import Evidence, FrameRef

FORMAT = 1


def encode(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    doc = json.dumps({"format": FORMAT, **meta}, separators=(",", ":"), allow_nan=True).encode()
    np.savez_compressed(buf, __meta__=np.frombuffer(doc, dtype=np.uint8), **arrays)
    return buf.getvalue()


def decode(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ValueError(f"not an analytics snapshot: {exc}") from None
    meta = json.loads(arrays.pop("__meta__").tobytes())
    if meta.get("format") != FORMAT:
        raise ValueError(f"snapshot format {meta.get('format')} is not {FORMAT}")
    return meta, arrays


def evidence_state(e: Evidence | None) -> list | None:
    if e is None:
        return None
    ref = None if e.frame_ref is None else [e.frame_ref.topic, e.frame_ref.partition, e.frame_ref.offset]
    return [e.frame_seq, e.capture_ts_ms, ref, list(e.box)]


def evidence_load(s: list | None) -> Evidence | None:
    if s is None:
        return None
    ref = None if s[2] is None else FrameRef(s[2][0], int(s[2][1]), int(s[2][2]))
    return Evidence(frame_seq=int(s[0]), capture_ts_ms=int(s[1]), frame_ref=ref, box=[float(v) for v in s[3]])
