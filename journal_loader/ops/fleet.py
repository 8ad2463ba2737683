"""A fleet of workers on one PostgreSQL: procrastinate jobs, one per source file.

procrastinate (https://procrastinate.readthedocs.io, public API only) keeps its queue in
tables of the journal's own database and schema: no broker, no other server. ``db upgrade``
installs them (``install_queue``). The queue's side (installing it, ``submit``, listing jobs)
is ``ops/job_queue.py``; this module is the workers' side, and names both.

* ``submit`` queues one job per file. A job carries the config's path and the file's path
  (plus the source type, hash and version label it had when queued, for ``status``), never
  a database URL or a password: the worker runs it against its own database, which is the
  queue's.
* Version order: every job of a source type carries procrastinate's ``lock`` = the source
  type, so the files of one registry run one at a time, in the order they were queued
  (``submit`` queues them by version label, then name); files of different registries run
  in parallel. procrastinate keeps that order across retries too (a job waiting for its
  retry still blocks the later jobs of its lock). A ``queueing_lock`` on the source's
  identity (type and hash) refuses a second copy of a file that is still waiting.
* A job is one ``journal_loader.api.run`` of its file, in a thread of the worker
  (``WorkerState.run_job``): every guarantee (the source lock, the lease, resume, exactly
  one terminal outcome per record) is the runner's. Its run id is derived from the job's id
  and attempt (``job_run_id``), so the journal says which delivery made which run.

How a job ends (``LoadRetry`` decides the retries):

====================================  ===============================================
the run                                the job
====================================  ===============================================
completed, partial, already processed  succeeded
source locked by a run outside the     waits in the job (polls the lock) and then runs:
queue (exit 75)                        no retry is spent, and the job keeps its place
failed (exit 1)                        retried with backoff while this job's failed
                                       runs (RunFinished failed, in the journal) are
                                       fewer than ``max_failures``; then failed
stopped by the worker's SIGTERM        retried at once, not counted (resumes)
config error (exit 2)                  failed, not retried
the worker was killed                  the reaper retries it (below)
====================================  ===============================================

Reaper: every worker looks for jobs left ``doing`` by a worker whose heartbeat is older than
``stalled_timeout`` (procrastinate's ``get_stalled_jobs``) and retries them
(``retry_job``); the rerun resumes from the last checkpoint like any rerun.

A stale worker (stopped, not dead, for longer than the timeout) may wake up after its job
was delivered again. The runner's lease fencing keeps its batches out of the journal. Its
queue row is guarded here: a job that ends checks it is still this worker's, and a worker
that finds one of its jobs taken over exits at once, without touching the row (procrastinate
would otherwise mark the job done under the worker that now runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from procrastinate.retry import BaseRetryStrategy, RetryDecision

from journal_loader.errors import ConfigError, JournalLoaderError, SourceLockedError
from journal_loader.ops.job_queue import (
    LOCK_PREFIX,
    QUEUE,
    TASK,
    Submitted,
    conninfo,
    ensure_queue,
    expand,
    install_queue,
    make_app,
    queue_installed,
    queue_jobs,
    require_postgres,
    retry_note,
    submit,
)

if TYPE_CHECKING:
    from procrastinate.job_context import JobContext
    from procrastinate.jobs import Job

    from journal_loader.journal.events import Statistics
    from journal_loader.runner.observers import Observer, RunInfo
    from journal_loader.runner.options import RunReport
    from journal_loader.sources.readers import ResumePoint

log = logging.getLogger("journal_loader.fleet")

# A worker that finds a job of its own delivered to another worker exits with this code.
STALE_EXIT = 3
_RUN_NS = uuid.UUID("9f0b8a52-4c47-4b58-9a4b-1d1f6c2f6a11")


class WorkerStopping(Exception):
    """The worker is shutting down: the run stopped after a committed batch; retry at once."""


class RunFailed(Exception):
    """The run ended failed (exit 1); ``failures`` counts this job's failed runs so far."""

    def __init__(self, message: str, failures: int) -> None:
        super().__init__(message)
        self.failures = failures


# --- the job ----------------------------------------------------------------------------------
def job_run_id(job_id: int, attempt: int, sha256: str) -> str:
    return str(uuid.uuid5(_RUN_NS, f"{job_id}/{attempt}/{sha256}"))


