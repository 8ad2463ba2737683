"""The journal's repository: every statement the runner and the journal's readers run on the
journal, the sources projection's identity columns and the source leases.

It takes and returns plain values (ints, strings, encoded payloads, the NamedTuples below):
storage never decodes an event; ``journal_loader.journal.queries`` does. The SQL is named text
in ``queries/journal.sql``, with ``queries/journal.<dialect>.sql`` overriding what a backend
spells differently; ``journal_store(store)`` picks the backend's class, and that choice is
the only place the dialect is looked at.

Every method runs in the caller's transaction (``tx``): a batch's lease check, its events and
its checkpoint commit together (invariant 2 in journal_loader/runner).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from journal_loader.storage.base import Store, Tx
from journal_loader.storage.sql import load_queries

_SQL = Path(__file__).with_name("queries") / "journal.sql"


def source_lock_name(source_type: str, file_hash: str) -> str:
    """The name of a source's run lock (``Store.lock_source``): one run per source at once."""
    return f"{source_type}:{file_hash}"


def chunk_lock_name(source_type: str, file_hash: str, chunk: int) -> str:
    """The run lock of one chunk of a split source: the source's lock name with a chunk
    suffix. Chunks of one source run side by side; a second run of the SAME chunk is kept
    out exactly like a second run of a whole file. A whole-file run (and the planner) takes
    the source's own name, which no chunk takes: a planned source refuses whole-file runs
    in its registration instead (journal_loader/runner/chunks.py)."""
    return f"{source_lock_name(source_type, file_hash)}#chunk{chunk}"


# Chunk leases live in ``source_leases`` beside the sources' own, under a key no source has:
# source ids are positive, a chunk's key is negative and unique per (source, chunk) for up
# to 2**20 chunks. A table of its own would need a migration for one more integer column;
# the row's meaning (the generation of the run that owns it, a heartbeat) is the same.
# tests/test_chunks.py::test_a_stale_chunk_run_is_fenced_out pins that a chunk's generation
# is its own: taking chunk 1 over never fences chunk 0's run.
MAX_CHUNKS = 1 << 20


def chunk_lease_key(source_id: int, chunk: int) -> int:
    """The ``source_leases`` key of one chunk of a source (negative: never a source id)."""
    if not 0 <= chunk < MAX_CHUNKS:
        raise ValueError(f"chunk {chunk} out of range")
    return -(source_id * MAX_CHUNKS + chunk + 1)


class ChunkMark(NamedTuple):
    """The last event of one type of one chunk's runs (``chunk_marks``)."""

    chunk: int
    event_type: str
    position: int


class SourceRow(NamedTuple):
    source_id: int
    status: str
    current_run_id: str | None
    last_position: int


class LoadMark(NamedTuple):
    """The last checkpoint of a source's current load (``BatchCommitted``), or the load's
    start (``LoadStarted``) when it has none yet."""

    position: int
    event_type: str
    payload: str


class Attempt(NamedTuple):
    """A ``ProposeAttempted`` event: an offset proposed to a remote target."""

    record_offset: int
    payload: str


class JournalEntry(NamedTuple):
    """One journal row, its values as Python types on every backend."""

    position: int
    source_id: int
    record_offset: int | None
    event_type: str
    schema_version: int
    payload: str
    run_id: str
    recorded_at: dt.datetime  # UTC, aware
    prev_hash: bytes | None
    hash: bytes

    @classmethod
    def from_row(cls, row: Any) -> JournalEntry:
        recorded_at = row[7]
        if isinstance(recorded_at, str):  # SQLite via the driver
            recorded_at = dt.datetime.fromisoformat(recorded_at).replace(tzinfo=dt.UTC)
        elif recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=dt.UTC)
        return cls(
            int(row[0]),
            int(row[1]),
            None if row[2] is None else int(row[2]),
            row[3],
            int(row[4]),
            row[5],
            row[6],
            recorded_at,
            None if row[8] is None else bytes(row[8]),
            bytes(row[9]),
        )


class AbandonCandidate(NamedTuple):
    source_type: str
    file_hash: str
    file_name: str
    status: str
    last_position: int


