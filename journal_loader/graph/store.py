"""The embedded graph's SQL: the one module of ``journal_loader.graph`` that runs queries on
the graph's tables (``nodes``, ``attributes``, ``relationships``, ``provenance_records``,
``provenance_nodes``, ``provenance_attributes``, ``provenance_relationships``).

The queries are named text in ``embedded.sql`` (with ``embedded.postgresql.sql``: the bulk
lookups of a batch, and pg_trgm) and ``browse.sql`` (``journal-loader graph ...``). Every
method here is one statement, so a cache miss of the graph costs one call and one round
trip; callers keep the decisions (what to look up, what the answer means).

The trigram index fuzzy matching uses on PostgreSQL (``ix_nodes_fuzzy_key_trgm``) is built by
migration 0005; ``pg_trgm_ready`` only reads the catalogue to see whether it can be used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import describe
from journal_loader.storage.sql import int_array_literal, load_queries, text_array_literal

log = logging.getLogger("journal_loader.graph")

FUZZY_INDEX_NAME = "ix_nodes_fuzzy_key_trgm"

# Alias matching reads the attributes of ONE type (the graph section's alias_attribute,
# "nameAlias" by default) by normalised value. Migration 0010 replaced the index of every
# attribute by (type, value), ix_attributes_type_norm, with a partial index per alias type:
# the example writes ~5.7 attributes a record and none of them an alias, and that index was
# one random-key entry per attribute (205 bytes a record, and at 300,000 rows 30% of the
# bytes a batch wrote: 59 -> 41 KB a record, bench/probe_scale.py). The default type's index
# is built by 0010; another type's by the first run that uses it (ensure_alias_index).
DEFAULT_ALIAS_TYPE = "nameAlias"
_ALIAS_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ .\-]{0,99}$")  # config/sections.py's _TYPE_NAME


def alias_literal(alias_type: str) -> str:
    """The alias type as a quoted SQL literal, for the queries' ``{alias_type}``: the planner
    uses a partial index only for a query whose WHERE says the index's condition, and a
    bound parameter does not say it (SQLite; PostgreSQL's generic plans). The type is checked
    against the config's rule for type names (letters, digits, ``_ .-``: no quote can reach
    the text), and quotes are doubled all the same."""
    if not _ALIAS_TYPE.match(alias_type):
        raise ValueError(f"{alias_type!r} is not a valid attribute type name")
    return "'" + alias_type.replace("'", "''") + "'"


def alias_index_name(alias_type: str) -> str:
    """``ix_attributes_alias_<the type's letters and digits>_<8 hex of its SHA-256>``: readable,
    distinct for distinct types, and within PostgreSQL's 63 characters."""
    slug = re.sub(r"[^a-z0-9]+", "_", alias_type.lower()).strip("_")[:24]
    digest = hashlib.sha256(alias_type.encode()).hexdigest()[:8]
    return f"ix_attributes_alias_{slug}_{digest}"


def alias_index_sql(alias_type: str) -> str:
    """The DDL of an alias type's index: (normalised value, node) of that type's attributes."""
    return (
        f"CREATE INDEX IF NOT EXISTS {alias_index_name(alias_type)} ON attributes"
        f" (norm_value, node_id) WHERE attr_type = {alias_literal(alias_type)}"
    )


# The creating record's provenance, last in each created row (storage/schema.py,
# _created_by_columns; filled in when the record ends: RowBuilder._provenance_rows)
CREATED_BY_COLUMNS = ("prov_id", "prov_record_id", "prov_fact_index", "prov_confidence")
NODE_COLUMNS = (
    "id",
    "node_type",
    "name",
    "norm_name",
    "external_key",
    "created_at",
    "updated_at",
    "fuzzy_key",
    *CREATED_BY_COLUMNS,
)
ATTRIBUTE_COLUMNS = (
    "id",
    "node_id",
    "attr_type",
    "value",
    "norm_value",
    "created_at",
    *CREATED_BY_COLUMNS,
)
RELATIONSHIP_COLUMNS = (
    "id",
    "source_node_id",
    "rel_type",
    "target_node_id",
    "strength",
    "valid_from",
    "valid_to",
    "metadata",
    "created_at",
    "updated_at",
    *CREATED_BY_COLUMNS,
)
PROVENANCE_RECORD_COLUMNS = (
    "id",
    "source_id",
    "record_offset",
    "run_id",
    "created_at",
    "confidence",
)
# the columns of each kind's table (provenance_nodes, _attributes, _relationships)
PROVENANCE_SUBJECT_COLUMNS = ("subject_id", "id", "record_id", "fact_index", "confidence")


