"""Databases compared by content: the graph, sources, DLQ and journal without generated ids
and times, and the whole migrated schema as a catalogue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from journal_loader.storage import Store, open_store


def graph_snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """The graph without generated ids and times: what two equal loads must share."""
    queries = {
        "nodes": "SELECT node_type, name, norm_name, external_key FROM nodes",
        "attributes": """SELECT n.node_type, n.norm_name, n.external_key, a.attr_type, a.value
                         FROM attributes a JOIN nodes n ON n.id = a.node_id""",
        "relationships": """SELECT s.node_type, s.norm_name, s.external_key, r.rel_type,
                                   t.node_type, t.norm_name, t.external_key, r.strength
                            FROM relationships r JOIN nodes s ON s.id = r.source_node_id
                            JOIN nodes t ON t.id = r.target_node_id""",
        "provenance": """SELECT p.subject_kind,
                                COALESCE(n.node_type, an.node_type, rs.node_type),
                                COALESCE(n.norm_name, an.norm_name, rs.norm_name),
                                COALESCE(a.attr_type, r.rel_type), COALESCE(a.value, rt.norm_name),
                                p.record_offset, p.fact_index, p.confidence
                         FROM provenance p
                         LEFT JOIN nodes n ON p.subject_kind = 'node' AND n.id = p.subject_id
                         LEFT JOIN attributes a ON p.subject_kind = 'attribute' AND a.id = p.subject_id
                         LEFT JOIN nodes an ON an.id = a.node_id
                         LEFT JOIN relationships r ON p.subject_kind = 'relationship' AND r.id = p.subject_id
                         LEFT JOIN nodes rs ON rs.id = r.source_node_id
                         LEFT JOIN nodes rt ON rt.id = r.target_node_id""",
    }
    out = {}
    with store.read() as conn:
        for name, sql in queries.items():
            out[name] = sorted(
                (tuple("" if v is None else v for v in row) for row in conn.execute(text(sql))),
                key=repr,
            )
    return out


def sources_snapshot(store: Store) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT source_type, file_hash, status, records_in_file, records_processed, "
                    "records_imported, records_failed, records_skipped FROM sources ORDER BY source_id"
                )
            )
        ]


def dlq_snapshot(store: Store) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT source_id, record_offset, line_number, stage, error_type, error_message, "
                    "raw_input FROM failed_records ORDER BY source_id, record_offset"
                )
            )
        ]


def terminal_counts(store: Store) -> dict[int, int]:
    """offset -> number of terminal events (must be exactly 1 per offset for one load)."""
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT record_offset, COUNT(*) FROM journal WHERE event_type IN "
                "('ProposeSucceeded', 'RecordFailed', 'RecordSkipped') GROUP BY record_offset"
            )
        )
        return {int(r[0]): int(r[1]) for r in rows}


def content_state(db: str) -> dict[str, Any]:
    """The database by content, with sources named by their file's sha256: what a load by
    several processes must share with a sequential one. Keyed nodes are compared by type and
    key, keyless ones by type and normalised name (a node keeps the spelling of the record
    that created it, which depends on commit order); ids, times, run ids and source ids are
    left out. Used by tests/test_concurrency.py and tests/test_fleet.py."""

    def node(alias: str) -> str:  # a node's identity: its key, else its normalised name
        return f"COALESCE('key ' || {alias}.external_key, 'name ' || {alias}.norm_name)"

    queries = {
        # a keyed node's names depend on commit order (see the module docstring)
        "nodes": f"""SELECT node_type, {node("n")} FROM nodes n""",
        "attributes": f"""SELECT n.node_type, {node("n")}, a.attr_type, a.value
                          FROM attributes a JOIN nodes n ON n.id = a.node_id""",
        "relationships": f"""SELECT s.node_type, {node("s")}, r.rel_type, t.node_type,
                                    {node("t")}, r.strength
                             FROM relationships r JOIN nodes s ON s.id = r.source_node_id
                             JOIN nodes t ON t.id = r.target_node_id""",
        "provenance": f"""SELECT p.subject_kind,
                                 COALESCE(n.node_type, an.node_type, rs.node_type),
                                 COALESCE({node("n")}, {node("an")}, {node("rs")}),
                                 COALESCE(a.attr_type, r.rel_type),
                                 COALESCE(a.value, {node("rt")}),
                                 src.file_hash, p.record_offset, p.fact_index, p.confidence
                          FROM provenance p
                          JOIN sources src ON src.source_id = p.source_id
                          LEFT JOIN nodes n ON p.subject_kind = 'node' AND n.id = p.subject_id
                          LEFT JOIN attributes a
                            ON p.subject_kind = 'attribute' AND a.id = p.subject_id
                          LEFT JOIN nodes an ON an.id = a.node_id
                          LEFT JOIN relationships r
                            ON p.subject_kind = 'relationship' AND r.id = p.subject_id
                          LEFT JOIN nodes rs ON rs.id = r.source_node_id
                          LEFT JOIN nodes rt ON rt.id = r.target_node_id""",
        "sources": """SELECT file_hash, status, records_in_file, records_processed,
                             records_imported, records_failed, records_skipped FROM sources""",
        "dlq": """SELECT s.file_hash, f.record_offset, f.line_number, f.stage, f.error_type,
                         f.error_message, f.raw_input
                  FROM failed_records f JOIN sources s ON s.source_id = f.source_id""",
        "terminal_events_per_record": """
            SELECT s.file_hash, j.record_offset, COUNT(*) FROM journal j
            JOIN sources s ON s.source_id = j.source_id
            WHERE j.event_type IN ('ProposeSucceeded', 'RecordFailed', 'RecordSkipped')
            GROUP BY s.file_hash, j.record_offset""",
    }
    store = open_store(db)
    try:
        out: dict[str, Any] = {}
        with store.read() as conn:
            for name, sql in queries.items():
                out[name] = sorted(
                    (tuple("" if v is None else v for v in r) for r in conn.execute(text(sql))),
                    key=repr,
                )
        return out
    finally:
        store.dispose()


def schema_catalog(engine: Any) -> dict[str, str]:
    """Every object of a journal-loader database, as ``kind name -> definition``: columns,
    constraints, indexes, views, triggers, functions and sequences, with whitespace folded and
    the schema's own name taken out (two databases built in two schemas compare equal)."""
    import re

    def fold(sql: str | None) -> str:
        return re.sub(r"\s+", " ", sql or "").strip()

    out: dict[str, str] = {}
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            objects = conn.execute(
                text(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master "
                    "WHERE name NOT LIKE 'sqlite_%' AND name <> 'alembic_version'"
                )
            ).all()
            for kind, name, _table, sql in objects:
                if kind == "table":
                    for col in conn.execute(text(f'PRAGMA table_info("{name}")')):
                        out[f"column {name}.{col[1]}"] = (
                            f"{col[2]} notnull={col[3]} default={col[4]} pk={col[5]}"
                        )
                    for fk in conn.execute(text(f'PRAGMA foreign_key_list("{name}")')):
                        out[f"foreign key {name}.{fk[3]}"] = f"{fk[2]}.{fk[4]}"
                    for idx in conn.execute(text(f'PRAGMA index_list("{name}")')):
                        cols = [r[2] for r in conn.execute(text(f'PRAGMA index_info("{idx[1]}")'))]
                        key = (
                            idx[1]
                            if not idx[1].startswith("sqlite_autoindex")
                            else f"auto({','.join(cols)})"
                        )
                        out[f"index {name}.{key}"] = f"unique={idx[2]} partial={idx[4]} {cols}"
                if kind in ("index", "view", "trigger") and sql:
                    out[f"{kind} {name}"] = fold(sql)
        else:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()

            def strip(sql: str | None) -> str:
                return fold(sql).replace(f"{schema}.", "").replace(f'"{schema}".', "")

            queries = {
                "column": """SELECT table_name || '.' || column_name,
                                    data_type || ' ' || is_nullable || ' ' ||
                                    COALESCE(character_maximum_length::text, '') || ' ' ||
                                    COALESCE(column_default, '')
                             FROM information_schema.columns
                             WHERE table_schema = current_schema()
                               AND table_name <> 'alembic_version'""",
                "constraint": """SELECT c.conrelid::regclass::text || '.' || c.conname,
                                        pg_get_constraintdef(c.oid)
                                 FROM pg_constraint c
                                 WHERE c.connamespace = current_schema()::regnamespace
                                   AND c.conrelid::regclass::text <> 'alembic_version'""",
                "index": """SELECT indexname, indexdef FROM pg_indexes
                            WHERE schemaname = current_schema()
                              AND tablename <> 'alembic_version'""",
                "view": """SELECT viewname, definition FROM pg_views
                           WHERE schemaname = current_schema()""",
                "trigger": """SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
                              JOIN pg_class r ON r.oid = t.tgrelid
                              WHERE NOT t.tgisinternal
                                AND r.relnamespace = current_schema()::regnamespace""",
                "function": """SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
                               WHERE p.pronamespace = current_schema()::regnamespace""",
                "sequence": """SELECT s.relname, COALESCE(d.refobjid::regclass::text || '.' ||
                                      a.attname, '')
                               FROM pg_class s
                               LEFT JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')
                                 AND d.classid = 'pg_class'::regclass
                               LEFT JOIN pg_attribute a
                                 ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                               WHERE s.relkind = 'S'
                                 AND s.relnamespace = current_schema()::regnamespace""",
            }
            for kind, sql in queries.items():
                for name, definition in conn.execute(text(sql)):
                    out[f"{kind} {strip(name)}"] = strip(definition)
    return out