class JournalStore:
    """The portable statements (SQLite's); a backend overrides what it does differently."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.sql = load_queries(_SQL, self.dialect)

    # --- sources ---------------------------------------------------------------------------
    def source_by_identity(self, tx: Tx, source_type: str, file_hash: str) -> SourceRow | None:
        row = tx.fetchone(
            self.sql["source_by_identity"], {"source_type": source_type, "file_hash": file_hash}
        )
        return None if row is None else SourceRow(int(row[0]), row[1], row[2], int(row[3]))

    def source_for_run(self, tx: Tx, source_type: str, file_hash: str) -> SourceRow | None:
        """The source a run is about to register or resume, once no batch of an earlier run
        can still move it. (SQLite has one writer at a time: a stale read fails its write.)"""
        return self.source_by_identity(tx, source_type, file_hash)

    def next_source_id(self, tx: Tx) -> int:
        return int(tx.fetchone(self.sql["next_source_id"])[0])

    def source_for_abandon(self, tx: Tx, source_id: int) -> AbandonCandidate | None:
        row = tx.fetchone(self.sql["source_for_abandon"], {"source_id": source_id})
        if row is None:
            return None
        return AbandonCandidate(row[0], row[1], row[2], row[3], int(row[4]))

    def partial_predecessors(
        self, tx: Tx, *, source_type: str, file_name: str, file_hash: str, source_id: int
    ) -> list[int]:
        """Sources of this type and file name with other content whose load did not finish."""
        rows = tx.fetchall(
            self.sql["partial_predecessors"],
            {
                "source_type": source_type,
                "file_name": file_name,
                "file_hash": file_hash,
                "source_id": source_id,
            },
        )
        return [int(r[0]) for r in rows]

    # --- leases (the fencing token) ---------------------------------------------------------
    def acquire_lease(
        self, tx: Tx, source_id: int, run_id: str, hostname: str, pid: int, now: dt.datetime
    ) -> int:
        """Bump the source's lease generation; returns the new one (the caller's token)."""
        row = tx.fetchone(
            self.sql["acquire_lease"],
            {
                "source_id": source_id,
                "run_id": run_id,
                "hostname": hostname[:255],
                "pid": pid,
                "now": tx.timestamp(now),
            },
        )
        return int(row[0])

    def check_lease(self, tx: Tx, source_id: int, generation: int, now: dt.datetime) -> bool:
        """Still this generation's? (And a heartbeat.) The row stays locked to COMMIT."""
        updated = tx.run(
            self.sql["check_lease"],
            {"source_id": source_id, "generation": generation, "now": tx.timestamp(now)},
        )
        return updated == 1

    # --- the journal ------------------------------------------------------------------------
    def load_mark(self, tx: Tx, source_id: int) -> LoadMark | None:
        row = tx.fetchone(self.sql["checkpoint"], {"source_id": source_id})
        return None if row is None else LoadMark(int(row[0]), row[1], row[2])

    def plan_mark(self, tx: Tx, source_id: int) -> LoadMark | None:
        """The source's last ``ChunksPlanned`` or ``LoadStarted``: a plan of the current load
        when the former."""
        row = tx.fetchone(self.sql["plan_mark"], {"source_id": source_id})
        return None if row is None else LoadMark(int(row[0]), row[1], row[2])

    def chunk_marks(self, tx: Tx, source_id: int, after: int) -> list[ChunkMark]:
        """Per chunk, the position of its last RunStarted, RunFinished and BatchCommitted
        after ``after`` (the plan)."""
        rows = tx.fetchall(self.sql["chunk_marks"], {"source_id": source_id, "after": after})
        return [ChunkMark(int(c), t, int(p)) for c, t, p in rows if c is not None]

    def payloads_at(self, tx: Tx, positions: list[int]) -> dict[int, tuple[str, str]]:
        """position -> (payload, run_id)."""
        out: dict[int, tuple[str, str]] = {}
        for position in positions:
            row = tx.fetchone(self.sql["payload_at"], {"position": position})
            if row is not None:
                out[position] = (row[0], row[1])
        return out

    def wait_for_lease(self, tx: Tx, lease_key: int) -> None:
        """Wait for a batch still holding this lease row (a run that lost its lock) to end.
        SQLite has one writer at a time: nothing to wait for."""

    def attempts_after(self, tx: Tx, source_id: int, after: int) -> list[Attempt]:
        """The source's ``ProposeAttempted`` events after position ``after``."""
        rows = tx.fetchall(self.sql["in_doubt"], {"source_id": source_id, "after": after})
        return [Attempt(int(offset), payload) for offset, payload in rows]

    def chain_head(self, tx: Tx, source_id: int) -> bytes | None:
        """The hash of the source's last event (None: no such source)."""
        row = tx.fetchone(self.sql["chain_head"], {"source_id": source_id})
        return None if row is None else bytes(row[0])

    def event_at(self, tx: Tx, position: int) -> JournalEntry | None:
        row = tx.fetchone(self.sql["event_at"], {"position": position})
        return None if row is None else JournalEntry.from_row(row)

    def run_started_payload(self, tx: Tx, source_id: int, run_id: str) -> str | None:
        row = tx.fetchone(
            self.sql["run_started_payload"], {"source_id": source_id, "run_id": run_id}
        )
        return None if row is None else str(row[0])

    def parsed_payload_in_run(
        self, tx: Tx, source_id: int, run_id: str, record_offset: int
    ) -> str | None:
        row = tx.fetchone(
            self.sql["parsed_payload_in_run"],
            {"source_id": source_id, "run_id": run_id, "record_offset": record_offset},
        )
        return None if row is None else str(row[0])

    def record_events(self, tx: Tx, source_id: int, record_offset: int) -> list[JournalEntry]:
        rows = tx.fetchall(
            self.sql["record_events"], {"source_id": source_id, "record_offset": record_offset}
        )
        return [JournalEntry.from_row(r) for r in rows]

    # --- readers that move a cursor along the journal -----------------------------------------
    def high_water(self, tx: Tx) -> int:
        """The highest position such that every position at or below it is committed or will
        never exist (0: none yet). A reader that stops here never later sees a new event below
        a position it has passed; one that read past it could (on PostgreSQL positions do not
        follow commit order: storage/postgres.py, ``PostgresTx.reserve_positions``).

        It reads live state: run the reads it bounds after it, in statements of their own
        (READ COMMITTED, as ``store.transaction()`` and ``store.read_tx()`` are), never in a
        snapshot taken before it."""
        return int(tx.fetchone(self.sql["last_reserved"])[0])

    def events_after(self, tx: Tx, after: int, *, limit: int = 1000) -> list[JournalEntry]:
        """Up to ``limit`` events after position ``after``, in position order, none past the
        high water: a consumer that moves its cursor to the last one it got (tailing the
        journal, a projection catching up) sees every event exactly once."""
        upto = self.high_water(tx)
        if upto <= after:
            return []
        rows = tx.fetchall(self.sql["events_after"], {"after": after, "upto": upto, "limit": limit})
        return [JournalEntry.from_row(r) for r in rows]


