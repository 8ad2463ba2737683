"""The loader a config names: its ``loader.class``, or the no-code ``FactsLoader`` for a
``facts:`` section.

It sits beside ``loader`` and ``facts``, on their layer (loaders: they import config, graph's
value types and the base layer), and above both: ``facts`` builds on ``loader``, and this is
the one module that picks between them, so neither imports the other back.
"""

from __future__ import annotations

from journal_loader.config import Config
from journal_loader.errors import ConfigError
from journal_loader.loader import Loader, load_loader_class


def loader_from_config(config: Config) -> Loader:
    if config.loader.class_:
        return load_loader_class(config.loader.class_, config.base_dir)(config)
    if config.facts:
        # Imported when used: the facts: models cost import time that a config naming a
        # loader.class (and every command that builds no loader) need not pay.
        from journal_loader.facts import FactsLoader

        loader: Loader = FactsLoader(config)
        return loader
    raise ConfigError(
        "the config names no loader: set loader.class (file.py:ClassName) or give a facts: section"
    )
