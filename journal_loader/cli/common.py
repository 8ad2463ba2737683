"""Options and output helpers shared by the commands."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

from journal_loader.config import Config, load_config, resolve_database
from journal_loader.errors import NoDatabaseError
from journal_loader.storage import Store, open_store

F = TypeVar("F", bound=Callable[..., Any])


def db_options(fn: F) -> F:
    fn = click.option(
        "--config",
        "-c",
        "config_path",
        type=click.Path(dir_okay=False),
        help="Take the database from this config file.",
    )(fn)
    return click.option("--db", metavar="URL", help=DB_HELP)(fn)


# The one rule, for every command (journal_loader.config.resolve_database).
DB_HELP = "Database URL (default: $JOURNAL_LOADER_DB_URL, the config's, sqlite:///journal.db)."


def open_db(
    db: str | None,
    config_path: str | None,
    *,
    upgrade: bool = True,
    create: bool = False,
    read_only: bool = False,
    check: bool = True,
    config: Config | None = None,
) -> Store:
    """The database a command works on (``--db``, ``$JOURNAL_LOADER_DB_URL``, the config's,
    ``./journal.db``). Only ``run`` and ``db upgrade`` create one (``create=True``); the
    others stop with exit 2, naming the URL and where it came from."""
    if config is None and config_path:
        config = load_config(config_path)
    url, origin = resolve_database(db, config)
    try:
        return open_store(url, upgrade=upgrade, create=create, read_only=read_only, check=check)
    except NoDatabaseError as e:
        where = (
            "the default: no --db, $JOURNAL_LOADER_DB_URL or config database was given"
            if origin == "the default"
            else f"the URL came from {origin}"
        )
        raise NoDatabaseError(
            f"{e} ({where}; give the right one with --db, $JOURNAL_LOADER_DB_URL or "
            "-c CONFIG, or load a file first with `journal-loader run`)"
        ) from None


def json_default(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    raise TypeError(f"cannot encode {type(value).__name__}")


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, default=json_default, ensure_ascii=False, indent=2))


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


IDENTIFIERS = frozenset({"id", "source", "offset", "line", "position"})


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain text table; numbers right-aligned; identifiers without thousands separators
    (they are copied into other commands)."""
    raw = [list(r) for r in rows]
    cells = [
        [
            str(v) if h in IDENTIFIERS and isinstance(v, int) else fmt(v)
            for h, v in zip(headers, row, strict=True)
        ]
        for row in raw
    ]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for values, row in zip(raw, cells, strict=True):
        lines.append(
            "  ".join(
                c.rjust(w) if _is_number(v) else c.ljust(w)
                for v, c, w in zip(values, row, widths, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
