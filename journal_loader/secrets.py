"""Keeping passwords out of logs, errors, events and the DLQ.

Two layers, because either alone leaks in some case:

* ``register_secret(value)``: every password journal-loader is given (in a URL or the config's
  ``database.password``) is remembered, raw and percent-decoded, and ``scrub`` replaces each
  occurrence in any text by ``***``; this catches a driver echoing the password back.
* a pattern for ``scheme://user:password@host`` replaces the password part of any URL-shaped
  text, even one that cannot be parsed (a malformed ``%ZZ`` escape, say).

``mask_url`` is for displaying a URL; ``scrub`` is for everything else that leaves the process.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)@")
_PASSWORD_KV = re.compile(r"(?i)(?P<head>\bpassword\s*[=:]\s*)(?P<pw>'[^']*'|\"[^\"]*\"|\S+)")

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    if not value or len(value) < 3:
        # Masking every occurrence of a two-letter string would shred messages; such
        # passwords are still caught by the URL and key=value patterns.
        return
    with _lock:
        _secrets.add(value)
        try:
            decoded = unquote(value, errors="strict")
        except UnicodeDecodeError:
            decoded = value
        if decoded != value and len(decoded) >= 3:
            _secrets.add(decoded)


def scrub(text: str) -> str:
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    text = _PASSWORD_KV.sub(lambda m: m.group("head") + MASK, text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_url(url: str) -> str:
    """A URL fit for display: the password, if any, is replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", url)


def password_from_url(url: str) -> str | None:
    m = _URL_PASSWORD.search(url)
    return m.group("pw") if m else None