class LoadRetry(BaseRetryStrategy):
    """procrastinate's retry decision for load jobs (the module docstring's table)."""

    def __init__(self, max_failures: int, delay: float, max_attempts: int) -> None:
        self.max_failures = max_failures
        self.delay = delay
        self.max_attempts = max_attempts

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if job.attempts + 1 >= self.max_attempts:
            return None  # a safety net over everything: kills, stops and failures
        if isinstance(exception, WorkerStopping):
            return RetryDecision(retry_in={"seconds": 0})
        if isinstance(exception, ConfigError):
            return None  # the config will not fix itself
        # A run that failed before it could journal (no source, database away): every
        # attempt counts.
        failures = exception.failures if isinstance(exception, RunFailed) else job.attempts + 1
        if failures >= self.max_failures:
            return None
        wait = min(3600.0, self.delay * 2 ** max(0, failures - 1))
        return RetryDecision(retry_in={"seconds": round(wait)})


@dataclass(slots=True)
class WorkerState:
    """What a worker's jobs share: the database, the stop flag, metrics, the settings."""

    db: str
    name: str
    app: Any = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock_poll: float = 2.0
    metrics: Any = None

    def run_job(
        self,
        context: JobContext,
        *,
        config: str,
        file: str,
        sha256: str = "",
        source_type: str = "",
        version: str = "",
        chunk: int | None = None,
    ) -> dict[str, Any]:
        from journal_loader.api import run
        from journal_loader.runner import FAILED, STOP_REQUESTED

        job = context.job
        assert job.id is not None
        self._count("started")
        if self.stop.is_set():
            self._count("stopped")
            raise WorkerStopping("the worker is shutting down; the job is queued again")
        run_id = job_run_id(job.id, job.attempts, sha256)
        waiting_since: float | None = None
        observers: list[Observer] = (
            [ChunkProgress(self.metrics, chunk)]
            if self.metrics is not None and chunk is not None
            else []
        )
        while True:
            try:
                report = run(
                    config=config,
                    file=file,
                    db=self.db,
                    stop=self.stop.is_set,
                    run_id=run_id,
                    chunk=chunk,
                    observers=observers,
                )
                break
            except SourceLockedError as e:
                # Held by a run outside this queue (or a stale worker): wait for it, keeping
                # the job's place in its lock and its retry budget.
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log.info("job %s: %s; waiting for it", job.id, e)
                    self._count("waited")
                if self.stop.wait(self.lock_poll):
                    self._count("stopped")
                    raise WorkerStopping("the worker is shutting down while waiting") from e
            except ConfigError:
                self._count("failed")
                raise
            except JournalLoaderError:
                self._still_ours(job)
                self._count("failed")
                raise
        self._still_ours(job)
        summary = {
            "status": str(report.status),  # plain text in the job's result and its log line
            "source_id": report.source_id,
            "chunk": chunk,
            "run_id": report.run_id,
            "processed": report.statistics.total_processed,
            "failed": report.statistics.failed,
            "message": report.message,
        }
        if report.status != FAILED:
            self._count("succeeded")
            return summary
        if report.message == STOP_REQUESTED:
            self._count("stopped")
            raise WorkerStopping(f"job {job.id}: {STOP_REQUESTED}")
        failures = self._failed_runs(report.source_id, job, sha256)
        self._count("failed")
        raise RunFailed(f"run {report.run_id} failed: {report.message}", failures)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.job(outcome)

    def _failed_runs(self, source_id: int | None, job: Job, sha256: str) -> int:
        """This job's failed runs, from the journal: RunFinished 'failed' of the runs it
        made (the run ids of its attempts), stops by a worker's shutdown left out."""
        from journal_loader.journal.events import RunFinished, decode
        from journal_loader.runner import FAILED, STOP_REQUESTED
        from journal_loader.storage import open_store
        from journal_loader.storage.ops_store import ops_store

        assert job.id is not None
        if source_id is None:
            return job.attempts + 1
        runs = {job_run_id(job.id, a, sha256) for a in range(job.attempts + 1)}
        store = open_store(self.db, upgrade=False)
        try:
            rows = ops_store(store).run_finished_events(source_id)
        finally:
            store.dispose()
        failed = 0
        for run_id, payload in rows:
            if run_id in runs:
                event = decode(payload)
                if (
                    isinstance(event, RunFinished)
                    and event.status == FAILED
                    and event.reason != STOP_REQUESTED
                ):
                    failed += 1
        return failed

    def _still_ours(self, job: Job) -> None:
        """Exit the process, touching nothing, if the job was delivered to another worker
        (the reaper took this worker for dead: it was stopped or cut off for too long)."""
        rows = list(self.app.job_manager.list_jobs(id=job.id))
        row = rows[0] if rows else None
        if row is not None and row.status == "doing" and row.worker_id == job.worker_id:
            return
        now = f"{row.status}, worker {row.worker_id}" if row is not None else "gone"
        log.error(
            "job %s was delivered again while this worker (%s, procrastinate worker %s) did "
            "not answer (now: %s); its run wrote nothing after that (lease fencing). This "
            "worker exits without touching the job.",
            job.id,
            self.name,
            job.worker_id,
            now,
        )
        logging.shutdown()
        os._exit(STALE_EXIT)


