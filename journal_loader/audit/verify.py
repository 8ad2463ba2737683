"""Verifying the journal's hash chains, and the chain heads kept outside the database.

Every event's ``hash`` is ``SHA-256(prev_hash + canonical bytes)`` where ``prev_hash`` is the
``hash`` of the previous event of the same source (``journal_loader.journal.chain`` defines
the canonical bytes; docs/auditing.md repeats the definition for third parties).

``verify`` reads the journal once, in position order, streamed (constant memory: one head per
source), and for every event checks

* ``prev_hash`` is the hash of the source's previous event: a deleted, inserted or reordered
  event breaks this at the event after it;
* ``hash`` is the SHA-256 of that previous hash and the event's canonical bytes: an edited
  column (payload, time, type, run...) breaks this at the event itself.

After a break the walk goes on from the stored hash, so one edit is reported once and the
rest of the journal is still checked. Two checks cover what a chain alone cannot see:

* deleting a source's *last* events leaves a valid, shorter chain. The ``sources`` projection
  still names the old last position (unless it was rebuilt after the deletion); ``verify``
  compares. The real defence is ``export_heads``: write the heads (source, position, hash) to
  a file kept outside the database, and later ``verify(against=...)`` checks the journal still
  contains exactly those events;
* a chain rewritten from an edit onwards (every hash recomputed) is valid too: only the
  exported heads reveal it (the head's hash differs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from journal_loader.audit import base
from journal_loader.audit.base import require_source
from journal_loader.errors import UsageError
from journal_loader.journal.chain import format_time
from journal_loader.storage import Store
from journal_loader.storage.audit_reader import audit_reader

HEADS_FORMAT = "journal-loader chain heads v1"
MAX_BREAKS = 100


class HeadsFileError(UsageError):
    """A heads file that cannot be read or is not one (exit code 2)."""


@dataclass(frozen=True, slots=True)
class Head:
    source_id: int
    position: int
    hash: bytes
    events: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "position": self.position,
            "hash": self.hash.hex(),
            "events": self.events,
        }


@dataclass(frozen=True, slots=True)
class Break:
    source_id: int
    position: int
    kind: str  # hash | prev_hash | missing_tail | head_missing | head_changed
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "position": self.position,
            "kind": self.kind,
            "message": self.message,
        }


@dataclass(slots=True)
class VerifyReport:
    events: int = 0
    last_position: int | None = None
    heads: dict[int, Head] = field(default_factory=dict)
    breaks: list[Break] = field(default_factory=list)
    total_breaks: int = 0
    heads_checked: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.total_breaks == 0

    @property
    def first_break(self) -> Break | None:
        return min(self.breaks, key=lambda b: b.position) if self.breaks else None

    def add(self, b: Break) -> None:
        self.total_breaks += 1
        if len(self.breaks) < MAX_BREAKS:
            self.breaks.append(b)

    def to_json(self) -> dict[str, Any]:
        first = self.first_break
        return {
            "ok": self.ok,
            "events": self.events,
            "sources": len(self.heads),
            "last_position": self.last_position,
            "first_broken_position": None if first is None else first.position,
            "total_breaks": self.total_breaks,
            "breaks": [b.to_json() for b in sorted(self.breaks, key=lambda b: b.position)],
            "heads_checked": self.heads_checked,
            "seconds": round(self.seconds, 3),
        }


def canonical_time(value: Any) -> str:
    """``recorded_at`` as the chain hashes it: UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    PostgreSQL formats it in the query (``to_char``); SQLite stores UTC text
    ``YYYY-MM-DD HH:MM:SS.ffffff``, turned around here without parsing it."""
    if isinstance(value, str):
        if len(value) == 27 and value[10] == "T" and value[26] == "Z":
            return value
        if len(value) == 26 and value[10] == " " and value[19] == ".":
            return f"{value[:10]}T{value[11:]}Z"
        return format_time(dt.datetime.fromisoformat(value))
    assert isinstance(value, dt.datetime)
    return format_time(value)


def verify(
    store: Store,
    *,
    source_id: int | None = None,
    against: Iterable[Head] | None = None,
) -> VerifyReport:
    """Recompute the chains (every source's, or one); with ``against``, also check that the
    journal still holds each of those heads, unchanged."""
    started = time.monotonic()
    reader = audit_reader(store)
    report = VerifyReport()
    # The projection's idea of each source's last event, read *before* the bound below, so
    # every position it names was committed by then.
    claimed = reader.claimed_heads(source_id)
    wanted: dict[int, Head] = {}
    for h in against or ():
        if source_id is None or h.source_id == source_id:
            wanted[h.position] = h
    if source_id is not None and not claimed and not wanted:
        require_source(store, source_id)  # unknown to the projection: is it in the journal?
    # The last event, not the high water (JournalStore.high_water): a claimed head read
    # above may lie above the high water while a lower position is still in flight, and
    # verify would call its tail missing. No chain can miss an in-flight event: a source's
    # events come from one run at a time, and its batches commit in order.
    last = reader.last_position()
    report.last_position = last or None
    found: dict[int, tuple[int, bytes]] = {}

    # per source: [hash of its last event, events, position of its last event]
    chains: dict[int, list[Any]] = {}
    sha256 = hashlib.sha256
    events = 0
    for rows in reader.event_batches(last=last, source_id=source_id, batch=base.FETCH_ROWS):
        events += len(rows)
        for position, sid, offset, kind, version, payload, run_id, stamp, prev, digest in rows:
            chain = chains.get(sid)
            if chain is None:
                chain = chains[sid] = [None, 0, None]
            if prev != chain[0]:
                report.add(
                    Break(
                        sid, position, "prev_hash", _prev_message(sid, position, chain[0], chain[2])
                    )
                )
            if type(stamp) is not str or len(stamp) != 27:  # SQLite's text (PostgreSQL: to_char)
                stamp = any_time(stamp)
            hasher = sha256(prev) if prev else sha256()
            hasher.update(
                f"{sid}\n{'' if offset is None else offset}\n{kind}\n{version}\n{run_id}\n"
                f"{stamp}\n".encode()
            )
            hasher.update(payload if type(payload) is bytes else payload.encode())
            if hasher.digest() != digest:
                report.add(
                    Break(
                        sid,
                        position,
                        "hash",
                        f"source {sid}, position {position} ({kind}): the hash does not match "
                        "the event's contents: the event was changed after it was written",
                    )
                )
            chain[0] = digest
            chain[1] += 1
            chain[2] = position
            if position in wanted:
                found[position] = (sid, bytes(digest))
    report.events = events
    report.heads = {sid: Head(sid, c[2], bytes(c[0]), c[1]) for sid, c in sorted(chains.items())}
    positions = {sid: c[2] for sid, c in chains.items()}

    for sid, claimed_last in sorted(claimed.items()):
        actual = positions.get(sid)
        if actual is None or actual < claimed_last:
            report.add(
                Break(
                    sid,
                    claimed_last,
                    "missing_tail",
                    f"source {sid}: the sources projection says its last event is at position "
                    f"{claimed_last}, the journal's ends at "
                    f"{'(no events at all)' if actual is None else actual}: events were "
                    "deleted from its end (or the projection is wrong: projections rebuild "
                    "--check)",
                )
            )
    for position, head in sorted(wanted.items()):
        report.heads_checked += 1
        seen = found.get(position)
        if seen is None:
            report.add(
                Break(
                    head.source_id,
                    position,
                    "head_missing",
                    f"source {head.source_id}: its exported head, position {position}, is no "
                    "longer in the journal: events were deleted"
                    + (
                        f" (the source's chain now ends at {positions[head.source_id]})"
                        if head.source_id in positions
                        else " (the source has no events left)"
                    ),
                )
            )
        elif seen != (head.source_id, head.hash):
            report.add(
                Break(
                    head.source_id,
                    position,
                    "head_changed",
                    f"source {head.source_id}: the event at position {position} is not the "
                    "exported head (its hash differs): the chain was rewritten",
                )
            )
    report.seconds = time.monotonic() - started
    return report


def any_time(value: Any) -> str:
    """A stored time in the canonical form; one that cannot be read as a time is hashed as it
    is (so it breaks the chain instead of stopping the verification)."""
    if type(value) is str and len(value) == 26 and value[10] == " ":  # SQLite's UTC text
        return f"{value[:10]}T{value[11:]}Z"
    try:
        return canonical_time(value)
    except (ValueError, TypeError, AssertionError):
        return str(value)


def _prev_message(sid: int, position: int, expected: bytes | None, before: int | None) -> str:
    if expected is None:
        return (
            f"source {sid}, position {position}: the source's first event here names a previous "
            "hash: the events before it were deleted"
        )
    return (
        f"source {sid}, position {position}: prev_hash is not the hash of the source's previous "
        f"event (position {before}): events between them were deleted, or this one was "
        "moved or changed"
    )


# --- heads files ------------------------------------------------------------------------------


def write_heads(path: str | os.PathLike[str], report: VerifyReport) -> None:
    """Write the heads of a successful verification, atomically (temp file + rename)."""
    document = {
        "format": HEADS_FORMAT,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(),
        "last_position": report.last_position,
        "events": report.events,
        "heads": [h.to_json() for h in report.heads.values()],
    }
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise HeadsFileError(f"{path}: cannot write the heads file: {e.strerror or e}") from e


def read_heads(path: str | os.PathLike[str]) -> list[Head]:
    try:
        document = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as e:
        raise HeadsFileError(f"{path}: cannot read the heads file: {e.strerror or e}") from e
    except ValueError as e:
        raise HeadsFileError(f"{path}: not a heads file (not JSON: {e})") from e
    if not isinstance(document, dict) or document.get("format") != HEADS_FORMAT:
        raise HeadsFileError(
            f'{path}: not a heads file (expected "format": "{HEADS_FORMAT}"; write one '
            "with journal-loader verify --export-heads)"
        )
    heads = []
    try:
        for h in document["heads"]:
            digest = bytes.fromhex(h["hash"])
            if len(digest) != 32:
                raise ValueError("a hash is 32 bytes")
            heads.append(
                Head(int(h["source_id"]), int(h["position"]), digest, int(h.get("events", 0)))
            )
    except (KeyError, TypeError, ValueError) as e:
        raise HeadsFileError(f"{path}: a head is malformed ({type(e).__name__}: {e})") from e
    return heads


__all__ = [
    "HEADS_FORMAT",
    "Break",
    "Head",
    "HeadsFileError",
    "VerifyReport",
    "canonical_time",
    "read_heads",
    "verify",
    "write_heads",
]
