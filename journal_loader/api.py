"""``run()``: the Python entry point; the CLI's ``run`` command calls exactly this."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from journal_loader.config import Config, config_from_dict, load_config, resolve_database_url
from journal_loader.errors import ConfigError
from journal_loader.factory import loader_from_config
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.target import GraphTarget
from journal_loader.loader import Loader
from journal_loader.runner import Observer, Runner, RunOptions, RunReport
from journal_loader.runner.chunks import PlanResult, plan_file
from journal_loader.sources.identity import SourceAhead
from journal_loader.storage import Store, open_store


def run(
    loader: Loader | type[Loader] | None = None,
    file: str | os.PathLike[str] | None = None,
    *,
    config: Config | str | os.PathLike[str] | dict[str, Any] | None = None,
    db: str | None = None,
    store: Store | None = None,
    graph: GraphTarget | None = None,
    limit: int | None = None,
    start_from: int | None = None,
    batch_size: int | None = None,
    force: bool = False,
    observers: Sequence[Observer] = (),
    stop: Callable[[], bool] | None = None,
    run_id: str | None = None,
    fail_fast_records: int | None = None,
    raise_on_failure: bool = False,
    chunk: int | None = None,
) -> RunReport:
    """Load one file; returns a RunReport (status, statistics, source and run ids).

    ``loader``: a Loader instance or class; if omitted, the config's ``loader.class`` (or its
    ``facts:`` mapping) is used. ``file``: the input; if omitted, the config's ``source.file``.
    ``db`` / ``store``: where the journal lives (default: ``$JOURNAL_LOADER_DB_URL``, then
    the config's database, then ``sqlite:///journal.db``). ``graph``: the target
    (default: the embedded graph in the same database). ``fail_fast_records``: stop when
    the first N records all fail the same way (default: the config's, 100; 0: never).
    ``raise_on_failure``: raise ``RunFailedError`` (``RunInterruptedError`` after a
    SIGTERM/SIGINT) instead of returning a failed report, for orchestrators' tasks.
    ``stop``: asked before each batch; True ends the run after the batch in progress,
    resumable (``RunOptions.stop``). ``run_id``: the run's id (default: a new UUID).
    ``chunk``: load only this chunk of a file that ``plan`` split (README "One big file").
    """
    cfg = _config(config)
    if loader is None:
        loader = loader_from_config(cfg)
    elif isinstance(loader, type):
        loader = loader(cfg)
    elif config is not None:
        loader.config = cfg
    path = cfg.source_path(os.fspath(file) if file is not None else None)
    if path is None:
        raise ConfigError("no input file: pass one, or set source.file in the config")
    options = run_options(cfg, loader)
    options.batch_size = batch_size or options.batch_size
    options.limit = limit if limit is not None else options.limit
    options.start_from = start_from
    options.force = force
    options.stop = stop
    options.chunk = chunk
    if fail_fast_records is not None:
        options.fail_fast_records = fail_fast_records
    # The file's hash overlaps opening the store and the target (sources/identity.py,
    # SourceAhead); its errors are still raised where they were, by the runner.
    ahead = SourceAhead(path, update_frequency=options.update_frequency)
    own_store = store is None
    target: GraphTarget | None = None
    try:
        if store is None:
            store = open_store(resolve_database_url(db, cfg))
        target = graph or make_target(store, cfg)
        runner = Runner(
            loader, store, target, path, options, observers, run_id=run_id, source=ahead
        )
        report = runner.run()
    finally:
        ahead.abandon()
        if graph is None and target is not None:
            target.close()  # a client we made holds a connection for the run
        if own_store and store is not None:
            store.dispose()
    if raise_on_failure:
        report.raise_for_status()
    return report


def plan(
    loader: Loader | type[Loader] | None = None,
    file: str | os.PathLike[str] | None = None,
    *,
    config: Config | str | os.PathLike[str] | dict[str, Any] | None = None,
    db: str | None = None,
    store: Store | None = None,
    split: int | None = None,
    chunk_records: int | None = None,
) -> PlanResult:
    """Split one file into chunks (about ``split`` of equal size, or one every
    ``chunk_records`` records), journal the plan, and return it with each chunk's state;
    then ``run(..., chunk=i)`` loads chunk ``i``. A file planned before keeps its plan.
    (runner/chunks.py; README "One big file".)"""
    cfg = _config(config)
    if loader is None:
        loader = loader_from_config(cfg)
    elif isinstance(loader, type):
        loader = loader(cfg)
    path = cfg.source_path(os.fspath(file) if file is not None else None)
    if path is None:
        raise ConfigError("no input file: pass one, or set source.file in the config")
    options = run_options(cfg, loader)
    source_type = options.source_type or loader.source_type_name
    own_store = store is None
    if store is None:
        store = open_store(resolve_database_url(db, cfg))
    try:
        return plan_file(
            store,
            path,
            options,
            source_type,
            loader.name,
            split=split,
            chunk_records=chunk_records,
        )
    finally:
        if own_store:
            store.dispose()


def run_options(cfg: Config, loader: Loader) -> RunOptions:
    """The run's options from the config (the CLI and the API then apply their arguments)."""
    processing, source = cfg.processing, cfg.source
    return RunOptions(
        batch_size=processing.batch_size,
        limit=processing.limit,
        max_retries=processing.max_retries,
        retry_delay=processing.retry_delay,
        retry_max_delay=processing.retry_max_delay,
        source_type=loader.source_type or source.type,
        source_name=source.name,
        update_frequency=source.update_frequency,
        reader=source.reader_options(),
        max_failed_records=processing.max_failed_records,
        max_failure_rate=processing.max_failure_rate,
        failure_rate_min_records=processing.failure_rate_min_records,
        fail_fast_records=processing.fail_fast_records,
        circuit_breaker=processing.circuit_breaker,
    )


def make_target(store: Store, cfg: Config) -> GraphTarget:
    """The graph a config loads into: an existing Propose API deployment when the config
    has ``graph.propose_api``, else the embedded graph in the journal's database, with the
    ``graph:`` section's types, fuzzy matching, opposing relationships and penalty."""
    if cfg.graph.propose_api is not None:
        from journal_loader.graph.postgres_client import PostgresProposeClient

        return PostgresProposeClient.from_config(store, cfg)
    return EmbeddedGraph.from_config(store, cfg)


def _config(config: Config | str | os.PathLike[str] | dict[str, Any] | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    return load_config(Path(config))