# --- metrics ---------------------------------------------------------------------------------
class WorkerMetrics:
    """``journal_loader_worker_jobs_total{worker,outcome}``: started, succeeded, failed,
    stopped (shutdown), waited (source locked elsewhere), reaped (stalled jobs this worker
    retried); ``journal_loader_worker_running_jobs{worker}``. The jobs of a split source's
    chunks also count ``journal_loader_worker_chunk_records_total{worker,chunk}`` (records
    processed, per committed batch) and ``journal_loader_worker_running_chunks{worker,chunk}``.

    ``chunk`` is the chunk's index, never a file or source: the label's values are bounded
    by the largest split (``--split N``: 0..N-1, the same values for every file), where a
    file name would add series for every file ever loaded. Which file a chunk belongs to is
    ``status``'s business (journal_loader/cli/inspect.py)."""

    def __init__(self, worker: str, port: int | None = None, textfile: str | None = None):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.worker = worker
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter(
            "journal_loader_worker_jobs",
            "Load jobs of this worker by outcome",
            ["worker", "outcome"],
            registry=self.registry,
        )
        self.running = Gauge(
            "journal_loader_worker_running_jobs",
            "Load jobs running in this worker",
            ["worker"],
            registry=self.registry,
        )
        self.chunk_records = Counter(
            "journal_loader_worker_chunk_records",
            "Records processed by this worker's runs of chunk N of a split source",
            ["worker", "chunk"],
            registry=self.registry,
        )
        self.running_chunks = Gauge(
            "journal_loader_worker_running_chunks",
            "Runs of chunk N of a split source running in this worker",
            ["worker", "chunk"],
            registry=self.registry,
        )
        for outcome in ("started", "succeeded", "failed", "stopped", "waited", "reaped"):
            self.jobs.labels(worker, outcome)
        self.textfile = textfile
        self._lock = threading.Lock()
        self.port: int | None = None
        if port is not None:
            from prometheus_client.exposition import start_http_server

            server, _thread = start_http_server(port, addr="0.0.0.0", registry=self.registry)  # noqa: S104
            self.port = int(server.server_address[1])
        self.write()

    def job(self, outcome: str) -> None:
        with self._lock:
            self.jobs.labels(self.worker, outcome).inc()
            if outcome == "started":
                self.running.labels(self.worker).inc()
            elif outcome in ("succeeded", "failed", "stopped"):
                self.running.labels(self.worker).dec()
        self.write()

    def chunk_run(self, chunk: int, running: int) -> None:
        """A run of this chunk started (+1) or ended (-1)."""
        with self._lock:
            self.running_chunks.labels(self.worker, str(chunk)).inc(running)
        self.write()

    def chunk_progress(self, chunk: int, records: int) -> None:
        with self._lock:
            self.chunk_records.labels(self.worker, str(chunk)).inc(records)
        self.write()

    def write(self) -> None:
        if self.textfile:
            from prometheus_client import write_to_textfile

            try:
                write_to_textfile(self.textfile, self.registry)
            except OSError as e:
                log.warning("cannot write metrics textfile %s: %s", self.textfile, e)


class ChunkProgress:
    """A run observer feeding a chunk's metrics (``WorkerMetrics``) from the run's batches:
    the records counter moves at each commit, so a chunk's progress shows while it runs."""

    def __init__(self, metrics: WorkerMetrics, chunk: int) -> None:
        self.metrics = metrics
        self.chunk = chunk
        self.counted = 0  # the run's records already counted (its totals only grow)
        self.running = False

    def on_start(self, info: RunInfo) -> None:
        if not self.running:
            self.running = True
            self.counted = 0  # a new run (after a wait for a lock): its totals start at 0
            self.metrics.chunk_run(self.chunk, 1)

    def on_batch(self, stats: Statistics, position: ResumePoint, bytes_read: int) -> None:
        if stats.total_processed > self.counted:
            self.metrics.chunk_progress(self.chunk, stats.total_processed - self.counted)
            self.counted = stats.total_processed

    def on_finish(self, report: RunReport) -> None:
        # Also called for a run that never started (already processed, a lock held
        # elsewhere): only a started run is counted down, so the gauge never goes below 0.
        if self.running:
            self.running = False
            self.metrics.chunk_run(self.chunk, -1)


