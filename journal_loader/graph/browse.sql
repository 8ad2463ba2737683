-- Read-only views of the embedded graph for `journal-loader graph` (journal_loader/graph/browse.py).
-- Every lookup of one node goes through an index: nodes' primary key,
-- ix_nodes_type_name_keyed, uq_nodes_type_name_unkeyed, uq_nodes_type_key, uq_relationships_endpoints (source first), ix_relationships_target,
-- uq_attributes_node_type_value (node first), ix_attributes_type_norm, and the primary key
-- (subject, id) of each kind's provenance table. Only the counts of `graph stats` read whole
-- tables. Counts of provenance read the kinds' tables (one row per row of the view
-- provenance) without joining the records, plus the rows that carry their creating
-- record's assertion (prov_record_id, migration 0011).

-- name: node_counts
SELECT node_type, COUNT(*) FROM nodes GROUP BY node_type ORDER BY node_type

-- name: relationship_counts
SELECT rel_type, COUNT(*) FROM relationships GROUP BY rel_type ORDER BY rel_type

-- name: attribute_counts
SELECT attr_type, COUNT(*) FROM attributes GROUP BY attr_type ORDER BY attr_type

-- name: provenance_counts
-- (a kind without rows is left out, as a GROUP BY would)
SELECT kind, n FROM (
  SELECT 'attribute' AS kind,
         (SELECT COUNT(*) FROM provenance_attributes)
         + (SELECT COUNT(*) FROM attributes WHERE prov_record_id IS NOT NULL) AS n
  UNION ALL
  SELECT 'node',
         (SELECT COUNT(*) FROM provenance_nodes)
         + (SELECT COUNT(*) FROM nodes WHERE prov_record_id IS NOT NULL)
  UNION ALL
  SELECT 'relationship',
         (SELECT COUNT(*) FROM provenance_relationships)
         + (SELECT COUNT(*) FROM relationships WHERE prov_record_id IS NOT NULL)
) counts
WHERE n > 0

-- name: opposing_pairs
-- Conflicts: pairs of nodes with a relationship of one type and one of the type opposing
-- it, in the same direction (both are stored; the later one with its strength
-- times the conflict penalty).
SELECT COUNT(*)
FROM relationships a
JOIN relationships b
  ON b.source_node_id = a.source_node_id AND b.rel_type = :other_type
 AND b.target_node_id = a.target_node_id
WHERE a.rel_type = :rel_type

-- name: node_types
-- The distinct node types, one index probe each rather than a pass over every node: a loose
-- index scan over each of the two partial indexes that lead with the type and together hold
-- every node (uq_nodes_type_key: keyed nodes; uq_nodes_type_name_unkeyed: the others).
WITH RECURSIVE
keyed(node_type) AS (
    SELECT MIN(node_type) FROM nodes WHERE external_key IS NOT NULL
    UNION ALL
    SELECT (SELECT MIN(n.node_type) FROM nodes n
            WHERE n.external_key IS NOT NULL AND n.node_type > keyed.node_type)
    FROM keyed WHERE keyed.node_type IS NOT NULL
),
unkeyed(node_type) AS (
    SELECT MIN(node_type) FROM nodes WHERE external_key IS NULL
    UNION ALL
    SELECT (SELECT MIN(n.node_type) FROM nodes n
            WHERE n.external_key IS NULL AND n.node_type > unkeyed.node_type)
    FROM unkeyed WHERE unkeyed.node_type IS NOT NULL
)
SELECT node_type FROM keyed WHERE node_type IS NOT NULL
UNION
SELECT node_type FROM unkeyed WHERE node_type IS NOT NULL
ORDER BY node_type

-- name: node
SELECT id, node_type, name, external_key, created_at, updated_at FROM nodes WHERE id = :id

-- name: nodes_by_name
-- One search per partial index (see find_nodes in embedded.sql)
SELECT id, node_type, name, external_key
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NULL
UNION ALL
SELECT id, node_type, name, external_key
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NOT NULL
ORDER BY id

-- name: nodes_by_alias
-- ({alias_type}: see find_nodes_and_aliases in embedded.sql)
SELECT n.id, n.node_type, n.name, n.external_key
FROM attributes a JOIN nodes n ON n.id = a.node_id
WHERE a.attr_type = {alias_type} AND a.norm_value = :norm_name AND n.node_type = :node_type
ORDER BY n.id

-- name: nodes_by_key
SELECT id, node_type, name, external_key
FROM nodes
WHERE node_type = :node_type AND external_key = :external_key
ORDER BY id

-- name: node_attributes
-- Each attribute with how many records asserted it and the first of them. (The tables of the
-- view provenance, not the view: a view outer-joined here would be built whole first.)
-- The first assertion is the creating record's, on the row itself, where the row has it (it
-- came before any other: migration 0011); else the kind's table's first.
SELECT a.id, a.attr_type, a.value,
       (SELECT COUNT(*) FROM provenance_attributes c WHERE c.subject_id = a.id)
       + CASE WHEN a.prov_record_id IS NULL THEN 0 ELSE 1 END AS assertions,
       r.source_id, r.record_offset
FROM attributes a
LEFT JOIN provenance_attributes p
       ON a.prov_record_id IS NULL
      AND p.subject_id = a.id
      AND p.id = (SELECT MIN(f.id) FROM provenance_attributes f WHERE f.subject_id = a.id)
LEFT JOIN provenance_records r ON r.id = COALESCE(a.prov_record_id, p.record_id)
WHERE a.node_id = :id
ORDER BY a.attr_type, a.id

-- name: out_counts
SELECT rel_type, COUNT(*) FROM relationships WHERE source_node_id = :id
GROUP BY rel_type ORDER BY rel_type

-- name: in_counts
SELECT rel_type, COUNT(*) FROM relationships WHERE target_node_id = :id
GROUP BY rel_type ORDER BY rel_type

-- name: relationships_out
SELECT r.id, r.rel_type, r.strength, n.id, n.node_type, n.name, n.external_key
FROM relationships r JOIN nodes n ON n.id = r.target_node_id
WHERE r.source_node_id = :id
ORDER BY r.id
LIMIT :limit

-- name: relationships_in
SELECT r.id, r.rel_type, r.strength, n.id, n.node_type, n.name, n.external_key
FROM relationships r JOIN nodes n ON n.id = r.source_node_id
WHERE r.target_node_id = :id
ORDER BY r.id
LIMIT :limit

-- name: node_provenance_count
SELECT (SELECT COUNT(*) FROM provenance_nodes WHERE subject_id = :id)
       + (SELECT COUNT(*) FROM nodes WHERE id = :id AND prov_record_id IS NOT NULL)

-- name: provenance
-- The records that asserted a subject, oldest first, each with its source and the
-- RecordParsed of the run that wrote the row (line and byte range; the same join as
-- `lineage`, through ix_journal_source_offset).
SELECT p.id, p.source_id, p.record_offset, p.fact_index, p.run_id, p.confidence,
       s.file_name, s.source_type, rp.payload
FROM provenance p
LEFT JOIN sources s ON s.source_id = p.source_id
LEFT JOIN journal rp
       ON rp.source_id = p.source_id AND rp.record_offset = p.record_offset
      AND rp.event_type = 'RecordParsed' AND rp.run_id = p.run_id
WHERE p.subject_kind = :kind AND p.subject_id = :id
ORDER BY p.id
LIMIT :limit
