"""The job queue of the worker fleet: procrastinate's tables, submitting jobs, and what is
queued (``journal_loader/ops/fleet.py`` explains the fleet; its workers run the jobs).

* ``db upgrade`` installs procrastinate's schema in the journal's own schema and notes which
  version did (``install_queue``); ``submit`` and ``worker`` install it on first use.
* ``submit`` queues one job per file, by version label then name, with procrastinate's
  ``lock`` = the source type (one file of a registry at a time, in order) and a
  ``queueing_lock`` on the source's identity (no second copy of a file still waiting).
* ``queue_jobs`` lists the load jobs for ``status``.

The queue's tables are read through ``storage/queue_store.py``; everything else goes through
procrastinate's public API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import procrastinate

from journal_loader.errors import UsageError
from journal_loader.storage.queue_store import QueueStore, queue_store

if TYPE_CHECKING:
    from procrastinate.job_context import JobContext

    from journal_loader.storage import Store

TASK = "journal_loader.load"
QUEUE = "journal_loader"
LOCK_PREFIX = "journal-loader:"


class JobRunner(Protocol):
    """What runs a worker's load jobs (``fleet.WorkerState``), handed to procrastinate as the
    worker's additional context."""

    def run_job(self, context: JobContext, **kwargs: Any) -> dict[str, Any]: ...


# --- the queue's schema -------------------------------------------------------------------
def require_postgres(url: str) -> None:
    if not url.split(":", 1)[0].lower().startswith("postgres"):
        raise UsageError(
            "the job queue lives in PostgreSQL (procrastinate); this database is not: for "
            "SQLite or development use `journal-loader jobs run DIR --workers N`"
        )


def conninfo(url: str) -> str:
    """libpq's form of a SQLAlchemy URL (search_path and other options kept)."""
    from sqlalchemy import make_url

    sa_url = make_url(url)
    return sa_url.set(drivername="postgresql").render_as_string(hide_password=False)


def _queue(store: Store) -> QueueStore:
    require_postgres(store.url)
    queue = queue_store(store)
    assert queue is not None, "a PostgreSQL store can hold the queue"
    return queue


def queue_installed(store: Store) -> bool:
    return _queue(store).installed()


def install_queue(store: Store) -> str:
    """Install procrastinate's schema in the store's schema, once (idempotent, under the
    migration lock so two upgrades at once do not both install it). Returns what it did."""
    from procrastinate.schema import SchemaManager

    queue = _queue(store)
    version = _procrastinate_version()
    with store.migration_lock():
        installed = queue.installed_version()
        if installed is not None:
            if installed != version:
                return (
                    f"job queue present (installed with procrastinate {installed}, this is "
                    f"{version}: apply procrastinate's migrations between them, see "
                    "`procrastinate schema --migrations-path`)"
                )
            return f"job queue present (procrastinate {version})"
        connector = procrastinate.SyncPsycopgConnector(conninfo=conninfo(store.url))
        with procrastinate.App(connector=connector).open():
            SchemaManager(connector).apply_schema()
        queue.mark_installed(version)
        return f"job queue installed (procrastinate {version})"


def _procrastinate_version() -> str:
    from importlib.metadata import version

    return version("procrastinate")


def ensure_queue(store: Store) -> None:
    """The queue's tables exist (installed on first use, like the migrations)."""
    if not queue_installed(store):
        install_queue(store)


def make_app(url: str, *, pool_size: int = 4, retry: Any = None) -> procrastinate.App:
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(url),
        min_size=1,
        max_size=pool_size,
        kwargs={"application_name": "journal-loader worker"},
    )
    app = procrastinate.App(connector=connector)
    app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retry or False)(_load_task)
    return app


def _load_task(context: JobContext, /, **kwargs: Any) -> dict[str, Any]:
    runner: JobRunner = context.additional_context["journal_loader"]
    return runner.run_job(context, **kwargs)


# --- submit ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Submitted:
    file: str
    source_type: str
    version: str
    sha256: str
    job_id: int | None
    outcome: str  # 'queued' | 'already queued' | 'completed' (a chunk already loaded)
    chunk: int | None = None  # a chunk's job (submit --split)
    note: str = ""  # why a file asked to be split was not (gzip, ...)


