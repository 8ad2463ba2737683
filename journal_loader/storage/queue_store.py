"""The worker queue's tables: procrastinate's, in the journal's own PostgreSQL schema.

``journal_loader.ops.fleet`` drives procrastinate through its public API; the few reads it
(and ``status``) make of the queue's tables directly, and the note ``db upgrade`` leaves on
them, are here (``queries/queue.postgresql.sql``). The queue exists on PostgreSQL only:
``supports_job_queue`` says whether a store can have one, and a store that cannot has no
queue (``queue_store`` is None).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from journal_loader.storage.base import Store
from journal_loader.storage.sql import load_queries

_QUERIES = Path(__file__).with_name("queries") / "queue.sql"
_VERSION = re.compile(r"[0-9A-Za-z.+-]+")
_NOTE_PREFIX = "procrastinate "


def supports_job_queue(store: Store) -> bool:
    """Can this store hold the worker queue? (procrastinate needs PostgreSQL.)"""
    return store.is_server


class QueueStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.q = load_queries(_QUERIES, store.dialect)

    def installed(self) -> bool:
        """Are the queue's tables in the store's schema?"""
        with self.store.read() as conn:
            return conn.execute(text(self.q["queue_installed"])).first() is not None

    def installed_version(self) -> str | None:
        """The procrastinate version that installed the queue, as ``mark_installed`` noted
        it ("unknown" without a note); None when the queue is not installed."""
        if not self.installed():
            return None
        with self.store.read() as conn:
            note = conn.execute(text(self.q["queue_note"])).scalar()
        return str(note or "").rpartition(" ")[2] or "unknown"

    def mark_installed(self, version: str) -> None:
        """Note which procrastinate installed the queue's schema: procrastinate keeps no
        version in the database, and a later upgrade must tell that migrations are due.
        (COMMENT takes no parameters: a version that is not one is not written.)"""
        if not _VERSION.fullmatch(version):
            return
        with self.store.transaction() as tx:
            tx.execute(f"COMMENT ON TABLE procrastinate_jobs IS '{_NOTE_PREFIX}{version}'")

    def jobs(self, task: str, statuses: Iterable[str]) -> list[dict[str, Any]]:
        """A task's jobs in these states, oldest first: id, status, attempts, worker_id,
        scheduled_at, args (the job's keyword arguments), changed_at."""
        with self.store.read() as conn:
            rows = conn.execute(
                text(self.q["queue_jobs"]), {"task": task, "statuses": list(statuses)}
            ).mappings()
            return [dict(r) for r in rows]


def queue_store(store: Store) -> QueueStore | None:
    """The store's worker queue tables, None on a backend that cannot hold them."""
    return QueueStore(store) if supports_job_queue(store) else None


__all__ = ["QueueStore", "queue_store", "supports_job_queue"]
