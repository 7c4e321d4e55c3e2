"""Batch Avro decoding straight into columns: many bodies of one schema -> numpy arrays, then Arrow.

fastavro decodes one record at a time into Python objects (one ``float`` per box coordinate), and
the sink then turned those objects back into Arrow columns: about 300 µs per detection frame here,
most of the sink's time. This decoder reads every record of a batch at once, field by field: all
cursors advance together, a varint is read for the whole batch in at most ten numpy steps, and
strings and float arrays are cut out of the batch's bytes in one gather. No Python object is made
per value.

Scope: the writer schema must be the reader's (no schema resolution); records, enums, primitives,
``[null, X]`` unions, and arrays and maps whose items are primitives, strings or enums. A schema
with any other shape is refused at compile time (``Unsupported``). A record that is truncated,
has trailing bytes, an over-long varint, a bad union or enum index or invalid UTF-8 is marked
``bad``; callers decode those with fastavro, record by record, which gives exactly the old result
or the old error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

_PAD = 16  # zero bytes after the batch: a varint read never indexes past the buffer
_FIXED = {"float": 4, "double": 8}
_SIMPLE = {"boolean", "int", "long", "float", "double", "string", "bytes"}


class Unsupported(ValueError):
    """The schema has a shape this decoder does not handle (use fastavro)."""


# --- plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One schema node: kind in _SIMPLE | enum | record | nullable | array | map."""

    kind: str
    symbols: tuple[str, ...] = ()
    fields: tuple[tuple[str, Node], ...] = ()
    child: Node | None = None  # nullable's value, array's items, map's values
    null_first: bool = True  # nullable: the null branch is index 0


def compile_schema(schema: Any, named: dict[str, Any] | None = None) -> Node:
    """The plan of a fastavro-parsed schema (named types resolved through ``__named_schemas``)."""
    if named is None:
        named = dict(schema.get("__named_schemas", {})) if isinstance(schema, dict) else {}
    return _compile(schema, named)


def _compile(s: Any, named: dict[str, Any], *, item: bool = False) -> Node:
    if isinstance(s, str):
        if s in _SIMPLE:
            return Node(s)
        if s in named:
            return _compile(named[s], named, item=item)
        raise Unsupported(f"type {s!r}")
    if isinstance(s, list):
        if item:
            raise Unsupported("a union inside an array or map")
        branches = [b for b in s if b != "null"]
        if len(s) != 2 or len(branches) != 1:
            raise Unsupported(f"union {s!r}: only [null, X]")
        return Node("nullable", child=_compile(branches[0], named, item=item), null_first=s[0] == "null")
    kind = s["type"]
    if kind in _SIMPLE:
        return Node(kind)  # {"type": "long"} and logical types read as their base type
    if kind == "enum":
        return Node("enum", symbols=tuple(s["symbols"]))
    if item:
        raise Unsupported(f"{kind} inside an array or map")
    if kind == "record":
        named.setdefault(s["name"], s)
        return Node("record", fields=tuple((f["name"], _compile(f["type"], named)) for f in s["fields"]))
    if kind == "array":
        return Node("array", child=_compile(s["items"], named, item=True))
    if kind == "map":
        return Node("map", child=_compile(s["values"], named, item=True))
    raise Unsupported(f"type {kind!r}")


# --- decoded columns -------------------------------------------------------------------------------


@dataclass
class Column:
    """One field over the batch's records (or an array's items): only the parts its kind uses."""

    kind: str
    valid: np.ndarray  # bool: a value is there (False under a null union branch or a null parent)
    values: np.ndarray | None = None  # numbers, booleans, enum indexes
    start: np.ndarray | None = None  # string/bytes: offset in the batch buffer ...
    length: np.ndarray | None = None  # ... and length
    counts: np.ndarray | None = None  # array/map: items per row
    items: Column | None = None  # array items or map values, flattened in row order
    keys: Column | None = None  # map keys
    symbols: tuple[str, ...] = ()


def _new_column(node: Node, n: int) -> Column:
    kind = node.child.kind if node.kind == "nullable" and node.child else node.kind
    target = node.child if node.kind == "nullable" and node.child else node
    col = Column(kind, np.zeros(n, bool), symbols=target.symbols)
    if kind in ("string", "bytes"):
        col.start, col.length = np.zeros(n, np.int64), np.zeros(n, np.int64)
    elif kind in ("array", "map"):
        col.counts = np.zeros(n, np.int64)
    elif kind != "record":
        col.values = np.zeros(n, _DTYPES[kind])
    return col


_DTYPES = {"boolean": np.bool_, "int": np.int64, "long": np.int64, "float": np.float32,
           "double": np.float64, "enum": np.int64}  # fmt: skip


