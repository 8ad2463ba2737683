"""The named-query text (journal_loader/storage/sql.py): blocks split by ``-- name:``, and
``to_pyformat``'s placeholders, which must see comments as comments: an apostrophe in a
``--`` comment once read as the start of a string literal hid the ``:params`` after it."""

from __future__ import annotations

from journal_loader.storage.sql import parse_named, to_pyformat


def test_an_apostrophe_in_a_comment_starts_no_string() -> None:
    text = (
        "-- name: marks\n"
        "-- the chunk's last events (an apostrophe, then 100% of them)\n"
        "SELECT x FROM journal WHERE source_id = :source_id AND position > :after\n"
        "/* the plan's position */ AND payload::json ->> 'name' = :name\n"
    )
    sql = parse_named(text)["marks"]
    assert to_pyformat(sql) == (
        "-- the chunk's last events (an apostrophe, then 100%% of them)\n"
        "SELECT x FROM journal WHERE source_id = %(source_id)s AND position > %(after)s\n"
        "/* the plan's position */ AND payload::json ->> 'name' = %(name)s"
    )


def test_strings_and_comments_keep_what_is_inside_them() -> None:
    sql = "SELECT '-- :not_a_param', 'it''s :no', \"odd'name\" -- :nor_this\nFROM t WHERE a = :a"
    assert to_pyformat(sql) == (
        "SELECT '-- :not_a_param', 'it''s :no', \"odd'name\" -- :nor_this\nFROM t WHERE a = %(a)s"
    )
    assert to_pyformat("SELECT a % 2 /* 5% */ FROM t -- 1%\n") == (
        "SELECT a %% 2 /* 5%% */ FROM t -- 1%%\n"
    )


def test_every_shipped_query_has_the_same_params_on_both_paths() -> None:
    """A query reaches the database through SQLAlchemy's ``text`` (its own ``:param``
    parser) or, on hot paths, through psycopg after ``to_pyformat``: both must see the same
    parameters, in every dialect, or one path fails on a query the other runs."""
    import re
    from pathlib import Path

    from sqlalchemy import text

    import journal_loader.storage
    from journal_loader.storage.sql import load_queries

    root = Path(journal_loader.storage.__file__).parent / "queries"
    checked = 0
    for stem in sorted({p.name.split(".")[0] for p in root.glob("*.sql")}):
        path = root / f"{stem}.sql"  # queue.sql does not exist: PostgreSQL only
        for dialect in ("sqlite", "postgresql"):
            if not path.exists() and not path.with_name(f"{stem}.{dialect}.sql").exists():
                continue
            for name, sql in load_queries(path, dialect).items():
                psycopg_params = set(re.findall(r"%\((\w+)\)s", to_pyformat(sql)))
                assert psycopg_params == set(text(sql)._bindparams), (path.name, dialect, name)
                checked += 1
    assert checked > 50
