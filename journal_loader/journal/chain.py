"""The journal's hash chain: each event's ``hash`` covers the previous hash of its source.

Canonical bytes of an event (defined once, here; README "Auditing" repeats it):

    source_id, record_offset ('' when none), event_type, schema_version, run_id and
    recorded_at, each followed by a newline, encoded as UTF-8; then the payload bytes exactly
    as stored.

``record_offset`` is empty for source-level events (0 is written as ``0``); ``recorded_at`` is
UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. Then::

    hash = SHA-256(prev_hash + canonical)     # prev_hash is b"" for a source's first event

A third party can verify a chain with hashlib alone, reading the rows of one source in
position order.
"""

from __future__ import annotations

import datetime as dt
import hashlib


def format_time(value: dt.datetime) -> str:
    if value.tzinfo is None:  # SQLite hands timestamps back naive; they are UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(
    source_id: int,
    record_offset: int | None,
    event_type: str,
    schema_version: int,
    run_id: str,
    recorded_at: str,
    payload: bytes,
) -> bytes:
    offset = "" if record_offset is None else str(record_offset)
    head = f"{source_id}\n{offset}\n{event_type}\n{schema_version}\n{run_id}\n{recorded_at}\n"
    return head.encode() + payload


def chain_hash(prev_hash: bytes | None, canonical_bytes: bytes) -> bytes:
    return hashlib.sha256((prev_hash or b"") + canonical_bytes).digest()
