"""Which database a command uses: one rule for every command (``resolve_database``), and
the schema of journal-loader's own tables on PostgreSQL (``journal_schema``)."""

from __future__ import annotations

import os

from journal_loader.config.sections import Config

DEFAULT_DB_URL = "sqlite:///journal.db"
DB_URL_VARIABLE = "JOURNAL_LOADER_DB_URL"


def resolve_database(cli_url: str | None, config: Config | None) -> tuple[str, str]:
    """The database a command uses, and where that choice came from. One rule for every
    command: ``--db``, then ``$JOURNAL_LOADER_DB_URL``, then the config's ``database:``, then
    ``./journal.db`` (a per-invocation choice beats a per-shell one, which beats the file).
    On PostgreSQL with the config's schema for journal-loader's tables (``journal_schema``)."""
    url, where = _pick_database(cli_url, config)
    if config is not None:
        from journal_loader.storage import with_schema

        url = with_schema(url, journal_schema(config))
    return url, where


def _pick_database(cli_url: str | None, config: Config | None) -> tuple[str, str]:
    if cli_url:
        return cli_url, "--db"
    env = os.environ.get(DB_URL_VARIABLE)
    if env:
        return env, f"${DB_URL_VARIABLE}"
    if config is not None:
        url = config.database.resolved_url()
        if url:
            where = f" of {config.config_path}" if config.config_path else ""
            return url, f"the database section{where}"
    return DEFAULT_DB_URL, "the default"


def resolve_database_url(cli_url: str | None, config: Config | None) -> str:
    """--db, then JOURNAL_LOADER_DB_URL, then the config's database section, then journal.db."""
    return resolve_database(cli_url, config)[0]


def journal_schema(config: Config) -> str | None:
    """Where journal-loader's own tables go on PostgreSQL, after a search_path the URL sets
    itself (which always wins): ``database.schema``; else, for a Propose API in the journal's
    own database, ``journal_loader`` (the deployment's public tables have journal-loader's
    names); else None: the server's default search_path, as before."""
    if config.database.schema_:
        return config.database.schema_
    section = config.graph.propose_api
    if section is not None and section.url is None:
        from journal_loader.storage import DEFAULT_OWN_SCHEMA

        return DEFAULT_OWN_SCHEMA
    return None
