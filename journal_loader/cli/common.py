"""Options and output helpers shared by the commands."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

from journal_loader.config import Config, load_config, resolve_database_url
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
    return click.option(
        "--db",
        metavar="URL",
        envvar="JOURNAL_LOADER_DB_URL",
        show_envvar=True,
        help="Database URL (default: the config's, else sqlite:///journal.db).",
    )(fn)


def open_db(
    db: str | None, config_path: str | None, *, upgrade: bool = True, check: bool = True
) -> Store:
    config: Config | None = load_config(config_path) if config_path else None
    return open_store(resolve_database_url(db, config), upgrade=upgrade, check=check)


def json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    raise TypeError(f"cannot encode {type(value).__name__}")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=json_default, ensure_ascii=False, indent=2))


def fmt(value: Any) -> str:
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


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
