"""Prometheus metrics: the real HTTP endpoint scraped mid-run, the textfile parsed with
prometheus-client's parser, a push to a recording pushgateway; SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import journal_loader
from journal_loader.errors import SourceLockedError
from journal_loader.ops.metrics import METRIC_NAMES, MetricsObserver, StoreDlqProbe
from journal_loader.storage import open_store
from tests.support.loaders import PairLoader
from tests.support.ops import FatalLoader, expected_counts, pairs_csv, pushgateway


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    found = samples(text).get((name, frozenset(labels.items())))
    assert found is not None, f"{name}{labels} not in:\n{text}"
    return found


def families(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


class Scraper:
    """Scrapes the endpoint after every batch (while the run lasts) and reads the textfile."""

    def __init__(self, metrics: MetricsObserver, textfile: Path | None = None) -> None:
        self.metrics = metrics
        self.textfile = textfile
        self.scrapes: list[str] = []
        self.textfiles: list[str] = []
        self.positions: list[int] = []

    def on_batch(self, stats: Any, position: Any, bytes_read: int) -> None:
        self.positions.append(position.offset)
        if self.metrics.port is not None:
            url = f"http://127.0.0.1:{self.metrics.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                self.scrapes.append(r.read().decode())
        if self.textfile is not None:
            self.textfiles.append(self.textfile.read_text())


def test_http_endpoint_serves_live_metrics_during_the_run(db_url: str, tmp_path: Path) -> None:
    data = pairs_csv(tmp_path / "pairs.csv", 40)
    metrics = MetricsObserver(
        "pairs", port=0, address="127.0.0.1", dlq_probe=StoreDlqProbe(db_url), dlq_every=1
    )
    scraper = Scraper(metrics)
    report = journal_loader.run(
        PairLoader, data, db=db_url, batch_size=10, observers=[metrics, scraper]
    )
    assert report.status == "completed"
    assert len(scraper.scrapes) == 4
    want = expected_counts(40)
    # after the second batch: 20 records done, counted by outcome as far as they went
    second = scraper.scrapes[1]
    assert value(second, "journal_loader_position", loader="pairs", source_type="pairs") == 20
    done = sum(
        value(
            second, "journal_loader_records_total", loader="pairs", source_type="pairs", outcome=o
        )
        for o in ("succeeded", "failed", "skipped")
    )
    assert done == 20
    assert value(second, "journal_loader_run_end_timestamp_seconds", loader="pairs") == 0
    assert value(second, "journal_loader_run_exit_code", loader="pairs") == -1
    assert value(second, "journal_loader_last_event_age_seconds", loader="pairs") < 60
    assert value(second, "journal_loader_batch_duration_seconds_count", loader="pairs") == 2
    assert (
        value(second, "journal_loader_source_size_bytes", loader="pairs", source_type="pairs")
        == data.stat().st_size
    )
    last = scraper.scrapes[-1]
    for outcome, n in want.items():
        assert (
            value(
                last,
                "journal_loader_records_total",
                loader="pairs",
                source_type="pairs",
                outcome=outcome,
            )
            == n
        )
    assert (
        value(last, "journal_loader_dlq_depth", loader="pairs", source_type="pairs")
        == want["failed"]
    )
    # the endpoint lives only as long as the run
    assert metrics.port is not None
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=2)


def test_textfile_written_each_batch_and_at_the_end(db_url: str, tmp_path: Path) -> None:
    data = pairs_csv(tmp_path / "pairs.csv", 40)
    textfile = tmp_path / "tc" / "pairs.prom"
    textfile.parent.mkdir()
    metrics = MetricsObserver("pairs", textfile=textfile, dlq_probe=StoreDlqProbe(db_url))
    scraper = Scraper(metrics, textfile)
    report = journal_loader.run(
        PairLoader, data, db=db_url, batch_size=10, observers=[metrics, scraper]
    )
    assert report.exit_code == 0
    # written by the metrics observer before the scraper looked: one file per batch
    seen = [
        value(t, "journal_loader_position", loader="pairs", source_type="pairs")
        for t in scraper.textfiles
    ]
    assert seen == [10, 20, 30, 40]
    final = textfile.read_text()
    want = expected_counts(40)
    for outcome, n in want.items():
        assert (
            value(
                final,
                "journal_loader_records_total",
                loader="pairs",
                source_type="pairs",
                outcome=outcome,
            )
            == n
        )
    assert (
        value(final, "journal_loader_dlq_depth", loader="pairs", source_type="pairs")
        == want["failed"]
    )
    end = value(final, "journal_loader_run_end_timestamp_seconds", loader="pairs")
    start = value(final, "journal_loader_run_start_timestamp_seconds", loader="pairs")
    assert end >= start > 0
    assert value(final, "journal_loader_last_success_timestamp_seconds", loader="pairs") == end
    assert value(final, "journal_loader_run_exit_code", loader="pairs") == 0
    # atomic: no temporary file left beside it
    assert [p.name for p in textfile.parent.iterdir()] == ["pairs.prom"]
    # every family the module declares is in the file
    assert set(METRIC_NAMES) <= families(final)


def test_a_failed_run_keeps_the_last_success_time_in_the_textfile(
    db_url: str, tmp_path: Path
) -> None:
    textfile = tmp_path / "pairs.prom"
    good = pairs_csv(tmp_path / "good.csv", 20)
    journal_loader.run(
        PairLoader,
        good,
        db=db_url,
        batch_size=10,
        observers=[MetricsObserver("pairs", textfile=textfile)],
    )
    first = value(
        textfile.read_text(), "journal_loader_last_success_timestamp_seconds", loader="pairs"
    )

    bad = pairs_csv(tmp_path / "bad.csv", 30, fatal_at=25)
    report = journal_loader.run(
        FatalLoader,
        bad,
        db=db_url,
        batch_size=10,
        observers=[MetricsObserver("pairs", textfile=textfile)],
    )
    assert report.status == "failed"
    text = textfile.read_text()
    assert value(text, "journal_loader_run_exit_code", loader="pairs") == 1
    assert value(text, "journal_loader_last_success_timestamp_seconds", loader="pairs") == first
    assert value(text, "journal_loader_position", loader="pairs", source_type="pairs") == 20


def test_a_locked_source_ends_with_exit_code_75_in_the_metrics(db_url: str, tmp_path: Path) -> None:
    data = pairs_csv(tmp_path / "pairs.csv", 20)
    textfile = tmp_path / "pairs.prom"
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    store = open_store(db_url)
    try:
        with (
            store.lock_source(f"pairs:{sha}", {"run_id": "someone-else"}),
            pytest.raises(SourceLockedError),
        ):
            journal_loader.run(
                PairLoader,
                data,
                db=db_url,
                observers=[MetricsObserver("pairs", textfile=textfile)],
            )
    finally:
        store.dispose()
    text = textfile.read_text()
    assert value(text, "journal_loader_run_exit_code", loader="pairs") == 75
    assert (
        "journal_loader_last_success_timestamp_seconds",
        frozenset({("loader", "pairs")}),
    ) not in samples(text)


def test_pushgateway_gets_the_final_metrics(db_url: str, tmp_path: Path) -> None:
    data = pairs_csv(tmp_path / "pairs.csv", 30)
    with pushgateway() as gw:
        metrics = MetricsObserver("pairs", pushgateway=gw.url, job="nightly")
        report = journal_loader.run(PairLoader, data, db=db_url, batch_size=10, observers=[metrics])
    assert report.status == "completed" and metrics.pushed
    assert len(gw.requests) == 1
    method, path, body = gw.requests[0]
    # POST: replaces only the pushed families, so an earlier last-success time survives a failure
    assert (method, path) == ("POST", "/metrics/job/nightly/loader/pairs")
    text = body.decode()
    want = expected_counts(30)
    assert (
        value(
            text,
            "journal_loader_records_total",
            loader="pairs",
            source_type="pairs",
            outcome="failed",
        )
        == want["failed"]
    )
    assert value(text, "journal_loader_run_exit_code", loader="pairs") == 0


def test_pushgateway_down_does_not_fail_the_run(db_url: str, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = pairs_csv(tmp_path / "pairs.csv", 10)
    metrics = MetricsObserver("pairs", pushgateway=f"http://127.0.0.1:{port}", push_timeout=2)
    report = journal_loader.run(PairLoader, data, db=db_url, observers=[metrics])
    assert report.status == "completed" and not metrics.pushed


def test_retry_and_propose_hooks_feed_their_metrics() -> None:
    metrics = MetricsObserver("pairs")
    metrics.on_retry("transient", "connection lost", 0.5)
    metrics.on_retry("transient", "connection lost", 1.0)
    metrics.on_retry("conflict", "unique key", 0.1)
    metrics.on_propose_durations([0.002, 0.003, 0.2])
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert value(text, "journal_loader_retries_total", loader="pairs", kind="transient") == 2
    assert value(text, "journal_loader_retries_total", loader="pairs", kind="conflict") == 1
    assert value(text, "journal_loader_retries_total", loader="pairs", kind="record_by_record") == 0
    assert value(text, "journal_loader_propose_duration_seconds_count", loader="pairs") == 3
    assert (
        value(text, "journal_loader_propose_duration_seconds_bucket", loader="pairs", le="0.005")
        == 2
    )


def test_each_run_has_its_own_registry(tmp_path: Path) -> None:
    a, b = MetricsObserver("a"), MetricsObserver("b")
    assert a.registry is not b.registry
    from prometheus_client import REGISTRY, generate_latest

    assert b"journal_loader_" not in generate_latest(REGISTRY)


def test_metrics_options_fail_early_on_a_bad_target(tmp_path: Path) -> None:
    from journal_loader.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        MetricsObserver("pairs", textfile=tmp_path / "missing" / "x.prom")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            MetricsObserver("pairs", port=port, address="127.0.0.1")


class FailedSoFar:
    """After every batch: the run's failures so far and the textfile's DLQ depth."""

    def __init__(self, textfile: Path) -> None:
        self.textfile = textfile
        self.seen: list[tuple[int, float]] = []

    def on_batch(self, stats: Any, position: Any, bytes_read: int) -> None:
        depth = value(
            self.textfile.read_text(), "journal_loader_dlq_depth", loader="pairs",
            source_type="pairs",
        )  # fmt: skip
        self.seen.append((int(stats.failed), depth))


def test_dlq_depth_is_right_after_every_batch(db_url: str, tmp_path: Path) -> None:
    """Counted every dlq_every (10) batches, and right in between too: not 0 until the
    tenth batch while records are already failing."""
    data = pairs_csv(tmp_path / "pairs.csv", 60)
    textfile = tmp_path / "pairs.prom"
    metrics = MetricsObserver("pairs", textfile=textfile, dlq_probe=StoreDlqProbe(db_url))
    watcher = FailedSoFar(textfile)
    report = journal_loader.run(
        PairLoader, data, db=db_url, batch_size=4, observers=[metrics, watcher]
    )
    assert report.exit_code == 0 and len(watcher.seen) == 15
    assert [depth for _, depth in watcher.seen] == [failed for failed, _ in watcher.seen]
    assert watcher.seen[1][1] == 1  # the second batch already has a failure in the DLQ
    assert watcher.seen[-1][1] == expected_counts(60)["failed"]

    # a second source of the type: the depth starts from the DLQ's count, then adds
    other = pairs_csv(tmp_path / "other.csv", 30)
    textfile.unlink()
    metrics = MetricsObserver("pairs", textfile=textfile, dlq_probe=StoreDlqProbe(db_url))
    watcher = FailedSoFar(textfile)
    journal_loader.run(PairLoader, other, db=db_url, batch_size=4, observers=[metrics, watcher])
    before = expected_counts(60)["failed"]
    assert [depth for _, depth in watcher.seen] == [before + failed for failed, _ in watcher.seen]
    final = textfile.read_text()
    assert value(final, "journal_loader_dlq_depth", loader="pairs", source_type="pairs") == (
        before + expected_counts(30)["failed"]
    )


def test_metric_names_follow_prometheus_conventions(tmp_path: Path, sqlite_url: str) -> None:
    """Units last (read_bytes), _total only on counters, and no _created series."""
    data = pairs_csv(tmp_path / "pairs.csv", 20)
    textfile = tmp_path / "pairs.prom"
    metrics = MetricsObserver("pairs", textfile=textfile, dlq_probe=StoreDlqProbe(sqlite_url))
    journal_loader.run(PairLoader, data, db=sqlite_url, observers=[metrics])
    text = textfile.read_text()
    names = {name for name, _ in samples(text)}
    assert value(text, "journal_loader_read_bytes", loader="pairs", source_type="pairs") == (
        data.stat().st_size
    )
    assert "journal_loader_bytes_read" not in names
    assert not [n for n in names if n.endswith("_created")]
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("journal_loader_")
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
        else:
            assert not family.name.endswith("_total")
        if family.type == "gauge" and ("timestamp" in family.name or "age" in family.name):
            assert family.name.endswith("_seconds"), family.name
        if "bytes" in family.name:
            assert family.name.endswith("_bytes"), family.name
