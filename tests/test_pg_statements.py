"""Issue 11, item 5, on PostgreSQL: every table the hot path bulk-writes is copied in binary,
and the graph's lookups run as prepared statements.

Both are easy to lose without noticing. A column type the binary COPY does not map (a new
column declared with a type missing from ``_PG_BINARY``) silently falls back to text COPY,
which escapes every JSON payload (measured: 18.5 against 11 us a journal row). And psycopg
prepares a statement only once the same SQL text has run ``prepare_threshold`` times on a
connection: SQL that interpolates a batch's values into its text, or a connection opened
with ``prepare_threshold=None`` (what a transaction-pooling pgbouncer needs), would plan
every lookup again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from journal_loader.graph import store as graph_store
from journal_loader.graph.store import GraphStore
from journal_loader.storage import Store, open_store
from journal_loader.storage.base import JOURNAL_COLUMNS
from journal_loader.storage.postgres import binary_copy_types
from tests.support.pg import drop_pg_schema, make_pg_schema

HOT_TABLES = {
    "journal": JOURNAL_COLUMNS,
    "nodes": graph_store.NODE_COLUMNS,
    "attributes": graph_store.ATTRIBUTE_COLUMNS,
    "relationships": graph_store.RELATIONSHIP_COLUMNS,
    "provenance_records": graph_store.PROVENANCE_RECORD_COLUMNS,
    "provenance_nodes": graph_store.PROVENANCE_SUBJECT_COLUMNS,
    "provenance_attributes": graph_store.PROVENANCE_SUBJECT_COLUMNS,
    "provenance_relationships": graph_store.PROVENANCE_SUBJECT_COLUMNS,
}


@pytest.mark.parametrize("table", sorted(HOT_TABLES))
def test_every_hot_table_is_copied_in_binary(table: str) -> None:
    columns = HOT_TABLES[table]
    types = binary_copy_types(table, tuple(columns))
    assert types is not None, f"{table}: some column has no binary COPY type (text COPY)"
    assert len(types) == len(columns)


def test_an_unknown_column_falls_back_to_text_copy() -> None:
    # the fallback the test above guards against, so that it can fail
    assert binary_copy_types("nodes", ("id", "no_such_column")) is None
    assert binary_copy_types("no_such_table", ("id",)) is None


@pytest.fixture
def pg_store() -> Iterator[Store]:
    url, schema = make_pg_schema()
    store = open_store(url)
    try:
        yield store
    finally:
        store.dispose()
        drop_pg_schema(schema)


@pytest.mark.postgres
def test_graph_lookups_run_as_prepared_statements(pg_store: Store) -> None:
    graph = GraphStore(pg_store)
    with pg_store.transaction() as tx:
        for i in range(8):  # one batch's worth of lookups, again and again, new values each
            graph.prefetch_nodes(tx, [("Company", f"acme {i}")], [("Company", f"K{i}")])
            graph.prefetch_relationships(tx, [(i, i + 1)])
            graph.prefetch_attributes(tx, [i])
            graph.find_nodes(tx, "Company", f"acme {i}", f"K{i}", None)
        prepared = [
            statement
            for (statement,) in tx.fetchall("SELECT statement FROM pg_prepared_statements")
        ]
    # psycopg names its automatic prepared statements; the text is the SQL as sent
    for needle in (
        "unnest(CAST($1 AS text[]), CAST($2 AS text[])) AS q(node_type, norm_name)",
        "unnest(CAST($1 AS bigint[]), CAST($2 AS bigint[])) AS q(s, t)",
        "unnest(CAST($1 AS bigint[])) AS q(node_id)",
        "WHERE node_type = $1 AND norm_name = $2",
    ):
        assert any(needle in s for s in prepared), (needle, prepared)
