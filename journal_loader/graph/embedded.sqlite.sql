-- SQLite-only queries of the embedded graph (run by journal_loader/graph/store.py): a batch's
-- lookups in one statement each (EmbeddedGraph.prefetch). The pairs come as one JSON array
-- (:pairs, [[a, b], ...]) read by json_each; CROSS JOIN keeps it the outer loop, so each
-- pair is one index search (the same indexes as the single lookups in embedded.sql).

-- name: prefetch_nodes
SELECT n.id, n.external_key, n.norm_name, n.node_type, 0 AS via_alias
FROM json_each(:names) AS q
CROSS JOIN nodes n
WHERE n.node_type = json_extract(q.value, '$[0]') AND n.norm_name = json_extract(q.value, '$[1]')
UNION ALL
SELECT n.id, n.external_key, n.norm_name, n.node_type, 0
FROM json_each(:keys) AS q
CROSS JOIN nodes n
WHERE n.node_type = json_extract(q.value, '$[0]') AND n.external_key = json_extract(q.value, '$[1]')

-- name: prefetch_aliases
SELECT n.id, n.external_key, n.norm_name, n.node_type, a.norm_value
FROM json_each(:names) AS q
CROSS JOIN attributes a
CROSS JOIN nodes n
WHERE a.attr_type = :alias_type AND a.norm_value = json_extract(q.value, '$[1]')
  AND n.id = a.node_id AND n.node_type = json_extract(q.value, '$[0]')

-- name: prefetch_relationships
SELECT r.source_node_id, r.target_node_id, r.id, r.rel_type, r.strength
FROM json_each(:pairs) AS q
CROSS JOIN relationships r
WHERE r.source_node_id = json_extract(q.value, '$[0]') AND r.target_node_id = json_extract(q.value, '$[1]')

-- name: prefetch_attributes
SELECT a.node_id, a.id, a.attr_type, a.value
FROM json_each(:ids) AS q
CROSS JOIN attributes a
WHERE a.node_id = q.value
