"""Named SQL: queries kept as reviewed text in ``.sql`` files, not built in Python strings.

A file holds blocks that start with ``-- name: some_query``; everything up to the next
``-- name:`` is that query. ``load_queries(path, dialect)`` reads ``NAME.sql`` and, when it
exists, ``NAME.<dialect>.sql`` whose blocks override the portable ones.

Where the two dialects differ only in how a JSON payload's field is read, one text serves
both: ``JSON_TEXT(alias.payload, 'field')`` is written once and becomes
``json_extract(alias.payload, '$.field')`` on SQLite and ``(alias.payload::json ->> 'field')``
on PostgreSQL when the queries are loaded (``render_dialect``).

Queries are written with ``:param`` placeholders (SQLAlchemy's and sqlite3's style).
``to_pyformat`` turns them into psycopg's ``%(param)s`` for the hot paths that talk to the
driver directly; it leaves ``::type`` casts, quoted strings and identifiers, and comments
alone.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)
_JSON_TEXT = re.compile(r"\bJSON_TEXT\(\s*([A-Za-z_][\w.]*)\s*,\s*'([A-Za-z_]\w*)'\s*\)")
_JSON_TEXT_FORMS = {
    "sqlite": r"json_extract(\1, '$.\2')",
    "postgresql": r"(\1::json ->> '\2')",
}
# a -- comment | a /* comment */ | a quoted string | a quoted identifier | a :: cast | a :param
# Comments come first and are kept whole: an apostrophe in a comment ("the chunk's ...")
# once opened a "string" that ran to the next quote and hid every :param in between.
# finditer scans left to right, so whichever starts first wins: a -- inside a string is
# part of the string, a quote inside a comment part of the comment. Pinned by
# tests/test_named_sql.py.
_TOKEN = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|(?<![\w:]):([A-Za-z_]\w*)",
    re.DOTALL,
)


def parse_named(text: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end() : end].strip()
        if m.group(1) in queries:
            raise ValueError(f"query {m.group(1)!r} defined twice")
        queries[m.group(1)] = body
    return queries


def render_dialect(sql: str, dialect: str) -> str:
    """``sql`` with its ``JSON_TEXT(expr, 'field')`` written in ``dialect``'s JSON accessor."""
    if "JSON_TEXT(" not in sql:
        return sql
    form = _JSON_TEXT_FORMS.get(dialect)
    if form is None:
        raise ValueError(f"no JSON_TEXT form for dialect {dialect!r}")
    rendered = _JSON_TEXT.sub(form, sql)
    if "JSON_TEXT(" in rendered:
        raise ValueError(f"JSON_TEXT takes an alias.column and a quoted field name: {sql}")
    return rendered


@cache
def load_queries(path: Path, dialect: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    if path.exists():
        queries.update(parse_named(path.read_text(encoding="utf-8")))
    specific = path.with_name(f"{path.stem}.{dialect}.sql")
    if specific.exists():
        queries.update(parse_named(specific.read_text(encoding="utf-8")))
    if not queries:
        raise FileNotFoundError(f"no queries in {path} (nor {specific.name})")
    return {name: render_dialect(sql, dialect) for name, sql in queries.items()}


@cache
def to_pyformat(sql: str) -> str:
    """``:name`` -> ``%(name)s``, with literal ``%`` doubled, for psycopg."""

    def repl(m: re.Match[str]) -> str:
        token = m.group(0)
        if m.group(1):
            return f"%({m.group(1)})s"
        if token.startswith(("'", '"', "--", "/*")):
            # psycopg reads % everywhere in the text, comments included
            return token.replace("%", "%%")
        return token

    # Double the % outside strings and comments first; those are handled (once) in repl.
    out = []
    last = 0
    for m in _TOKEN.finditer(sql):
        out.append(sql[last : m.start()].replace("%", "%%"))
        out.append(repl(m))
        last = m.end()
    out.append(sql[last:].replace("%", "%%"))
    return "".join(out)


# --- array parameters (PostgreSQL) ---------------------------------------------------------
# A batch's bulk lookups send thousands of values as arrays (``unnest(CAST(:norms AS
# text[]))``). psycopg dumps a Python list element by element in Python: 11.4 ms of client
# CPU for two arrays of 4,000 names, against 1.3 ms for the same arrays written here as
# array literals (one str each, parsed by the server; measured on this machine, the query's
# wall time 14 -> 3.8 ms). The SQL is the same: CAST(:param AS text[]) reads the literal.


def text_array_literal(values: list[str]) -> str:
    """A PostgreSQL array literal of these strings: each quoted, with ``"`` and ``\\``
    escaped by a backslash, the only two characters a quoted element must escape (any other,
    commas, braces, newlines, the word NULL, stands for itself inside the quotes). Values
    never hold NUL (the graph refuses it before a lookup: ``checks.queryable``)."""
    return (
        "{"
        + ",".join(
            '"'
            + (v.replace("\\", "\\\\").replace('"', '\\"') if '"' in v or "\\" in v else v)
            + '"'
            for v in values
        )
        + "}"
    )


def int_array_literal(values: list[int]) -> str:
    """A PostgreSQL array literal of these integers."""
    return "{" + ",".join(map(str, values)) + "}"