@dataclass(slots=True)
class RowBuffers:
    """A batch's (in safe mode a record's) rows, buffered until ``GraphStore.write``
    writes them, each a tuple in its table's column order (the ``*_COLUMNS`` here).
    The graph's state holds them (``graph/state.py``); here, beside the columns and the
    statements, is what they are."""

    nodes: list[tuple[Any, ...]] = field(default_factory=list)
    key_updates: list[dict[str, Any]] = field(default_factory=list)
    attributes: list[tuple[Any, ...]] = field(default_factory=list)
    relationships: list[tuple[Any, ...]] = field(default_factory=list)
    rel_updates: list[dict[str, Any]] = field(default_factory=list)
    provenance_records: list[tuple[Any, ...]] = field(default_factory=list)
    provenance_nodes: list[tuple[Any, ...]] = field(default_factory=list)
    provenance_attributes: list[tuple[Any, ...]] = field(default_factory=list)
    provenance_relationships: list[tuple[Any, ...]] = field(default_factory=list)

    def marks(self) -> tuple[int, ...]:
        return (
            len(self.nodes),
            len(self.key_updates),
            len(self.attributes),
            len(self.relationships),
            len(self.rel_updates),
            len(self.provenance_records),
            len(self.provenance_nodes),
            len(self.provenance_attributes),
            len(self.provenance_relationships),
        )

    def truncate(self, marks: tuple[int, ...]) -> None:
        for buf, mark in zip(self._all(), marks, strict=True):
            del buf[mark:]

    def clear(self) -> None:
        for buf in self._all():
            buf.clear()

    def _all(self) -> tuple[list[Any], ...]:
        return (
            self.nodes,
            self.key_updates,
            self.attributes,
            self.relationships,
            self.rel_updates,
            self.provenance_records,
            self.provenance_nodes,
            self.provenance_attributes,
            self.provenance_relationships,
        )


