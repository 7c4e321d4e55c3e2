"""Split a SQL script into statements: on ``;`` outside quotes and comments, comments dropped."""

from __future__ import annotations

_ROW_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "CHECK")


def split_statements(script: str) -> list[str]:
    """The statements of ``script``, stripped, comments removed, blank ones skipped.

    Knows ClickHouse's quoting ('...', "...", `...` with backslash or doubled-quote escapes) and
    comments (``--`` and ``/* */``), so a ``;`` inside either never splits.
    """
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(script)
    while i < n:
        ch = script[i]
        if ch in "'\"`":
            end = _end_of_quoted(script, i)
            buf.append(script[i:end])
            i = end
        elif script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end < 0 else end  # keep the newline as a separator
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated /* comment in SQL script")
            buf.append(" ")
            i = end + 2
        elif ch == ";":
            _flush(buf, statements)
            i += 1
        else:
            buf.append(ch)
            i += 1
    _flush(buf, statements)
    return statements


def returns_rows(statement: str) -> bool:
    """Whether a statement produces a result set (as opposed to DDL/DML run as a command)."""
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    return bool(words) and words[0].upper() in _ROW_KEYWORDS


def _end_of_quoted(script: str, start: int) -> int:
    quote = script[start]
    i = start + 1
    while i < len(script):
        ch = script[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            if script.startswith(quote * 2, i):  # doubled quote escapes itself
                i += 2
                continue
            return i + 1
        i += 1
    raise ValueError(f"unterminated {quote} quote in SQL script")


def _flush(buf: list[str], statements: list[str]) -> None:
    text = "".join(buf).strip()
    buf.clear()
    if text:
        statements.append(text)
