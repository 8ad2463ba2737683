"""``run()``: the Python entry point; the CLI's ``run`` command calls exactly this."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from journal_loader.config import Config, config_from_dict, load_config, resolve_database_url
from journal_loader.errors import ConfigError
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.target import GraphTarget
from journal_loader.loader import Loader, loader_from_config
from journal_loader.runner import Runner, RunObserver, RunOptions, RunReport
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
    observers: Sequence[RunObserver] = (),
) -> RunReport:
    """Load one file; returns a RunReport (status, statistics, source and run ids).

    ``loader``: a Loader instance or class; if omitted, the config's ``loader.class`` (or its
    ``facts:`` mapping) is used. ``file``: the input; if omitted, the config's ``source.file``.
    ``db`` / ``store``: where the journal lives (default: the config's database, then
    ``$JOURNAL_LOADER_DB_URL``, then ``sqlite:///journal.db``). ``graph``: the target
    (default: the embedded graph in the same database).
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
    processing = cfg.processing
    options = RunOptions(
        batch_size=batch_size or processing.batch_size,
        limit=limit if limit is not None else processing.limit,
        start_from=start_from,
        force=force,
        max_retries=processing.max_retries,
        retry_delay=processing.retry_delay,
        retry_max_delay=processing.retry_max_delay,
        source_type=loader.source_type or cfg.source.type,
        source_name=cfg.source.name,
        update_frequency=cfg.source.update_frequency,
        format=cfg.source.format,
        encoding=cfg.source.encoding,
        delimiter=cfg.source.delimiter,
        quotechar=cfg.source.quotechar,
        field_size_limit=cfg.source.field_size_limit,
        max_record_bytes=cfg.source.max_record_bytes,
    )
    own_store = store is None
    if store is None:
        store = open_store(resolve_database_url(db, cfg))
    try:
        target = graph or EmbeddedGraph(
            store,
            node_types=cfg.graph.node_types,
            relationship_types=cfg.graph.relationship_types,
        )
        return Runner(loader, store, target, path, options, observers).run()
    finally:
        if own_store:
            store.dispose()


def _config(config: Config | str | os.PathLike[str] | dict[str, Any] | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    return load_config(Path(config))