class GraphStore:
    """The embedded graph's queries on one store, run in the batch's transaction."""

    def __init__(self, store: Store) -> None:
        self._q = load_queries(Path(__file__).with_name("embedded.sql"), store.dialect)
        # A lookup is a round trip on PostgreSQL (measured here: 90 us for SELECT 1, 145 for
        # find_nodes), in-process on SQLite (a few us): only PostgreSQL gains from looking up
        # a batch in bulk before resolving it. (Measured on SQLite, the example's batch
        # collected first and looked up with json_each: 387 against 372 us of CPU per record
        # without; the Python that sorts a batch's identities costs what the queries save.)
        self.bulk_lookups = store.dialect == "postgresql"
        self.may_have_pg_trgm = store.dialect == "postgresql"
        self._dates_as_text = store.dialect == "sqlite"  # SQLite's DATE is ISO text
        self._fuzzy_sql: str | None = None
        self._alias_sql: dict[tuple[str, str], str] = {}
        self._typed_sql: dict[frozenset[str], str | None] = {}

    def _with_alias(self, name: str, alias_type: str) -> str:
        """A query with the alias type's literal in place of ``{alias_type}`` (made once)."""
        sql = self._alias_sql.get((name, alias_type))
        if sql is None:
            sql = self._q[name].replace("{alias_type}", alias_literal(alias_type))
            self._alias_sql[(name, alias_type)] = sql
        return sql

    # --- the alias type's index ------------------------------------------------------------
    def ensure_alias_index(self, store: Store, alias_type: str) -> bool:
        """Is the alias type's partial index there? The default type's is built by migration
        0010; another type's is built here, once, by the first run that uses it.

        Why DDL in a run here, when pg_trgm_ready only reads: without its index, an alias
        lookup scans every attribute, and any_alias does so at every batch until the graph
        has an alias; the index is small (the type's attributes only). The build runs in a
        transaction of its own under an advisory lock, so two runs starting at once build
        it once (PostgreSQL's CREATE INDEX IF NOT EXISTS is not safe against a concurrent
        one). Where it cannot be built (a read-only store, a role that may not create
        indexes), a warning gives the command and the lookups stay correct, only slower.
        Pinned by tests/test_graph_aliases.py."""
        name = alias_index_name(alias_type)
        exists = self._q["alias_index_exists"]
        try:
            with store.read() as conn:
                if conn.execute(text(exists), {"name": name}).first() is not None:
                    return True
            if getattr(store, "open_mode", ""):  # SQLite opened read-only
                raise PermissionError("the store is open read-only")
            with store.transaction() as tx:
                tx.advisory_xact_lock("alias-index", [alias_type])
                if tx.fetchone(exists, {"name": name}) is None:
                    log.info("building %s, the index of %r attributes (once)", name, alias_type)
                    tx.execute(alias_index_sql(alias_type), {})
            return True
        except Exception as e:
            log.warning(
                "alias matching on %r attributes without an index (%s): lookups scan the "
                "attributes; as the owner of attributes: %s",
                alias_type,
                describe(e),
                alias_index_sql(alias_type),
            )
            return False

    # --- resolution ------------------------------------------------------------------------
    def any_alias(self, tx: Tx, alias_type: str) -> bool:
        return tx.fetchone(self._with_alias("any_alias", alias_type), {}) is not None

    def find_nodes(
        self, tx: Tx, node_type: str, norm: str, key: str | None, alias_type: str | None
    ) -> list[Any]:
        """(id, external key, normalised name, via alias) of the nodes of the type with the
        name or the key, and with ``alias_type`` the nodes that have the name as an alias."""
        if alias_type is not None:
            return tx.fetchall(
                self._with_alias("find_nodes_and_aliases", alias_type),
                {"node_type": node_type, "norm_name": norm, "external_key": key},
            )
        return tx.fetchall(
            self._q["find_nodes"],
            {"node_type": node_type, "norm_name": norm, "external_key": key},
        )

    def find_keyless_nodes(
        self, tx: Tx, node_type: str, norm: str, key: str, alias_type: str | None
    ) -> list[Any]:
        """``find_nodes`` for an entity with a key: the node with the key, and of the nodes
        with the name (or, with ``alias_type``, the alias) only those without a key."""
        params = {"node_type": node_type, "norm_name": norm, "external_key": key}
        if alias_type is not None:
            sql = self._with_alias("find_keyless_nodes_and_aliases", alias_type)
            return tx.fetchall(sql, params)
        return tx.fetchall(self._q["find_keyless_nodes"], params)

    def find_attributes(self, tx: Tx, node_id: int) -> list[Any]:
        """(id, type, value) of a node's attributes."""
        return tx.fetchall(self._q["find_attributes"], {"node_id": node_id})

    def find_relationship(self, tx: Tx, source_id: int, rel_type: str, target_id: int) -> Any:
        """(id, strength) of one relationship, or None."""
        return tx.fetchone(
            self._q["find_relationship"],
            {"source_node_id": source_id, "rel_type": rel_type, "target_node_id": target_id},
        )

    def find_relationships_between(
        self, tx: Tx, source_id: int, target_id: int, types: frozenset[str] | None = None
    ) -> list[Any]:
        """(id, type, strength) of every relationship from one node to the other, or, given
        ``types``, of every relationship of those types."""
        params = {"source_node_id": source_id, "target_node_id": target_id}
        sql = None if types is None else self._typed_between(types)
        return tx.fetchall(sql or self._q["find_relationships_between"], params)

    def _typed_between(self, types: frozenset[str]) -> str | None:
        """find_relationships_between_typed with the types' literals (made once per set);
        None when a name is not one a config accepts (then the untyped query serves)."""
        sql = self._typed_sql.get(types, "")
        if sql == "":
            if types and all(_ALIAS_TYPE.match(t) for t in types):
                literals = ", ".join(alias_literal(t) for t in sorted(types))
                sql = self._q["find_relationships_between_typed"].replace("{rel_types}", literals)
            else:
                sql = None
            self._typed_sql[types] = sql
        return sql

    # --- fuzzy candidates ------------------------------------------------------------------
    def pg_trgm_ready(self, store: Store) -> bool:
        """Can fuzzy candidates come from pg_trgm? Its extension and the trigram index of
        migration 0005 must be there (reads only: no DDL in a run). If not, a log line says
        why, and fuzzy matching finds its candidates in process."""
        try:
            with store.read() as conn:
                schema = conn.execute(text(self._q["pg_trgm_schema"])).scalar()
                if schema is None:
                    log.info(
                        "pg_trgm is not installed: fuzzy candidates come from an in-process index"
                    )
                    return False
                valid = conn.execute(
                    text(self._q["index_is_valid"]), {"name": FUZZY_INDEX_NAME}
                ).scalar()
        except Exception as e:  # the catalogue unreadable: the in-process index still works
            log.warning(
                "fuzzy matching without pg_trgm (%s): candidates come from an in-process index",
                describe(e),
            )
            return False
        if not valid:
            # pg_trgm installed after migration 0005, or the index dropped
            log.warning(
                "fuzzy matching without pg_trgm (%s %s; as the owner of nodes: CREATE INDEX "
                'CONCURRENTLY %s ON nodes USING gin (fuzzy_key "%s".gin_trgm_ops)): candidates '
                "come from an in-process index",
                FUZZY_INDEX_NAME,
                "is not valid" if valid is not None else "does not exist",
                FUZZY_INDEX_NAME,
                schema,
            )
            return False
        self._fuzzy_sql = self._q["find_fuzzy_pg_trgm"].replace("{pg_trgm}", _quote_ident(schema))
        return True

    def set_trgm_threshold(self, tx: Tx, limit: float) -> None:
        tx.fetchone(self._q["set_trgm_threshold"], {"limit": str(limit)})

    def fuzzy_candidates(self, tx: Tx, node_type: str, key: str) -> list[Any]:
        """(id, external key, normalised name, fuzzy key) of the nodes pg_trgm finds."""
        assert self._fuzzy_sql is not None, "pg_trgm_ready() said no"
        return tx.fetchall(self._fuzzy_sql, {"node_type": node_type, "fuzzy_key": key})

    def load_fuzzy(self, tx: Tx, node_type: str, after: int) -> list[Any]:
        """(id, external key, normalised name, fuzzy key) of a type's nodes after an id."""
        return tx.fetchall(self._q["load_fuzzy"], {"node_type": node_type, "after": after})

    # --- a batch's lookups in bulk (PostgreSQL) ------------------------------------------------
    def prefetch_nodes(
        self,
        tx: Tx,
        names: list[tuple[str, str]],
        keys: list[tuple[str, str]],
        keyless_names: list[tuple[str, str]] | None = None,
    ) -> list[Any]:
        """(id, external key, normalised name, type, 0) of the nodes with these (type, name)
        and (type, key) pairs, and (..., 2) of the keyless nodes with the (type, name) pairs
        of ``keyless_names``."""
        keyless_names = keyless_names or []
        return tx.fetchall(
            self._q["prefetch_nodes"],
            {
                "types": text_array_literal([n[0] for n in names]),
                "norms": text_array_literal([n[1] for n in names]),
                "key_types": text_array_literal([k[0] for k in keys]),
                "keys": text_array_literal([k[1] for k in keys]),
                "keyless_types": text_array_literal([n[0] for n in keyless_names]),
                "keyless_norms": text_array_literal([n[1] for n in keyless_names]),
            },
        )

    def prefetch_aliases(self, tx: Tx, names: list[tuple[str, str]], alias_type: str) -> list[Any]:
        """(id, external key, normalised name, type, alias) of the nodes with these (type,
        name) pairs as an alias."""
        return tx.fetchall(
            self._with_alias("prefetch_aliases", alias_type),
            {
                "types": text_array_literal([n[0] for n in names]),
                "norms": text_array_literal([n[1] for n in names]),
            },
        )

    def prefetch_relationships(
        self, tx: Tx, pairs: list[tuple[int, int]], types: Collection[str] | None = None
    ) -> list[Any]:
        """(source, target, id, type, strength) of every relationship between the pairs, or,
        given ``types``, of every relationship of those types between them."""
        params = {
            "sources": int_array_literal([p[0] for p in pairs]),
            "targets": int_array_literal([p[1] for p in pairs]),
        }
        if types is None:
            return tx.fetchall(self._q["prefetch_relationships"], params)
        params["types"] = text_array_literal(sorted(types))
        return tx.fetchall(self._q["prefetch_relationships_typed"], params)

    def prefetch_attributes(self, tx: Tx, ids: list[int]) -> list[Any]:
        """(node id, id, type, value) of the nodes' attributes."""
        return tx.fetchall(self._q["prefetch_attributes"], {"ids": int_array_literal(ids)})

    # --- writing -------------------------------------------------------------------------------
    def write(self, tx: Tx, b: RowBuffers) -> None:
        """A batch's (or, in safe mode, a record's) buffered rows, in bulk."""
        tx.insert_rows("nodes", NODE_COLUMNS, b.nodes)
        tx.executemany(self._q["assign_external_key"], b.key_updates)
        tx.insert_rows("attributes", ATTRIBUTE_COLUMNS, b.attributes)
        relationships = b.relationships
        if self._dates_as_text:
            relationships = [_rel_row(r) for r in relationships]
        tx.insert_rows("relationships", RELATIONSHIP_COLUMNS, relationships)
        updates = b.rel_updates
        if self._dates_as_text:
            updates = [
                {**u, "valid_from": _iso(u["valid_from"]), "valid_to": _iso(u["valid_to"])}
                for u in updates
            ]
        tx.executemany(self._q["update_relationship"], updates)
        tx.insert_rows("provenance_records", PROVENANCE_RECORD_COLUMNS, b.provenance_records)
        tx.insert_rows("provenance_nodes", PROVENANCE_SUBJECT_COLUMNS, b.provenance_nodes)
        tx.insert_rows("provenance_attributes", PROVENANCE_SUBJECT_COLUMNS, b.provenance_attributes)
        tx.insert_rows(
            "provenance_relationships", PROVENANCE_SUBJECT_COLUMNS, b.provenance_relationships
        )


def _iso(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _rel_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    if row[5] is None and row[6] is None:
        return row
    return (*row[:5], _iso(row[5]), _iso(row[6]), *row[7:])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- browse (read-only views: journal_loader/graph/browse.py) --------------------------------


@cache
def _browse_queries(dialect: str) -> dict[str, str]:
    return load_queries(Path(__file__).with_name("browse.sql"), dialect)


def browse_rows(conn: Connection, dialect: str, name: str, params: Mapping[str, Any]) -> list[Any]:
    """The rows of one query of ``browse.sql``, on a read connection."""
    return list(conn.execute(text(_browse_queries(dialect)[name]), dict(params)).all())


def browse_alias_rows(
    conn: Connection, dialect: str, name: str, alias_type: str, params: Mapping[str, Any]
) -> list[Any]:
    """The rows of a ``browse.sql`` query that reads one alias type (``{alias_type}``)."""
    sql = _browse_queries(dialect)[name].replace("{alias_type}", alias_literal(alias_type))
    return list(conn.execute(text(sql), dict(params)).all())
