"""The operators' reads: status, the dead-letter queue, its summary, metrics, a worker's runs.

``journal_loader.dlq``, ``failures``, ``ops`` and the CLI's ``status``/``history`` decide what
to show; the statements are here and return plain values (dicts of a row's columns, tuples,
ints). Fixed statements are named SQL in ``queries/ops.sql``; the DLQ's listings, whose
filters combine freely, are built with SQLAlchemy Core over the declared schema (one
statement per combination of filters, each with its own plan, and rows typed like the
table's: times as datetimes on SQLite too).

Nothing here differs between the backends; the worker queue, PostgreSQL's only, is
``queue_store.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import select, text

from journal_loader.storage.base import Store, Tx
from journal_loader.storage.schema import failed_records, journal, sources
from journal_loader.storage.sql import load_queries

_QUERIES = Path(__file__).with_name("queries") / "ops.sql"
FAILURE_ROWS = 5_000  # rows per fetch when the DLQ is summarised (constant memory)


class FailureEntry(NamedTuple):
    """A DLQ entry as the summary groups it (``failures.group``)."""

    entry_id: int
    source_id: int
    record_offset: int
    line_number: int
    stage: str
    error_type: str
    error_message: str
    first_failed_at: Any  # a datetime (SQLite: naive UTC)
    last_failed_at: Any
    last_run_id: str
    first_run_id: str | None  # the run of the entry's first failure (its journal position)


class RetrySource(NamedTuple):
    """What a DLQ retry needs to know of its source, read in one snapshot."""

    source: dict[str, Any]  # the sources row
    load_started: int  # the position of the current load's LoadStarted
    run_started: str  # the payload of the source's last RunStarted


class OpsStore:
    """The operators' reads of one store (the same statements on every backend)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.q = load_queries(_QUERIES, store.dialect)

    # --- status --------------------------------------------------------------------------------
    def source_status(self) -> list[dict[str, Any]]:
        """The ``loader_status`` view's rows, with each source's ``file_hash``, by source id."""
        with self.store.read() as conn:
            result = conn.execute(text(self.q["source_status"])).mappings()
            return [dict(r) for r in result]

    def source_row(self, source_id: int, tx: Tx | None = None) -> dict[str, Any] | None:
        """The ``sources`` row of a source (in ``tx`` when given), None when there is none."""
        query = select(sources).where(sources.c.source_id == source_id)
        if tx is not None:
            row = tx.conn.execute(query).mappings().first()
        else:
            with self.store.read() as conn:
                row = conn.execute(query).mappings().first()
        return None if row is None else dict(row)

    def dlq_depth(self, source_type: str) -> int:
        """The DLQ entries of the sources of one type."""
        with self.store.read() as conn:
            row = conn.execute(text(self.q["dlq_depth"]), {"source_type": source_type}).first()
        return int(row[0]) if row is not None else 0

    def run_finished_events(self, source_id: int) -> list[tuple[str, str]]:
        """(run_id, payload) of every RunFinished of a source."""
        with self.store.read() as conn:
            rows = conn.execute(text(self.q["run_finished"]), {"source_id": source_id}).all()
        return [(str(r[0]), str(r[1])) for r in rows]

    # --- the dead-letter queue -----------------------------------------------------------------
    def dlq_entries(
        self,
        *,
        source_id: int | None = None,
        stage: str | None = None,
        error_type: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The DLQ's entries for ``dlq list``, by source and offset, with their source's type and
        file name."""
        f = failed_records
        query = (
            select(
                f.c.id,
                f.c.source_id,
                sources.c.source_type,
                sources.c.file_name,
                f.c.record_offset,
                f.c.line_number,
                f.c.stage,
                f.c.error_type,
                f.c.error_message,
                f.c.attempts,
                f.c.first_failed_at,
                f.c.last_failed_at,
            )
            .join(sources, sources.c.source_id == f.c.source_id)
            .order_by(f.c.source_id, f.c.record_offset)
        )
        if source_id is not None:
            query = query.where(f.c.source_id == source_id)
        if stage is not None:
            query = query.where(f.c.stage == stage)
        if error_type is not None:
            query = query.where(f.c.error_type == error_type)
        if limit is not None:
            query = query.limit(limit)
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def dlq_entry(self, entry_id: int) -> dict[str, Any] | None:
        """One entry (every column) with its source's type, file name and hash, and version."""
        with self.store.read() as conn:
            row = (
                conn.execute(
                    select(
                        failed_records,
                        sources.c.source_type,
                        sources.c.file_name,
                        sources.c.file_hash,
                        sources.c.source_version,
                    )
                    .join(sources, sources.c.source_id == failed_records.c.source_id)
                    .where(failed_records.c.id == entry_id)
                )
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def dlq_entries_to_retry(
        self, *, entry_ids: Sequence[int] = (), source_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Whole entries (all, a source's, or these ids), by source and offset."""
        f = failed_records
        query = select(f).order_by(f.c.source_id, f.c.record_offset)
        if entry_ids:
            query = query.where(f.c.id.in_(list(entry_ids)))
        if source_id is not None:
            query = query.where(f.c.source_id == source_id)
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def retry_source(self, source_id: int) -> RetrySource:
        """The source of a DLQ retry, where its current load started and how its last run read
        the file. Raises when the source or either event is missing (a DLQ entry's source has
        both)."""
        q = text(self.q["last_source_event"])
        with self.store.read() as conn:
            src = (
                conn.execute(select(sources).where(sources.c.source_id == source_id))
                .mappings()
                .one()
            )
            load = conn.execute(q, {"source_id": source_id, "event_type": "LoadStarted"}).one()
            run = conn.execute(q, {"source_id": source_id, "event_type": "RunStarted"}).one()
        return RetrySource(dict(src), int(load[0]), str(run[1]))

    def run_outcomes(self, source_id: int, run_id: str, after: int) -> list[tuple[int, str, str]]:
        """(record_offset, event_type, payload) of the outcomes a run journaled for a source,
        after position ``after`` (at most the source's last position before the run)."""
        with self.store.read() as conn:
            rows = conn.execute(
                text(self.q["run_outcomes"]),
                {"source_id": source_id, "run_id": run_id, "after": after},
            ).all()
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    def failure_rows(
        self, *, source_id: int | None = None, run_id: str | None = None
    ) -> Iterator[FailureEntry]:
        """The DLQ's entries (a source's; those whose latest failure is a run's), in source and
        offset order, streamed, each with the run of its first failure."""
        f = failed_records
        query = (
            select(
                f.c.id,
                f.c.source_id,
                f.c.record_offset,
                f.c.line_number,
                f.c.stage,
                f.c.error_type,
                f.c.error_message,
                f.c.first_failed_at,
                f.c.last_failed_at,
                f.c.run_id,
                journal.c.run_id,
            )
            .outerjoin(journal, journal.c.position == f.c.id)
            .order_by(f.c.source_id, f.c.record_offset)
        )
        if source_id is not None:
            query = query.where(f.c.source_id == source_id)
        if run_id is not None:
            query = query.where(f.c.run_id == run_id)
        with self.store.read() as conn:
            for row in conn.execute(query.execution_options(yield_per=FAILURE_ROWS)):
                yield FailureEntry._make(row)


def ops_store(store: Store) -> OpsStore:
    return OpsStore(store)


__all__ = ["FailureEntry", "OpsStore", "RetrySource", "ops_store"]
