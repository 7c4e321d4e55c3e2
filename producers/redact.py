"""Camera URLs carry credentials (``rtsp://user:pass@host/...``, ``?token=...``): strip them before any
log line, metric label or Kafka record sees the URL."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters that carry secrets in camera and CDN URLs (lower-case; matched by substring).
_SECRET_PARAMS = ("pass", "pwd", "secret", "token", "key", "auth", "sig", "signature", "credential", "user")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact_url(url: str) -> str:
    """``url`` with user info and secret-looking query values replaced by ``***``.

    Anything that is not a URL (a file path, a device index) is returned unchanged. Unparseable
    URLs still lose everything between ``://`` and ``@``.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if any(s in k.lower() for s in _SECRET_PARAMS) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """An error message with any URL's credentials and any of ``secrets`` masked (FFmpeg errors echo URLs)."""
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, MASK)
    return out


def url_secrets(url: str) -> list[str]:
    """The secret substrings of ``url`` (password, user, secret query values), for ``redact_text``."""
    if "://" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    out = [s for s in (parts.username, parts.password) if s]
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if v and any(s in k.lower() for s in _SECRET_PARAMS):
            out.append(v)
    # Longest first so a password containing the user name is masked whole.
    return sorted(set(out), key=len, reverse=True)
