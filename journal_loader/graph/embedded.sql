-- Lookups and updates of the embedded graph (journal_loader/graph/embedded.py).
-- Inserts are bulk (Tx.insert_rows); these run per cache miss or per change.

-- name: find_nodes
-- Candidates for an entity: every node with its name, and the node with its external key.
-- Two indexed branches, not one OR: neither SQLite nor a generic PostgreSQL plan can serve
-- `norm_name = x OR external_key = y` from the two indexes (the key index is partial), and
-- the OR form scanned every node per lookup (measured: a 50k-row load took minutes).
SELECT id, external_key, norm_name
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name
UNION
SELECT id, external_key, norm_name
FROM nodes
WHERE node_type = :node_type AND external_key = :external_key

-- name: find_attributes
SELECT id, attr_type, value FROM attributes WHERE node_id = :node_id

-- name: find_relationship
SELECT id, strength
FROM relationships
WHERE source_node_id = :source_node_id AND rel_type = :rel_type
  AND target_node_id = :target_node_id

-- name: assign_external_key
-- An entity first named without its key (a registered agent) gets the key when its own row
-- arrives; only a keyless node is changed, so a concurrent assignment cannot be overwritten.
UPDATE nodes SET external_key = :external_key, updated_at = :updated_at
WHERE id = :id AND external_key IS NULL

-- name: update_relationship
UPDATE relationships
SET strength = :strength, valid_from = :valid_from, valid_to = :valid_to,
    metadata = :metadata, updated_at = :updated_at
WHERE id = :id