def expand(paths: Sequence[str]) -> list[Path]:
    """FILE... or DIR: the files named, and the regular, non-hidden files of a folder."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
            if not found:
                raise UsageError(f"{path}: no files in this folder")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return out


def submit(
    config_path: str,
    paths: Sequence[str],
    url: str,
    *,
    split: int | None = None,
    chunk_records: int | None = None,
) -> list[Submitted]:
    """Queue one job per file, by version label then name within the batch. With ``split``
    or ``chunk_records``: plan each file's chunks (journal_loader/runner/chunks.py; a file
    planned before keeps its plan) and queue one job per chunk not completed."""
    from procrastinate import exceptions as pexc

    from journal_loader.api import run_options
    from journal_loader.config import load_config
    from journal_loader.factory import loader_from_config
    from journal_loader.sources.identity import open_source
    from journal_loader.storage import open_store

    require_postgres(url)
    config = str(Path(config_path).resolve())
    cfg = load_config(config)
    loader = loader_from_config(cfg)
    source_type = run_options(cfg, loader).source_type or loader.source_type_name
    frequency = cfg.source.update_frequency
    files = []
    for path in expand(paths):
        src = open_source(path, update_frequency=frequency)
        try:
            files.append((src.version_label, src.sha256, path.resolve()))
        finally:
            src.close()
    # A hash label says nothing about order: then the names do.
    files.sort(key=lambda f: ((f[0] if frequency != "hash" else ""), f[2].name))
    store = open_store(url)
    try:
        ensure_queue(store)
    finally:
        store.dispose()
    app = make_app(url, pool_size=1)
    out: list[Submitted] = []
    with app.open():
        for version, sha256, path in files:
            if split or chunk_records:
                note = _submit_chunks(
                    app, cfg, loader, config, path, url, (split, chunk_records), out, version
                )
                if not note:
                    continue
            else:
                note = ""
            task = app.configure_task(
                TASK,
                lock=f"{LOCK_PREFIX}{source_type}",
                queueing_lock=f"{LOCK_PREFIX}{source_type}:{sha256}",
            )
            job_id: int | None
            try:
                job_id = task.defer(
                    config=config,
                    file=str(path),
                    source_type=source_type,
                    sha256=sha256,
                    version=version,
                )
                outcome = "queued"
            except pexc.AlreadyEnqueued:
                waiting = app.job_manager.list_jobs(
                    queueing_lock=f"{LOCK_PREFIX}{source_type}:{sha256}", status="todo"
                )
                job_id = next((j.id for j in waiting), None)
                outcome = "already queued"
            out.append(
                Submitted(str(path), source_type, version, sha256, job_id, outcome, note=note)
            )
    return out


def _submit_chunks(
    app: Any,
    cfg: Any,
    loader: Any,
    config: str,
    path: Path,
    url: str,
    sizes: tuple[int | None, int | None],
    out: list[Submitted],
    version: str,
) -> str:
    """Plan a file and queue a job per chunk not completed; returns why the file was not
    split ("" when it was). Chunk jobs carry a procrastinate lock of their own chunk, not
    the source type's: the chunks of one file run side by side (the registry's one-file-at-
    a-time order does not hold between a split file's chunks and other files of its type).
    A chunk's job already waiting is not queued twice (its queueing lock); a chunk that is
    running gets a second job only if submitted again, and that job waits for the chunk's
    lock and then finds it completed (tests/test_chunks.py)."""
    from procrastinate import exceptions as pexc

    from journal_loader.api import run_options
    from journal_loader.runner.chunks import plan_file
    from journal_loader.storage import open_store

    options = run_options(cfg, loader)
    source_type = options.source_type or loader.source_type_name
    store = open_store(url)
    try:
        result = plan_file(
            store,
            str(path),
            options,
            source_type,
            loader.name,
            split=sizes[0],
            chunk_records=sizes[1],
        )
    finally:
        store.dispose()
    if result.plan is None or result.states is None:
        return result.not_split or "not split"
    sha256 = result.sha256
    for state in result.states:
        lock = f"{LOCK_PREFIX}{source_type}:{sha256}#chunk{state.chunk}"
        if state.state == "completed":
            out.append(
                Submitted(str(path), source_type, version, sha256, None, "completed", state.chunk)
            )
            continue
        task = app.configure_task(TASK, lock=lock, queueing_lock=lock)
        job_id: int | None
        try:
            job_id = task.defer(
                config=config,
                file=str(path),
                source_type=source_type,
                sha256=sha256,
                version=version,
                chunk=state.chunk,
            )
            outcome = "queued"
        except pexc.AlreadyEnqueued:
            waiting = app.job_manager.list_jobs(queueing_lock=lock, status="todo")
            job_id = next((j.id for j in waiting), None)
            outcome = "already queued"
        out.append(Submitted(str(path), source_type, version, sha256, job_id, outcome, state.chunk))
    return ""


# --- status -------------------------------------------------------------------------------------
def queue_jobs(
    store: Store, statuses: Iterable[str] = ("todo", "doing", "failed")
) -> list[dict[str, Any]]:
    """The load jobs in these states, oldest first (empty when there is no queue)."""
    queue = queue_store(store)
    if queue is None or not queue.installed():
        return []
    out = []
    for r in queue.jobs(TASK, statuses):
        args = r["args"] or {}
        out.append(
            {
                "job_id": r["id"],
                "status": r["status"],
                "attempts": r["attempts"],
                "worker_id": r["worker_id"],
                "scheduled_at": r["scheduled_at"],
                "changed_at": r["changed_at"],
                "source_type": args.get("source_type"),
                "sha256": args.get("sha256"),
                "version": args.get("version"),
                "file": args.get("file"),
            }
        )
    return out


def retry_note(scheduled_at: dt.datetime | None) -> str:
    """ "retry in Ns" for a job waiting for its retry ("" when it is due)."""
    if scheduled_at is None:
        return ""
    seconds = (scheduled_at - dt.datetime.now(dt.UTC)).total_seconds()
    return f"retry in {int(seconds)}s" if seconds > 0 else ""
