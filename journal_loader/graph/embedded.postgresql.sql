-- PostgreSQL-only queries of the embedded graph (run by journal_loader/graph/store.py): a
-- batch's lookups in one round trip each (EmbeddedGraph.prefetch; arrays are unnested
-- pairwise), and whether pg_trgm can find fuzzy candidates.

-- name: prefetch_nodes
SELECT n.id, n.external_key, n.norm_name, n.node_type, 0 AS via_alias
FROM nodes n
JOIN unnest(CAST(:types AS text[]), CAST(:norms AS text[])) AS q(node_type, norm_name)
  ON n.node_type = q.node_type AND n.norm_name = q.norm_name
UNION ALL
SELECT n.id, n.external_key, n.norm_name, n.node_type, 0
FROM nodes n
JOIN unnest(CAST(:key_types AS text[]), CAST(:keys AS text[])) AS q(node_type, external_key)
  ON n.node_type = q.node_type AND n.external_key = q.external_key

-- name: prefetch_aliases
SELECT n.id, n.external_key, n.norm_name, n.node_type, a.norm_value
FROM attributes a
JOIN unnest(CAST(:types AS text[]), CAST(:norms AS text[])) AS q(node_type, norm_name)
  ON a.attr_type = :alias_type AND a.norm_value = q.norm_name
JOIN nodes n ON n.id = a.node_id AND n.node_type = q.node_type

-- name: prefetch_relationships
SELECT r.source_node_id, r.target_node_id, r.id, r.rel_type, r.strength
FROM relationships r
JOIN unnest(CAST(:sources AS bigint[]), CAST(:targets AS bigint[])) AS q(s, t)
  ON r.source_node_id = q.s AND r.target_node_id = q.t

-- name: prefetch_attributes
SELECT node_id, id, attr_type, value FROM attributes WHERE node_id = ANY(CAST(:ids AS bigint[]))

-- name: pg_trgm_schema
-- Fuzzy matching through pg_trgm (GraphStore.pg_trgm_ready): the schema the extension is
-- installed in (its operator and opclass are qualified with it), NULL when it is not.
SELECT n.nspname FROM pg_extension e
JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'

-- name: index_is_valid
-- NULL: no such index; false: a CREATE INDEX CONCURRENTLY that did not finish.
SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:name)
