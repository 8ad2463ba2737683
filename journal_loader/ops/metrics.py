"""Prometheus metrics of one run, in a ``CollectorRegistry`` of its own.

Three ways out (any combination):

* ``port``: ``/metrics`` served over HTTP while the run lasts (port 0: any free port; the one
  chosen is ``MetricsObserver.port``);
* ``textfile``: the node_exporter textfile-collector format, written atomically (a temporary
  file renamed over the target) after every batch and at the end: the way for cron jobs;
* ``pushgateway``: pushed once at the end (POST, grouping key ``loader``), so the last
  success time pushed by an earlier run is kept when this one fails.

Metrics (``loader`` is the loader's name, ``source_type`` the source's type):

* ``journal_loader_records_total{loader,source_type,outcome}``: counter, outcome succeeded,
  failed or skipped (this run's records);
* ``journal_loader_batch_duration_seconds{loader}``: histogram, from one batch to the next;
* ``journal_loader_propose_duration_seconds{loader}``: histogram, per record (fed by the
  runner's ``on_propose_durations`` hook);
* ``journal_loader_position{loader,source_type}``: records done in the current source;
* ``journal_loader_dlq_depth{loader,source_type}``: the type's records in the dead-letter
  queue, after every batch: counted (one COUNT) at the start, every ``dlq_every`` batches and
  at the end, and in between the last count plus the run's failures since (a record that
  fails again while already in the queue, after a ``--force`` reload, is over-counted until
  the next count);
* ``journal_loader_retries_total{loader,kind}``: counter (the runner's ``on_retry`` hook);
* ``journal_loader_last_success_timestamp_seconds{loader}``: end of the last run that
  exited 0;
* ``journal_loader_last_event_age_seconds{loader}``: seconds since the run's last batch;
* ``journal_loader_last_event_timestamp_seconds{loader}``: time of the run's last batch;
* ``journal_loader_run_start_timestamp_seconds{loader}``,
  ``journal_loader_run_end_timestamp_seconds{loader}`` (0 while the run lasts);
* ``journal_loader_run_exit_code{loader}``: 0, 1, 2, 75; -1 while the run lasts;
* ``journal_loader_read_bytes{loader,source_type}``,
  ``journal_loader_source_size_bytes{loader,source_type}``: progress through the file.

Names follow Prometheus' conventions: the unit last (``_seconds``, ``_bytes``), ``_total``
for counters. The histograms, run timestamps and the DLQ depth carry ``loader`` too:
node_exporter merges the textfiles of all loaders into one scrape, where series without it
would collide. No ``_created`` series: a counter's creation time says nothing about a run
(``prometheus_client.disable_created_metrics``).

A textfile written by a run that failed keeps the previous file's last-success time, so
"no success in N hours" fires on time whatever the output.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    write_to_textfile,
)
from prometheus_client.exposition import pushadd_to_gateway, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from journal_loader.errors import ConfigError
from journal_loader.ops.observers import exit_code_of
from journal_loader.secrets import mask_url, password_from_url, register_secret, scrub

if TYPE_CHECKING:
    from journal_loader.journal.events import Statistics
    from journal_loader.runner.observers import RunInfo
    from journal_loader.runner.options import RunReport
    from journal_loader.sources.readers import ResumePoint

log = logging.getLogger("journal_loader.metrics")

disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide; we export none

OUTCOMES = ("succeeded", "failed", "skipped")
RETRY_KINDS = ("transient", "conflict", "record_by_record")
BATCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PROPOSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
LAST_SUCCESS = "journal_loader_last_success_timestamp_seconds"

#: every metric family this module can expose (the alerts and the dashboard use only these)
METRIC_NAMES = (
    "journal_loader_records_total",
    "journal_loader_batch_duration_seconds",
    "journal_loader_propose_duration_seconds",
    "journal_loader_position",
    "journal_loader_dlq_depth",
    "journal_loader_retries_total",
    LAST_SUCCESS,
    "journal_loader_last_event_age_seconds",
    "journal_loader_last_event_timestamp_seconds",
    "journal_loader_run_start_timestamp_seconds",
    "journal_loader_run_end_timestamp_seconds",
    "journal_loader_run_exit_code",
    "journal_loader_read_bytes",
    "journal_loader_source_size_bytes",
)

DlqProbe = Callable[[str], int]


class MetricsObserver:
    """A RunObserver that keeps the run's metrics and sends them out."""

    def __init__(
        self,
        loader: str,
        *,
        port: int | None = None,
        address: str = "0.0.0.0",  # noqa: S104 - an exporter is scraped from another host
        textfile: str | os.PathLike[str] | None = None,
        pushgateway: str | None = None,
        job: str = "journal_loader",
        dlq_probe: DlqProbe | None = None,
        dlq_every: int = 10,
        clock: Callable[[], float] = time.time,
        push_timeout: float = 10.0,
    ) -> None:
        self.loader = loader
        self.source_type = ""
        self.textfile = Path(textfile) if textfile is not None else None
        self.pushgateway = pushgateway
        self.job = job
        self.dlq_probe = dlq_probe
        self.dlq_every = max(1, dlq_every)
        self.clock = clock
        self.push_timeout = push_timeout
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._batches = 0
        self._last_batch_at: float | None = None
        self._last_event = clock()
        self._counted = {"succeeded": 0, "failed": 0, "skipped": 0}
        # the last DLQ count, and the run's failures when it was taken
        self._dlq_counted: int | None = None
        self._failed_at_count = 0
        self._finished = False
        self._server: Any = None
        self.port: int | None = None
        self.pushed = False
        if pushgateway:
            register_secret(password_from_url(pushgateway))
        reg = self.registry
        by_loader, by_source = ["loader"], ["loader", "source_type"]

        def gauge(name: str, doc: str, labels: list[str]) -> Gauge:
            return Gauge(name, doc, labels, registry=reg)

        self.records = Counter(
            "journal_loader_records",
            "Records processed by outcome (this run).",
            [*by_source, "outcome"],
            registry=reg,
        )
        self.retries = Counter(
            "journal_loader_retries",
            "Retries by kind (transient, conflict, record_by_record).",
            ["loader", "kind"],
            registry=reg,
        )
        self.batch_duration = Histogram(
            "journal_loader_batch_duration_seconds",
            "Seconds per batch (read, process, commit).",
            by_loader,
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.propose_duration = Histogram(
            "journal_loader_propose_duration_seconds",
            "Seconds per record's propose step.",
            by_loader,
            buckets=PROPOSE_BUCKETS,
            registry=reg,
        )
        self.position = gauge(
            "journal_loader_position", "Records done in the current source.", by_source
        )
        self.dlq_depth = gauge(
            "journal_loader_dlq_depth",
            "Records of the source type in the dead-letter queue.",
            by_source,
        )
        self.last_event_age = gauge(
            "journal_loader_last_event_age_seconds",
            "Seconds since the run's last committed batch (or its start).",
            by_loader,
        )
        self.last_event_ts = gauge(
            "journal_loader_last_event_timestamp_seconds",
            "Unix time of the run's last committed batch (or its start).",
            by_loader,
        )
        self.run_start = gauge(
            "journal_loader_run_start_timestamp_seconds", "Unix time the run started.", by_loader
        )
        self.run_end = gauge(
            "journal_loader_run_end_timestamp_seconds",
            "Unix time the run ended; 0 while it runs.",
            by_loader,
        )
        self.exit_code = gauge(
            "journal_loader_run_exit_code",
            "The run's exit code (0 ok, 1 failed, 2 config, 75 locked); -1 while it runs.",
            by_loader,
        )
        self.bytes_read = gauge(
            "journal_loader_read_bytes",
            "Bytes of the source file consumed (compressed bytes for gzip).",
            by_source,
        )
        self.source_size = gauge(
            "journal_loader_source_size_bytes", "Size of the source file in bytes.", by_source
        )
        # Registered only once there is a value: an empty family would wipe the pushgateway's.
        self.last_success: Gauge | None = None
        previous = self._previous_last_success()
        if previous is not None:
            self._set_last_success(previous)
        now = clock()
        self.run_start.labels(loader).set(now)
        self.run_end.labels(loader).set(0)
        self.exit_code.labels(loader).set(-1)
        self.last_event_ts.labels(loader).set(now)
        self.last_event_age.labels(loader).set_function(self._age)
        for kind in RETRY_KINDS:
            self.retries.labels(loader, kind)
        self.batch_duration.labels(loader)
        self.propose_duration.labels(loader)
        if self.textfile is not None:
            self._check_textfile_dir()
        if port is not None:
            self._serve(address, port)

    # --- outputs ---------------------------------------------------------------------------
    def _serve(self, address: str, port: int) -> None:
        try:
            server, _thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as e:
            raise ConfigError(
                f"--metrics-port: cannot listen on {address}:{port}: {e.strerror or e}"
            ) from None
        self._server = server
        self.port = int(server.server_address[1])
        log.info("serving metrics on http://%s:%d/metrics", address, self.port)

    def _check_textfile_dir(self) -> None:
        assert self.textfile is not None
        parent = self.textfile.parent
        if not parent.is_dir():
            raise ConfigError(f"--metrics-textfile: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"--metrics-textfile: directory {parent} is not writable")

    def write_textfile(self) -> None:
        if self.textfile is None:
            return
        try:
            write_to_textfile(str(self.textfile), self.registry)  # temp file + os.replace
        except OSError as e:
            log.warning("could not write the metrics textfile %s: %s", self.textfile, e)

    def push(self) -> None:
        if not self.pushgateway:
            return
        try:
            pushadd_to_gateway(
                self.pushgateway,
                job=self.job,
                registry=self.registry,
                grouping_key={"loader": self.loader},
                timeout=self.push_timeout,
            )
            self.pushed = True
        except Exception as e:  # the pushgateway being down must not fail the run
            log.error(
                "could not push metrics to %s: %s",
                mask_url(self.pushgateway),
                scrub(f"{type(e).__name__}: {e}"),
            )

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        close_probe = getattr(self.dlq_probe, "close", None)
        if close_probe is not None:
            close_probe()

    # --- RunObserver ------------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> None:
        with self._lock:
            self.source_type = str(info.get("source_type") or "")
            loader, st = self.loader, self.source_type
            for outcome in OUTCOMES:
                self.records.labels(loader, st, outcome)
            self.position.labels(loader, st).set(int(info.get("resumed_from") or 0))
            self.source_size.labels(loader, st).set(int(info.get("file_size") or 0))
            self.bytes_read.labels(loader, st).set(0)
            self._last_batch_at = time.monotonic()
            self._touch()
        self._probe_dlq()
        self.write_textfile()

    def on_batch(self, stats: Statistics, position: ResumePoint, bytes_read: int) -> None:
        now = time.monotonic()
        with self._lock:
            loader, st = self.loader, self.source_type
            done = {"succeeded": stats.imported, "failed": stats.failed, "skipped": stats.skipped}
            for outcome, value in done.items():
                delta = int(value) - self._counted[outcome]
                if delta > 0:
                    self.records.labels(loader, st, outcome).inc(delta)
                    self._counted[outcome] = int(value)
            self.position.labels(loader, st).set(int(position.offset))
            self.bytes_read.labels(loader, st).set(int(bytes_read))
            if self._last_batch_at is not None:
                self.batch_duration.labels(loader).observe(max(0.0, now - self._last_batch_at))
            self._last_batch_at = now
            self._touch()
            self._batches += 1
            probe = self._batches % self.dlq_every == 0
            failed = int(stats.failed)
        if probe:
            self._probe_dlq(failed)
        else:
            self._estimate_dlq(failed)
        self.write_textfile()

    def on_propose_durations(self, durations: Sequence[float]) -> None:
        child = self.propose_duration.labels(self.loader)
        for seconds in durations:
            child.observe(seconds)

    def on_retry(self, kind: str, error: str, delay: float) -> None:
        self.retries.labels(self.loader, kind).inc()

    def on_finish(self, report: RunReport) -> None:
        if self._finished:
            return
        self._finished = True
        code = exit_code_of(report)
        now = self.clock()
        with self._lock:
            if not self.source_type:
                self.source_type = str(getattr(report, "source_type", "") or "")
            self.run_end.labels(self.loader).set(now)
            self.exit_code.labels(self.loader).set(code)
            if code == 0:
                self._set_last_success(now)
        self._probe_dlq(self._counted["failed"])
        self.write_textfile()
        self.push()
        self.close()

    # --- helpers ----------------------------------------------------------------------------
    def _touch(self) -> None:
        self._last_event = self.clock()
        self.last_event_ts.labels(self.loader).set(self._last_event)

    def _age(self) -> float:
        return max(0.0, self.clock() - self._last_event)

    def _set_last_success(self, value: float) -> None:
        if self.last_success is None:
            self.last_success = Gauge(
                LAST_SUCCESS,
                "Unix time the last run of the loader that exited 0 ended.",
                ["loader"],
                registry=self.registry,
            )
        self.last_success.labels(self.loader).set(value)

    def _previous_last_success(self) -> float | None:
        if self.textfile is None or not self.textfile.is_file():
            return None
        try:
            exposition = self.textfile.read_bytes().decode("utf-8")
            for family in text_string_to_metric_families(exposition):
                for sample in family.samples:
                    if sample.name == LAST_SUCCESS and sample.labels.get("loader") == self.loader:
                        return float(sample.value)
        except (OSError, ValueError) as e:
            log.warning("could not read the previous metrics textfile %s: %s", self.textfile, e)
        return None

    def _probe_dlq(self, failed: int = 0) -> None:
        """Count the DLQ; ``failed``: the run's failures so far (all of them are in it)."""
        if self.dlq_probe is None or not self.source_type:
            return
        try:
            depth = self.dlq_probe(self.source_type)
        except Exception as e:  # a metric is not worth failing a run for
            log.warning("could not read the DLQ depth: %s", scrub(str(e)))
            self._estimate_dlq(failed)
            return
        with self._lock:
            self._dlq_counted, self._failed_at_count = depth, failed
            self.dlq_depth.labels(self.loader, self.source_type).set(depth)

    def _estimate_dlq(self, failed: int) -> None:
        """Between counts: the last count plus this run's failures since (each one is a row
        of the DLQ), so the gauge moves with every batch without a COUNT per batch."""
        with self._lock:
            if self._dlq_counted is None:
                return
            depth = self._dlq_counted + max(0, failed - self._failed_at_count)
            self.dlq_depth.labels(self.loader, self.source_type).set(depth)


class StoreDlqProbe:
    """``journal_loader_dlq_depth`` from the ``failed_records`` projection: one COUNT per call,
    through the run's database (its own engine, opened on first use and disposed at close)."""

    def __init__(self, url: str | None = None, store: Any = None) -> None:
        self.url = url
        self.store = store
        self._own = False

    def __call__(self, source_type: str) -> int:
        from journal_loader.storage.ops_store import ops_store

        if self.store is None:
            if self.url is None:
                raise ValueError("no database to read the DLQ depth from")
            from journal_loader.storage import open_store

            self.store = open_store(self.url, upgrade=False)
            self._own = True
        return ops_store(self.store).dlq_depth(source_type)

    def close(self) -> None:
        if self._own and self.store is not None:
            self.store.dispose()
            self.store = None
            self._own = False
