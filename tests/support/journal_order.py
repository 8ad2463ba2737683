"""Helpers for the tests of journal order on PostgreSQL (tests/test_journal_order.py,
tests/test_storage_contract.py): appending a batch inside a caller's transaction, what
pg_locks shows of the append lock and of the in-flight marks, a tailing reader, a batch
held in flight by another thread, a pause between high_water's two reads, and planted
high waters (one forgets the batches in flight, one reads in the wrong order)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from journal_loader.journal.events import LoadStarted
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.storage import Store
from journal_loader.storage.base import Tx
from journal_loader.storage.journal_store import JournalStore, PostgresJournalStore, journal_store
from journal_loader.storage.postgres import MARK_POSITION_BITS, PostgresStore
from tests.support.pg import pg_admin_url


def append_in(tx: Tx, n: int = 1, source_id: int = 1) -> list[int]:
    """Append ``n`` events in the caller's transaction; their positions."""
    events = [PendingEvent.of(None, LoadStarted(reason="order")) for _ in range(n)]
    return [r.position for r in JournalWriter(source_id, "run-order", None).append(tx, events)]


def append(store: Store, n: int = 1, source_id: int = 1) -> list[int]:
    """Append ``n`` events in a transaction of their own, committed."""
    with store.transaction() as tx:
        return append_in(tx, n, source_id)


def committed_positions(store: Store) -> list[int]:
    with store.read_tx() as tx:
        return [int(r[0]) for r in tx.fetchall("SELECT position FROM journal ORDER BY position")]


def high_water(store: Store, journal: JournalStore | None = None) -> int:
    with store.read_tx() as tx:
        return (journal or journal_store(store)).high_water(tx)


def read_after(store: Store, after: int, journal: JournalStore | None = None) -> list[int]:
    """The positions ``events_after(after)`` gives, in order (no page limit that matters)."""
    with store.read_tx() as tx:
        entries = (journal or journal_store(store)).events_after(tx, after, limit=1_000_000)
    return [e.position for e in entries]


def _split(key: int) -> tuple[int, int]:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def append_lock_holders(store: PostgresStore) -> int:
    """Sessions holding (or waiting for) the journal's append lock, seen from outside."""
    hi, lo = _split(store.journal_append_key)
    with psycopg.connect(pg_admin_url()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
            "AND classid::bigint = %s AND objid::bigint = %s",
            (hi, lo),
        ).fetchone()
    assert row is not None
    return int(row[0])


def in_flight_marks(store: PostgresStore) -> list[int]:
    """The first positions of the in-flight marks of this store's namespace, seen from outside."""
    prefix = store.journal_mark_base >> MARK_POSITION_BITS
    with psycopg.connect(pg_admin_url()) as conn:
        rows = conn.execute(
            "SELECT ((classid::bigint << 32) | objid::bigint) - %s FROM pg_locks "
            "WHERE locktype = 'advisory' AND objsubid = 1 AND classid::bigint >> 8 = %s "
            "ORDER BY 1",
            (store.journal_mark_base, prefix),
        ).fetchall()
    return [int(r[0]) for r in rows]


class SequenceOnlyHighWater(PostgresJournalStore):
    """A planted bug: the high water as the last position reserved, the in-flight marks
    forgotten (what reading up to the newest committed event amounts to)."""

    def high_water(self, tx: Tx) -> int:
        return int(tx.fetchone(self.sql["last_reserved"])[0])


class MarksFirstHighWater(PostgresJournalStore):
    """A planted bug: high_water's two reads the other way round (pg_locks, then the
    sequence)."""

    def high_water(self, tx: Tx) -> int:
        store = tx.store
        assert isinstance(store, PostgresStore)
        base = store.journal_mark_base
        low = tx.fetchone(
            self.sql["in_flight_low"],
            {"mark_base": base, "mark_prefix": base >> MARK_POSITION_BITS},
        )[0]
        reserved = int(tx.fetchone(self.sql["last_reserved"])[0])
        return reserved if low is None else min(reserved, int(low) - 1)


@dataclass
class TailingReader:
    """Follows the journal with ``events_after`` from a cursor (the last position it got),
    in small pages, until ``done`` is set and a page read after that comes back empty."""

    store: Store
    journal: JournalStore
    done: threading.Event
    page: int = 7
    pause: Callable[[], float] = lambda: 0.001
    seen: list[int] = field(default_factory=list)
    backwards: list[tuple[int, int]] = field(default_factory=list)  # (cursor, position)
    error: BaseException | None = None

    def run(self) -> None:
        cursor = 0
        try:
            while True:
                finished = self.done.is_set()  # before the read: nothing commits after it
                with self.store.read_tx() as tx:
                    entries = self.journal.events_after(tx, cursor, limit=self.page)
                for e in entries:
                    if e.position <= cursor:
                        self.backwards.append((cursor, e.position))
                    self.seen.append(e.position)
                    cursor = max(cursor, e.position)
                if not entries:
                    if finished:
                        return
                    time.sleep(self.pause())
        except BaseException as e:  # the test thread reports it
            self.error = e


class PauseAfterFirstRead:
    """A Tx stand-in that runs ``between`` once, right after the first statement read through
    it: how a test puts a concurrent writer between the two reads of ``high_water``."""

    def __init__(self, tx: Tx, between: Callable[[], None]) -> None:
        self.tx = tx
        self.store = tx.store
        self._between: Callable[[], None] | None = between

    def fetchone(self, sql: str, params: Any = ()) -> Any:
        row = self.tx.fetchone(sql, params)
        between, self._between = self._between, None
        if between is not None:
            between()
        return row


class HeldBatch:
    """A batch appended by another thread whose transaction stays open until ``release``."""

    def __init__(self, store: Store, n: int = 2, source_id: int = 9) -> None:
        self.positions: list[int] = []
        self._reserved = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(store, n, source_id), daemon=True)

    def _run(self, store: Store, n: int, source_id: int) -> None:
        with store.transaction() as tx:
            self.positions = append_in(tx, n, source_id)
            self._reserved.set()
            self._release.wait(30)

    def start(self) -> None:
        self._thread.start()
        assert self._reserved.wait(10)

    def release(self) -> None:
        self._release.set()
        self._thread.join(10)