def _gather(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The bytes of every ``[start, start + length)`` range, concatenated in order."""
    total = int(length.sum())
    if not total:
        return buf[:0]
    before = np.cumsum(length) - length
    return buf[np.arange(total, dtype=np.int64) + np.repeat(start - before, length)]


def _zigzag(u: np.ndarray) -> np.ndarray:
    return (u >> np.uint64(1)).astype(np.int64) ^ -((u & np.uint64(1)).astype(np.int64))


class Decoded:
    """The columns of one decoded batch, with Arrow builders; ``bad`` rows are to be decoded by fastavro."""

    def __init__(self, buf: np.ndarray, n: int, columns: dict[str, Column], bad: np.ndarray) -> None:
        self.buf = buf
        self.n = n
        self.columns = columns
        self.bad = bad

    def __getitem__(self, path: str) -> Column:
        return self.columns[path]

    def values(self, path: str) -> np.ndarray:
        return self.columns[path].values  # type: ignore[return-value]

    def valid(self, path: str) -> np.ndarray:
        return self.columns[path].valid

    def fit(self, values: np.ndarray, dtype: Any, rows: np.ndarray | None = None) -> np.ndarray:
        """``values`` as ``dtype``; rows whose value does not fit are marked bad (``rows``: row per value)."""
        info = np.iinfo(dtype)
        out = (values < info.min) | (values > info.max)
        if out.any():
            self.bad[out.nonzero()[0] if rows is None else rows[out]] = True
        return values.astype(dtype)

    def strings(self, path: str, null: str | None = "") -> pa.Array:
        """A string column; absent values become "" (``null=None``: Arrow nulls)."""
        return self._strings(self.columns[path], np.arange(self.n), null)

    def _strings(self, col: Column, rows: np.ndarray, null: str | None) -> pa.Array:
        assert col.start is not None and col.length is not None
        length = np.where(col.valid, col.length, 0)
        data = _gather(self.buf, col.start, length)
        mask = None
        if null:
            raise ValueError("absent strings read as '' or as nulls only")
        if null is None and not col.valid.all():
            mask = pa.array(col.valid).buffers()[1]
        offsets = np.zeros(length.size + 1, np.int64)
        np.cumsum(length, out=offsets[1:])
        if offsets[-1] >= 2**31:
            raise Unsupported("more than 2 GiB of text in one batch")
        arr = pa.StringArray.from_buffers(
            length.size, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data), mask
        )
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid:  # invalid UTF-8 somewhere: find the rows, as fastavro would fail them
            for i in np.flatnonzero(col.valid):
                s = int(col.start[i])
                try:
                    bytes(self.buf[s : s + int(col.length[i])]).decode()
                except UnicodeDecodeError:
                    self.bad[rows[i]] = True
            return pa.array([""] * length.size)
        return arr

    def symbols(self, path: str, null: str | None = "") -> pa.Array:
        """An enum column as its symbols' text."""
        col = self.columns[path]
        assert col.values is not None
        names = [*col.symbols, null or ""]  # absent rows point at the last entry
        index = np.where(col.valid, col.values, len(col.symbols)).astype(np.int32)
        mask = None if null or col.valid.all() else ~col.valid
        arr = pa.DictionaryArray.from_arrays(pa.array(index, mask=mask), pa.array(names, pa.string()))
        return arr.dictionary_decode()

    def lists(self, path: str, value_type: pa.DataType) -> pa.Array:
        """An array column as an Arrow list (absent = empty), items cast to ``value_type``."""
        col = self.columns[path]
        assert col.counts is not None and col.items is not None
        counts = np.where(col.valid, col.counts, 0)
        return pa.ListArray.from_arrays(_offsets(counts), self._items(col.items, counts, value_type))

    def maps(self, path: str, value_type: pa.DataType) -> pa.Array:
        """A map column as an Arrow map with string keys (absent = empty)."""
        col = self.columns[path]
        assert col.counts is not None and col.items is not None and col.keys is not None
        counts = np.where(col.valid, col.counts, 0)
        keys = self._items(col.keys, counts, pa.string())
        self._no_duplicate_keys(keys, counts)
        return pa.MapArray.from_arrays(_offsets(counts), keys, self._items(col.items, counts, value_type))

    def map_lookup(self, path: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(value, found) per row of ``map[key]`` (the last entry with that key, as a dict keeps it)."""
        col = self.columns[path]
        assert col.counts is not None and col.keys is not None and col.items is not None
        keys = col.keys
        assert keys.start is not None and keys.length is not None and col.items.values is not None
        want = np.frombuffer(key.encode(), np.uint8)
        cand = np.flatnonzero(keys.length == want.size)
        if want.size:
            block = self.buf[keys.start[cand, None] + np.arange(want.size)]
            cand = cand[(block == want).all(axis=1)]
        rows = np.repeat(np.arange(self.n), col.counts)[cand]
        value = np.zeros(self.n, col.items.values.dtype)
        found = np.zeros(self.n, bool)
        value[rows] = col.items.values[cand]  # ascending: a later duplicate overwrites an earlier one
        found[rows] = True
        return value, found & col.valid

    def _items(self, items: Column, counts: np.ndarray, value_type: pa.DataType) -> pa.Array:
        rows = np.repeat(np.arange(self.n), counts)
        if items.kind in ("string", "bytes"):
            return self._strings(items, rows, None if not items.valid.all() else "")
        if items.kind == "enum":
            assert items.values is not None
            return pa.DictionaryArray.from_arrays(
                pa.array(items.values.astype(np.int32)), pa.array(list(items.symbols), pa.string())
            ).dictionary_decode()
        assert items.values is not None
        values = items.values
        if pa.types.is_integer(value_type):
            values = self.fit(values, value_type.to_pandas_dtype(), rows)
        mask = None if items.valid.all() else ~items.valid
        return pa.array(values, type=value_type, mask=mask)

    def _no_duplicate_keys(self, keys: pa.Array, counts: np.ndarray) -> None:
        """A dict keeps one entry per key; rows whose map repeats a key go to fastavro."""
        many = np.flatnonzero(counts > 1)
        if not many.size:
            return
        rows = np.repeat(np.arange(self.n), counts)
        t = pa.table({"row": rows, "key": keys})
        grouped = t.group_by(["row", "key"]).aggregate([("key", "count")])
        if grouped.num_rows != t.num_rows:
            dup = grouped.filter(pa.compute.greater(grouped["key_count"], 1))["row"].to_numpy()
            self.bad[dup] = True


def _offsets(counts: np.ndarray) -> pa.Array:
    out = np.zeros(counts.size + 1, np.int32)
    np.cumsum(counts, out=out[1:])
    return pa.array(out)


# --- decoding --------------------------------------------------------------------------------------


@dataclass
class _Pieces:
    """Items of one array/map column, collected round by round with their place in the output."""

    item: Node
    row: list[np.ndarray] = field(default_factory=list)  # owning row of each item ...
    ordinal: list[np.ndarray] = field(default_factory=list)  # ... and its number within that row
    values: list[np.ndarray] = field(default_factory=list)
    start: list[np.ndarray] = field(default_factory=list)
    length: list[np.ndarray] = field(default_factory=list)
    runs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # fixed-size items: byte runs
    keys: _Pieces | None = None


class BatchDecoder:
    """Decodes many Avro bodies of one schema (compiled once) into a ``Decoded`` batch."""

    def __init__(self, schema: Any) -> None:
        self.plan = compile_schema(schema)
        if self.plan.kind != "record":
            raise Unsupported("the top-level type must be a record")

    def decode(self, buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> Decoded:
        """Decode bodies ``buf[start[i]:end[i]]``; ``buf`` must end with at least 16 zero bytes."""
        return _Run(buf, start, end).run(self.plan)

    def decode_values(self, values: Sequence[bytes], header: int = 0) -> Decoded:
        """Decode whole values, skipping ``header`` bytes of each (5 for the Confluent framing)."""
        buf, start, end = pack(values)
        return self.decode(buf, start + header, end)


def pack(values: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One zero-padded buffer of ``values`` and each value's [start, end)."""
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    end = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(values) + bytes(_PAD), np.uint8)
    return buf, end - lengths, end


class _Run:
    """One decoding pass: a cursor per record; reads take and return the rows still alive."""

    def __init__(self, buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        self.buf = buf
        self.n = start.size
        self.pos = start.astype(np.int64).copy()
        self.end = end.astype(np.int64)
        self.bad = np.zeros(self.n, bool)
        self.cols: dict[str, Column] = {}
        self.pieces: dict[str, _Pieces] = {}

    def run(self, plan: Node) -> Decoded:
        idx = self._record(plan, np.arange(self.n), "")
        self.bad[idx[self.pos[idx] != self.end[idx]]] = True  # trailing bytes (or a short read)
        for path, pieces in self.pieces.items():
            self._finish(self.cols[path], pieces)
        return Decoded(self.buf, self.n, self.cols, self.bad)

    # primitives on rows: (alive rows, their values)

    def _fail(self, rows: np.ndarray) -> None:
        if rows.size:
            self.bad[rows] = True

    def _varint_at(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw (unsigned) varints at positions ``p`` and their byte counts (0: invalid).

        Byte k of every varint is read at once, for k = 0, 1, ... while any has not ended: as many
        numpy steps as the longest varint has bytes (measured faster than shrinking index sets).
        """
        b = self.buf[p]
        out = (b & 0x7F).astype(np.uint64)
        going = b >= 0x80
        nbytes = np.ones(p.size, np.int64)
        k = 1
        while k < 10 and going.any():
            b = self.buf[p + k]
            out |= ((b & 0x7F).astype(np.uint64) << np.uint64(7 * k)) * going
            nbytes += going
            if k == 9:  # a tenth byte may only carry bit 63
                nbytes[going & (b > 1)] = 0
            going &= b >= 0x80
            k += 1
        nbytes[going] = 0  # not ended within ten bytes
        return out, nbytes

    def _long(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.pos[idx]
        raw, nbytes = self._varint_at(p)
        after = p + nbytes
        ok = (nbytes > 0) & (after <= self.end[idx])
        if ok.all():
            self.pos[idx] = after
            return idx, _zigzag(raw)
        self._fail(idx[~ok])
        self.pos[idx[ok]] = after[ok]
        return idx[ok], _zigzag(raw[ok])

    def _int(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx, v = self._long(idx)
        ok = (v >= -(2**31)) & (v < 2**31)
        self._fail(idx[~ok])
        return idx[ok], v[ok]

    def _fixed(self, idx: np.ndarray, size: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
        p = self.pos[idx]
        ok = p + size <= self.end[idx]
        self._fail(idx[~ok])
        idx, p = idx[ok], p[ok]
        raw = self.buf[p[:, None] + np.arange(size)]
        self.pos[idx] = p + size
        return idx, raw.view(dtype).ravel()

    def _boolean(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx, raw = self._fixed(idx, 1, "u1")
        ok = raw <= 1
        self._fail(idx[~ok])
        return idx[ok], raw[ok].astype(bool)

    def _bytes(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx, n = self._long(idx)
        p = self.pos[idx]
        ok = (n >= 0) & (n <= self.end[idx] - p)
        self._fail(idx[~ok])
        idx, p, n = idx[ok], p[ok], n[ok]
        self.pos[idx] = p + n
        return idx, p, n

    def _enum(self, idx: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        idx, v = self._long(idx)
        ok = (v >= 0) & (v < count)
        self._fail(idx[~ok])
        return idx[ok], v[ok]

    def _scalar(self, node: Node, idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One value of a simple or enum ``node`` per row: (alive rows, arrays by Column field)."""
        kind = node.kind
        if kind in ("string", "bytes"):
            idx, p, n = self._bytes(idx)
            return idx, {"start": p, "length": n}
        if kind == "long":
            idx, v = self._long(idx)
        elif kind == "int":
            idx, v = self._int(idx)
        elif kind in _FIXED:
            idx, v = self._fixed(idx, _FIXED[kind], "<f4" if kind == "float" else "<f8")
        elif kind == "boolean":
            idx, v = self._boolean(idx)
        elif kind == "enum":
            idx, v = self._enum(idx, len(node.symbols))
        else:
            raise Unsupported(kind)
        return idx, {"values": v}

    # rows: each writes its column(s) and returns the rows still alive

    def _col(self, node: Node, path: str) -> Column:
        col = self.cols.get(path)
        if col is None:
            col = self.cols[path] = _new_column(node, self.n)
        return col

    def _record(self, node: Node, idx: np.ndarray, path: str) -> np.ndarray:
        for name, child in node.fields:
            idx = self._field(child, idx, f"{path}.{name}" if path else name)
        return idx

    def _field(self, node: Node, idx: np.ndarray, path: str) -> np.ndarray:
        if node.kind == "record":
            return self._record(node, idx, path)
        if node.kind == "nullable":
            assert node.child is not None
            self._declare(node.child, path)
            idx, branch = self._long(idx)
            value = 1 if node.null_first else 0
            ok = (branch == 0) | (branch == 1)
            self._fail(idx[~ok])
            null_rows, some = idx[ok & (branch != value)], idx[ok & (branch == value)]
            some = self._field(node.child, some, path)
            return np.sort(np.concatenate([null_rows, some]))
        col = self._col(node, path)
        if node.kind in ("array", "map"):
            return self._repeated(node, idx, path, col)
        idx, parts = self._scalar(node, idx)
        for attr, arr in parts.items():
            getattr(col, attr)[idx] = arr
        col.valid[idx] = True
        return idx

    def _declare(self, node: Node, path: str) -> None:
        """Create the columns under ``path`` up front, so a batch of nulls still has them."""
        if node.kind == "record":
            for name, child in node.fields:
                self._declare(child.child if child.kind == "nullable" and child.child else child,
                              f"{path}.{name}")  # fmt: skip
        else:
            self._col(node, path)

    # arrays and maps: blocks of items, round by round

    def _repeated(self, node: Node, idx: np.ndarray, path: str, col: Column) -> np.ndarray:
        assert node.child is not None and col.counts is not None
        pieces = self.pieces.get(path)
        if pieces is None:
            keys = _Pieces(Node("string")) if node.kind == "map" else None
            pieces = self.pieces[path] = _Pieces(node.child, keys=keys)
        size = _FIXED.get(node.child.kind, 0) if node.kind == "array" else 0
        done: list[np.ndarray] = []
        active = idx
        while active.size:  # one round per block: writers usually send one block and the 0 end
            active, count = self._long(active)
            neg = count < 0
            if neg.any():  # a negative count is followed by the block's byte size
                count = np.abs(count)
                sized, _ = self._long(active[neg])
                keep = ~neg | np.isin(active, sized)
                active, count = active[keep], count[keep]
            fin = count == 0
            done.append(active[fin])
            active, count = active[~fin], count[~fin]
            if not active.size:
                break
            # Every item takes max(1, size) bytes: a bogus count fails here instead of allocating.
            ok = count * max(1, size) <= self.end[active] - self.pos[active]
            self._fail(active[~ok])
            active, count = active[ok], count[ok]
            base = col.counts[active].copy()
            col.counts[active] += count
            if size:
                p = self.pos[active]
                pieces.runs.append((p, count * size))
                self.pos[active] = p + count * size
            else:
                active = self._lockstep(node, active, count, base, pieces)
        alive = np.sort(np.concatenate(done)) if done else idx[:0]
        col.valid[alive] = True
        return alive

    def _lockstep(
        self, node: Node, rows: np.ndarray, count: np.ndarray, base: np.ndarray, pieces: _Pieces
    ) -> np.ndarray:
        """Item k of every row that has one, for k = 0, 1, ...: numpy work per item *position*."""
        assert node.child is not None
        for k in range(int(count.max())):
            has = (count > k) & ~self.bad[rows]
            sub, ordinal = rows[has], base[has] + k
            if node.kind == "map":
                assert pieces.keys is not None
                self._read_item(Node("string"), sub, ordinal, pieces.keys)
                alive = ~self.bad[sub]
                sub, ordinal = sub[alive], ordinal[alive]
            self._read_item(node.child, sub, ordinal, pieces)
        return rows[~self.bad[rows]]

    def _read_item(self, item: Node, rows: np.ndarray, ordinal: np.ndarray, pieces: _Pieces) -> None:
        got, parts = self._scalar(item, rows)
        alive = ~self.bad[rows]
        pieces.row.append(got)
        pieces.ordinal.append(ordinal[alive])
        if "values" in parts:
            pieces.values.append(parts["values"])
        else:
            pieces.start.append(parts["start"])
            pieces.length.append(parts["length"])

    def _finish(self, col: Column, pieces: _Pieces) -> None:
        """Put the collected items in row order: the column's flat ``items`` (and ``keys``)."""
        assert col.counts is not None
        begin = np.cumsum(col.counts) - col.counts
        total = int(col.counts.sum())
        col.items = _items_column(self.buf, pieces, begin, total)
        if pieces.keys is not None:
            col.keys = _items_column(self.buf, pieces.keys, begin, total)


def _items_column(buf: np.ndarray, pieces: _Pieces, begin: np.ndarray, total: int) -> Column:
    item = pieces.item
    if pieces.runs:  # fixed-size items: byte runs, whose buffer order is the row order
        start = np.concatenate([s for s, _ in pieces.runs])
        length = np.concatenate([n for _, n in pieces.runs])
        if len(pieces.runs) > 1:
            order = np.argsort(start, kind="stable")
            start, length = start[order], length[order]
        values = _gather(buf, start, length).view("<f4" if item.kind == "float" else "<f8")
        return Column(item.kind, np.ones(values.size, bool), values=values)
    col = _new_column(item, total)
    col.valid[:] = True
    if not pieces.row:
        return col
    target = begin[np.concatenate(pieces.row)] + np.concatenate(pieces.ordinal)
    if col.values is not None:
        col.values[target] = np.concatenate(pieces.values)
    else:
        assert col.start is not None and col.length is not None
        col.start[target] = np.concatenate(pieces.start)
        col.length[target] = np.concatenate(pieces.length)
    return col
