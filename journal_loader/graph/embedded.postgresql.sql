-- PostgreSQL-only queries of the embedded graph (run by journal_loader/graph/store.py): a
-- batch's lookups in one round trip each (EmbeddedGraph.prefetch; arrays are unnested
-- pairwise), and whether pg_trgm can find fuzzy candidates.

-- name: prefetch_nodes
-- Each lookup is a LATERAL subquery fenced with OFFSET 0, so it stays an index scan per
-- (type, name) or (type, key) asked for. A plain join of unnest(...) with nodes let the
-- planner pick a merge join over a sorted (parallel) scan of the whole table: 83-102 ms
-- for 1,500 names on a graph of 87k nodes, growing with the graph, against 8 ms as index
-- lookups (EXPLAIN ANALYZE, PostgreSQL 15). The OFFSET 0 in the subquery keeps the planner
-- from pulling it up into that join. Same answers: tests/test_prefetch.py.
SELECT n.id, n.external_key, n.norm_name, n.node_type, 0 AS via_alias
FROM unnest(CAST(:types AS text[]), CAST(:norms AS text[])) AS q(node_type, norm_name)
CROSS JOIN LATERAL (
  SELECT n.id, n.external_key, n.norm_name, n.node_type FROM nodes n
  WHERE n.node_type = q.node_type AND n.norm_name = q.norm_name AND n.external_key IS NULL
  UNION ALL
  SELECT n.id, n.external_key, n.norm_name, n.node_type FROM nodes n
  WHERE n.node_type = q.node_type AND n.norm_name = q.norm_name
    AND n.external_key IS NOT NULL
  OFFSET 0
) AS n
UNION ALL
SELECT n.id, n.external_key, n.norm_name, n.node_type, 0
FROM unnest(CAST(:key_types AS text[]), CAST(:keys AS text[])) AS q(node_type, external_key)
CROSS JOIN LATERAL (
  SELECT n.id, n.external_key, n.norm_name, n.node_type FROM nodes n
  WHERE n.node_type = q.node_type AND n.external_key = q.external_key OFFSET 0
) AS n
UNION ALL
-- the names only entities with a key have in the batch: their keyless nodes (2), the only
-- ones such an entity can match by name (find_keyless_nodes in embedded.sql says why)
SELECT n.id, n.external_key, n.norm_name, n.node_type, 2
FROM unnest(CAST(:keyless_types AS text[]), CAST(:keyless_norms AS text[]))
  AS q(node_type, norm_name)
CROSS JOIN LATERAL (
  SELECT n.id, n.external_key, n.norm_name, n.node_type FROM nodes n
  WHERE n.node_type = q.node_type AND n.norm_name = q.norm_name AND n.external_key IS NULL
  OFFSET 0
) AS n

-- name: prefetch_aliases
-- Index lookups per name, as prefetch_nodes (why there), in the alias type's partial index
-- ({alias_type}: see find_nodes_and_aliases in embedded.sql).
-- The node of each alias found is fenced too: joined plainly, a graph without statistics
-- (never analysed: autovacuum off, or a first load outrunning it) got a hash join over a
-- sequential scan of every node, each batch (tests/test_graph_plans.py).
SELECT n.id, n.external_key, n.norm_name, n.node_type, a.norm_value
FROM unnest(CAST(:types AS text[]), CAST(:norms AS text[])) AS q(node_type, norm_name)
CROSS JOIN LATERAL (
  SELECT a.node_id, a.norm_value FROM attributes a
  WHERE a.attr_type = {alias_type} AND a.norm_value = q.norm_name OFFSET 0
) AS a
CROSS JOIN LATERAL (
  SELECT n.id, n.external_key, n.norm_name, n.node_type FROM nodes n
  WHERE n.id = a.node_id AND n.node_type = q.node_type OFFSET 0
) AS n

-- name: prefetch_relationships
-- Index lookups per (source, target) pair, as prefetch_nodes (why there).
SELECT r.source_node_id, r.target_node_id, r.id, r.rel_type, r.strength
FROM unnest(CAST(:sources AS bigint[]), CAST(:targets AS bigint[])) AS q(s, t)
CROSS JOIN LATERAL (
  SELECT r.source_node_id, r.target_node_id, r.id, r.rel_type, r.strength FROM relationships r
  WHERE r.source_node_id = q.s AND r.target_node_id = q.t OFFSET 0
) AS r

-- name: prefetch_relationships_typed
-- prefetch_relationships for a graph whose config names its relationship types: one lookup
-- per (source, type, target), each a probe of the relationships' unique index on all three
-- columns. The untyped lookup has only the index's first column to search by, then reads
-- every relationship of the source: a registered agent or a city is the source of tens of
-- thousands (24,451 for one node of a 200,000-row load), and 4,000 random pairs of that
-- graph took 239 ms against 50 ms typed (5 types). Every relationship the graph can ask about
-- between two nodes is of those types, so the answer stands for "every relationship between
-- them" (Prefetcher._prefetch_relationships). Same answers: tests/test_prefetch.py.
SELECT r.source_node_id, r.target_node_id, r.id, r.rel_type, r.strength
FROM unnest(CAST(:sources AS bigint[]), CAST(:targets AS bigint[])) AS q(s, t)
CROSS JOIN unnest(CAST(:types AS text[])) AS k(rel_type)
CROSS JOIN LATERAL (
  SELECT r.source_node_id, r.target_node_id, r.id, r.rel_type, r.strength FROM relationships r
  WHERE r.source_node_id = q.s AND r.rel_type = k.rel_type AND r.target_node_id = q.t
  OFFSET 0
) AS r

-- name: prefetch_attributes
-- An index lookup per node, as prefetch_nodes (why there). Written as
-- `WHERE node_id = ANY(:ids)`, a graph without statistics (never analysed: autovacuum off,
-- or a first load outrunning it) got a sequential scan of every attribute for any array of
-- more than a few ids, each batch: 275 ms for 1,500 ids among 5 million attributes (100 ids:
-- the same), against 5-23 ms as index lookups, and a million-row load ran at 0.55 of a
-- 20,000-row one (bench/HISTORY.md, session 18). Same answers: tests/test_prefetch.py; the
-- plans without statistics: tests/test_graph_plans.py.
SELECT a.node_id, a.id, a.attr_type, a.value
FROM unnest(CAST(:ids AS bigint[])) AS q(node_id)
CROSS JOIN LATERAL (
  SELECT a.node_id, a.id, a.attr_type, a.value FROM attributes a
  WHERE a.node_id = q.node_id OFFSET 0
) AS a

-- name: pg_trgm_schema
-- Fuzzy matching through pg_trgm (GraphStore.pg_trgm_ready): the schema the extension is
-- installed in (its operator and opclass are qualified with it), NULL when it is not.
SELECT n.nspname FROM pg_extension e
JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'

-- name: alias_index_exists
-- (GraphStore.ensure_alias_index; in the search_path, where the graph's tables are)
SELECT 1 WHERE to_regclass(:name) IS NOT NULL

-- name: index_is_valid
-- NULL: no such index; false: a CREATE INDEX CONCURRENTLY that did not finish.
SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:name)