class PostgresJournalStore(JournalStore):
    dialect = "postgresql"

    def source_for_run(self, tx: Tx, source_type: str, file_hash: str) -> SourceRow | None:
        """A run that lost its lock may still be inside a batch transaction (a stopped or
        cut-off process): wait for it to end before reading where the source stands, or the
        new run would resume from a checkpoint that batch then moves. The batch holds the
        lease row from its check_lease to its end."""
        row = self.source_by_identity(tx, source_type, file_hash)
        if row is None:
            return None
        tx.fetchone(self.sql["wait_for_lease"], {"source_id": row.source_id})
        return self.source_by_identity(tx, source_type, file_hash)

    def wait_for_lease(self, tx: Tx, lease_key: int) -> None:
        tx.fetchone(self.sql["wait_for_lease"], {"source_id": lease_key})

    def high_water(self, tx: Tx) -> int:
        """The last position reserved, read first, then lowered below the first position of
        any batch still in flight, read second, from the batches' in-flight marks in pg_locks.
        Why in this order: storage/postgres.py, ``PostgresTx.reserve_positions``."""
        from journal_loader.storage.postgres import MARK_POSITION_BITS, PostgresStore

        store = tx.store
        assert isinstance(store, PostgresStore)
        reserved = int(tx.fetchone(self.sql["last_reserved"])[0])
        base = store.journal_mark_base
        row = tx.fetchone(
            self.sql["in_flight_low"],
            {"mark_base": base, "mark_prefix": base >> MARK_POSITION_BITS},
        )
        if row is None or row[0] is None:
            return reserved
        return min(reserved, int(row[0]) - 1)


_BACKENDS: dict[str, type[JournalStore]] = {
    "sqlite": JournalStore,
    "postgresql": PostgresJournalStore,
}


@cache
def _for_dialect(dialect: str) -> JournalStore:
    return _BACKENDS[dialect]()


def journal_store(store: Store) -> JournalStore:
    """The journal repository for this store's backend (one shared instance per backend)."""
    return _for_dialect(store.dialect)


__all__ = [
    "MAX_CHUNKS",
    "AbandonCandidate",
    "Attempt",
    "ChunkMark",
    "JournalEntry",
    "JournalStore",
    "LoadMark",
    "PostgresJournalStore",
    "SourceRow",
    "chunk_lease_key",
    "chunk_lock_name",
    "journal_store",
    "source_lock_name",
]
