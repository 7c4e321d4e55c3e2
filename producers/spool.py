"""A bounded, ordered, on-disk FIFO of Kafka records for the time the broker is unreachable.

Layout: ``<dir>/<20-digit segment number>.spool`` files of framed records and ``<dir>/cursor.json``,
the position of the first record not yet acknowledged by Kafka. Records are read (handed to the
producer) ahead of the cursor; the cursor only moves when Kafka acknowledged everything before it,
so a stop or crash before the acknowledgement replays the record instead of losing it.

Record frame: ``magic(1) topic_len(2) key_len(4) value_len(4) crc32(4)`` then topic, key, value;
lengths of 0xFFFFFFFF mean None (a tombstone value). A torn last record (crash mid-write) is cut off
when the spool is opened.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">BHIII")
_MAGIC = 0xA5
_NONE = 0xFFFFFFFF
_FIRST_SEGMENT = 10**12  # room below for segments prepended at shutdown
_SUFFIX = ".spool"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    topic: str
    key: bytes | None
    value: bytes | None

    @property
    def size(self) -> int:
        return _HEADER.size + len(self.topic) + len(self.key or b"") + len(self.value or b"")


Position = tuple[int, int]  # (segment number, byte offset)


def _frame(rec: SpoolRecord) -> bytes:
    topic = rec.topic.encode()
    key = rec.key or b""
    value = rec.value or b""
    crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(topic)))
    header = _HEADER.pack(
        _MAGIC,
        len(topic),
        _NONE if rec.key is None else len(key),
        _NONE if rec.value is None else len(value),
        crc,
    )
    return b"".join((header, topic, key, value))


def _read_one(handle, offset: int) -> tuple[SpoolRecord, int] | None:  # type: ignore[no-untyped-def]
    """The record at ``offset`` and the offset after it, or None at the end or at a torn record."""
    handle.seek(offset)
    header = handle.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    magic, tlen, klen, vlen, crc = _HEADER.unpack(header)
    if magic != _MAGIC:
        return None
    kbytes = 0 if klen == _NONE else klen
    vbytes = 0 if vlen == _NONE else vlen
    body = handle.read(tlen + kbytes + vbytes)
    if len(body) < tlen + kbytes + vbytes:
        return None
    topic, key, value = body[:tlen], body[tlen : tlen + kbytes], body[tlen + kbytes :]
    if zlib.crc32(value, zlib.crc32(key, zlib.crc32(topic))) != crc:
        return None
    rec = SpoolRecord(topic.decode(), None if klen == _NONE else key, None if vlen == _NONE else value)
    return rec, offset + _HEADER.size + len(body)


class DiskSpool:
    """Append at the tail, read ahead from the head, acknowledge (commit) in order. One thread uses it."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._cursor_file = self.dir / "cursor.json"
        self._sizes: dict[int, int] = {}
        self._write = None
        self._read = None
        self._read_seg = -1
        self._dirty = False
        self._open()

    # -- state ------------------------------------------------------------------------------------
    def _path(self, seg: int) -> Path:
        return self.dir / f"{seg:020d}{_SUFFIX}"

    def _open(self) -> None:
        segs = sorted(int(p.stem) for p in self.dir.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        cursor: Position = (segs[0], 0) if segs else (_FIRST_SEGMENT, 0)
        try:
            saved = json.loads(self._cursor_file.read_text())
            cursor = (int(saved["segment"]), int(saved["offset"]))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError) as exc:
            log.error("spool cursor unreadable; replaying from the oldest segment", extra={"error": str(exc)})
        for seg in segs:
            if seg < cursor[0]:
                self._path(seg).unlink()  # acknowledged before the last stop
        segs = [s for s in segs if s >= cursor[0]]
        if segs and cursor[0] not in segs:
            cursor = (segs[0], 0)
        for seg in segs:
            self._sizes[seg] = self._valid_length(seg)
        if not segs:
            self._sizes[cursor[0]] = 0
            self._path(cursor[0]).touch()
        self.cursor: Position = cursor
        self.read_pos: Position = cursor
        self._tail = max(self._sizes)
        self._write = open(self._path(self._tail), "ab")  # noqa: SIM115 (held open: the tail)

    def _valid_length(self, seg: int) -> int:
        """Length of the intact prefix of a segment; a torn tail is truncated away."""
        path = self._path(seg)
        size = path.stat().st_size
        offset = 0
        with open(path, "rb") as handle:
            while offset < size:
                got = _read_one(handle, offset)
                if got is None:
                    break
                offset = got[1]
        if offset < size:
            log.warning(
                "spool segment had a torn tail; truncated",
                extra={"segment": path.name, "kept": offset, "size": size},
            )
            with open(path, "r+b") as handle:
                handle.truncate(offset)
        return offset

    @property
    def bytes(self) -> int:
        """Bytes on disk (acknowledged records still count until their segment is deleted)."""
        return sum(self._sizes.values())

    def has_unread(self) -> bool:
        seg, off = self.read_pos
        return off < self._sizes.get(seg, 0) or any(s > seg and n for s, n in self._sizes.items())

    def is_empty(self) -> bool:
        """Nothing unacknowledged: every record written was acknowledged."""
        seg, off = self.cursor
        return off >= self._sizes.get(seg, 0) and not any(s > seg and n for s, n in self._sizes.items())

    # -- writing ----------------------------------------------------------------------------------
    def append(self, rec: SpoolRecord) -> bool:
        """Write ``rec`` at the tail; False (nothing written) when the spool would exceed its bound."""
        data = _frame(rec)
        if self.bytes + len(data) > self.max_bytes:
            return False
        assert self._write is not None
        if self._sizes[self._tail] >= self.segment_bytes:
            self._write.flush()
            os.fsync(self._write.fileno())
            self._write.close()
            self._tail += 1
            self._sizes[self._tail] = 0
            self._write = open(self._path(self._tail), "ab")  # noqa: SIM115 (held open: the tail)
        self._write.write(data)
        # Flushed to the OS per record: the reader may read it at once, and a process crash keeps it.
        self._write.flush()
        self._sizes[self._tail] += len(data)
        return True

    # -- reading ----------------------------------------------------------------------------------
    def read_next(self) -> tuple[SpoolRecord, Position] | None:
        """The next unread record and the position after it (pass that to ``commit``), or None."""
        seg, off = self.read_pos
        while off >= self._sizes.get(seg, 0):
            later = [s for s in self._sizes if s > seg]
            if not later:
                return None
            seg, off = min(later), 0
        if self._read is None or self._read_seg != seg:
            if self._read is not None:
                self._read.close()
            self._read = open(self._path(seg), "rb")  # noqa: SIM115 (held open: the reader)
            self._read_seg = seg
        got = _read_one(self._read, off)
        if got is None:  # cannot happen for lengths we validated or wrote ourselves
            raise OSError(f"spool segment {self._path(seg)} is corrupt at offset {off}")
        rec, end = got
        self.read_pos = (seg, end)
        return rec, (seg, end)

    def rewind(self) -> None:
        """Read again from the cursor (records read but not acknowledged are handed out again)."""
        self.read_pos = self.cursor

    def commit(self, pos: Position) -> None:
        """Everything before ``pos`` is acknowledged: move the cursor, delete finished segments."""
        if pos <= self.cursor:
            return
        self.cursor = pos
        self._dirty = True
        for seg in [
            s
            for s in self._sizes
            if s < pos[0] or (s == pos[0] and s != self._tail and pos[1] >= self._sizes[s])
        ]:
            if seg == self._tail:
                continue
            if self._read_seg == seg and self._read is not None:
                self._read.close()
                self._read, self._read_seg = None, -1
            self._path(seg).unlink(missing_ok=True)
            del self._sizes[seg]
        if self.is_empty() and self._sizes[self._tail] > 0 and self.read_pos >= self.cursor:
            # Fully acknowledged: start the tail segment over so the spool returns to zero bytes.
            self._restart_tail()

    def _restart_tail(self) -> None:
        assert self._write is not None
        self._write.close()
        if self._read is not None:
            self._read.close()
            self._read, self._read_seg = None, -1
        self._path(self._tail).unlink(missing_ok=True)
        del self._sizes[self._tail]
        self._tail += 1
        self._sizes[self._tail] = 0
        self._write = open(self._path(self._tail), "ab")  # noqa: SIM115 (held open: the tail)
        self.cursor = self.read_pos = (self._tail, 0)
        self.save_cursor()

    def save_cursor(self) -> None:
        tmp = self._cursor_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"segment": self.cursor[0], "offset": self.cursor[1]}))
        os.replace(tmp, self._cursor_file)
        self._dirty = False

    def maybe_save_cursor(self) -> None:
        if self._dirty:
            self.save_cursor()

    def prepend(self, records: list[SpoolRecord]) -> None:
        """Put ``records`` (oldest first) before everything unacknowledged. Only when nothing is read
        ahead of the cursor (at shutdown, after the producer's queue was purged)."""
        if not records:
            return
        seg, off = self.cursor
        if off > 0 and seg in self._sizes:
            # Drop the acknowledged prefix of the cursor segment so the new segment can go before it.
            path = self._path(seg)
            with open(path, "rb") as handle:
                handle.seek(off)
                rest = handle.read()
            if seg == self._tail and self._write is not None:
                self._write.close()
            if self._read is not None:
                self._read.close()
                self._read, self._read_seg = None, -1
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(rest)
            os.replace(tmp, path)
            self._sizes[seg] = len(rest)
            if seg == self._tail:
                self._write = open(path, "ab")  # noqa: SIM115 (held open: the tail)
        new = min(self._sizes) - 1
        data = b"".join(_frame(r) for r in records)
        with open(self._path(new), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        self._sizes[new] = len(data)
        self.cursor = self.read_pos = (new, 0)
        self.save_cursor()

    def close(self) -> None:
        if self._write is not None:
            self._write.flush()
            os.fsync(self._write.fileno())
            self._write.close()
            self._write = None
        if self._read is not None:
            self._read.close()
            self._read = None
        self.save_cursor()