# --- the worker ---------------------------------------------------------------------------------
@dataclass(slots=True)
class WorkerOptions:
    concurrency: int = 1
    name: str = ""
    stalled_timeout: float = 60.0
    max_failures: int = 3
    retry_delay: float = 30.0
    max_attempts: int = 50
    until_empty: bool = False
    lock_poll: float = 2.0
    metrics_port: int | None = None
    metrics_textfile: str | None = None


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def run_worker(url: str, options: WorkerOptions) -> int:
    """Run jobs until SIGTERM/SIGINT (or, with ``until_empty``, until the queue is empty).
    SIGTERM: no new job; each running job stops after its current batch and is queued
    again at once (another worker, or this one restarted, resumes it)."""
    from journal_loader.storage import open_store

    require_postgres(url)
    store = open_store(url)
    try:
        ensure_queue(store)
    finally:
        store.dispose()
    name = options.name or default_name()
    metrics = (
        WorkerMetrics(name, options.metrics_port, options.metrics_textfile)
        if options.metrics_port is not None or options.metrics_textfile
        else None
    )
    state = WorkerState(db=url, name=name, lock_poll=options.lock_poll, metrics=metrics)
    retry = LoadRetry(options.max_failures, options.retry_delay, options.max_attempts)
    app = make_app(url, pool_size=options.concurrency + 4, retry=retry)
    state.app = app
    asyncio.run(_serve(app, state, options))
    return 0


async def _serve(app: Any, state: WorkerState, options: WorkerOptions) -> None:
    timeout = options.stalled_timeout
    async with app.open_async():
        loop = asyncio.get_running_loop()
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                name=state.name,
                concurrency=options.concurrency,
                install_signal_handlers=False,
                additional_context={"journal_loader": state},
                update_heartbeat_interval=max(0.2, timeout / 4),
                stalled_worker_timeout=timeout,
                fetch_job_polling_interval=min(5.0, max(0.5, timeout / 4)),
            )
        )
        side = [asyncio.create_task(_reap(app, state, timeout))]
        if options.until_empty:
            side.append(asyncio.create_task(_stop_when_empty(app, state, worker)))

        def on_signal(signum: int) -> None:
            if state.stop.is_set():
                return
            log.info(
                "%s: stopping; running jobs end after their current batch",
                signal.Signals(signum).name,
            )
            state.stop.set()
            worker.cancel()  # procrastinate: stop fetching, wait for the running jobs

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        log.info(
            "worker %s: %d job(s) at a time, stalled jobs retried after %gs",
            state.name,
            options.concurrency,
            timeout,
        )
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


async def _reap(app: Any, state: WorkerState, timeout: float) -> None:
    """Retry the jobs of workers whose heartbeat is older than ``timeout``."""
    manager = app.job_manager
    while True:
        await asyncio.sleep(max(0.2, timeout / 2))
        try:
            stalled = await manager.get_stalled_jobs(
                task_name=TASK, seconds_since_heartbeat=timeout
            )
            for job in stalled:
                # Still as listed (another reaper may have been first, and a worker may
                # have fetched it since): a retry of a running job would deliver it twice.
                now = list(await manager.list_jobs_async(id=job.id))
                if not now or now[0].status != "doing" or now[0].worker_id != job.worker_id:
                    continue
                try:
                    await manager.retry_job(job)
                except Exception as e:  # another reaper retried it first
                    log.debug("job %s: not retried: %s", job.id, e)
                    continue
                log.warning(
                    "job %s (%s) was left running by worker %s, silent for over %gs: "
                    "queued again; its rerun resumes from the last checkpoint",
                    job.id,
                    job.task_kwargs.get("file"),
                    job.worker_id,
                    timeout,
                )
                if state.metrics is not None:
                    state.metrics.job("reaped")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the database away for a moment: try again next round
            log.warning("stalled-job check failed: %s", e)


async def _stop_when_empty(app: Any, state: WorkerState, worker: asyncio.Task[Any]) -> None:
    """``--until-empty``: stop once no load job is queued or running anywhere."""
    manager = app.job_manager
    quiet = 0
    while True:
        await asyncio.sleep(0.5)
        try:
            busy = [
                j
                for status in ("todo", "doing")
                for j in await manager.list_jobs_async(task=TASK, status=status)
            ]
        except Exception as e:
            log.warning("queue check failed: %s", e)
            continue
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            log.info("the queue is empty: stopping")
            worker.cancel()
            return


__all__ = [
    "LOCK_PREFIX",
    "QUEUE",
    "STALE_EXIT",
    "TASK",
    "LoadRetry",
    "RunFailed",
    "Submitted",
    "WorkerMetrics",
    "WorkerOptions",
    "WorkerState",
    "WorkerStopping",
    "conninfo",
    "default_name",
    "ensure_queue",
    "expand",
    "install_queue",
    "job_run_id",
    "make_app",
    "queue_installed",
    "queue_jobs",
    "require_postgres",
    "retry_note",
    "run_worker",
    "submit",
]
