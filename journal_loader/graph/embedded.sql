-- Lookups and updates of the embedded graph (journal_loader/graph/embedded.py), run by
-- journal_loader/graph/store.py.
-- Inserts are bulk (Tx.insert_rows); these run per cache miss or per change.

-- name: find_nodes
-- Candidates for an entity, in one round trip: the nodes with its name and the node with its
-- external key. Branches rather than one OR: each is an index search (the name-only nodes in
-- uq_nodes_type_name_unkeyed, the keyed ones in ix_nodes_type_name_keyed, the key in
-- uq_nodes_type_key); with OR, SQLite scanned every node of the type. A partial index serves
-- only a query whose WHERE says its condition: hence the IS NULL / IS NOT NULL.
SELECT id, external_key, norm_name, 0 AS via_alias
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NULL
UNION ALL
SELECT id, external_key, norm_name, 0
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NOT NULL
UNION ALL
SELECT id, external_key, norm_name, 0
FROM nodes
WHERE node_type = :node_type AND external_key = :external_key AND norm_name <> :norm_name

-- name: find_nodes_and_aliases
-- The same, and the nodes that have the name as an alias (via_alias = 1), once the graph has
-- aliases (any_alias). {alias_type} is the alias attribute's type as a quoted literal
-- (graph/store.py, alias_literal), not a parameter: only a literal lets the planner use the
-- type's partial index (ix_attributes_alias_*, migration 0010), on SQLite and in
-- PostgreSQL's generic plans alike.
SELECT id, external_key, norm_name, 0 AS via_alias
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NULL
UNION ALL
SELECT id, external_key, norm_name, 0
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NOT NULL
UNION ALL
SELECT id, external_key, norm_name, 0
FROM nodes
WHERE node_type = :node_type AND external_key = :external_key AND norm_name <> :norm_name
UNION ALL
SELECT n.id, n.external_key, n.norm_name, 1
FROM attributes a JOIN nodes n ON n.id = a.node_id
WHERE a.attr_type = {alias_type} AND a.norm_value = :norm_name AND n.node_type = :node_type

-- name: find_keyless_nodes
-- For an entity with a key the cache does not know: the node with its key, and the nodes of
-- its type and name that have no key (the only ones it can match by name: Resolver._resolve).
-- Not the keyed nodes with its name, which find_nodes reads: a keyed entity never matches
-- them, and their number grows with the graph where names repeat (the example's companies:
-- 15.6 a name at a million rows, each a row read, 44 us a lookup against 7.6 for a name-only
-- type; issue 11, bench/probe_scale.py).
SELECT id, external_key, norm_name, 0 AS via_alias
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NULL
UNION ALL
SELECT id, external_key, norm_name, 0
FROM nodes
WHERE node_type = :node_type AND external_key = :external_key

-- name: find_keyless_nodes_and_aliases
-- The same, and the nodes without a key that have the name as an alias (via_alias = 1;
-- {alias_type}: see find_nodes_and_aliases).
SELECT id, external_key, norm_name, 0 AS via_alias
FROM nodes
WHERE node_type = :node_type AND norm_name = :norm_name AND external_key IS NULL
UNION ALL
SELECT id, external_key, norm_name, 0
FROM nodes
WHERE node_type = :node_type AND external_key = :external_key
UNION ALL
SELECT n.id, n.external_key, n.norm_name, 1
FROM attributes a JOIN nodes n ON n.id = a.node_id
WHERE a.attr_type = {alias_type} AND a.norm_value = :norm_name AND n.node_type = :node_type
  AND n.external_key IS NULL

-- name: any_alias
-- (the type's partial index: see find_nodes_and_aliases)
SELECT 1 FROM attributes WHERE attr_type = {alias_type} LIMIT 1

-- name: alias_index_exists
-- (GraphStore.ensure_alias_index)
SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :name

-- name: find_attributes
SELECT id, attr_type, value FROM attributes WHERE node_id = :node_id

-- name: find_relationship
SELECT id, strength
FROM relationships
WHERE source_node_id = :source_node_id AND rel_type = :rel_type
  AND target_node_id = :target_node_id

-- name: find_relationships_between
-- Every relationship from one node to another: the one proposed and its opposites at once.
SELECT id, rel_type, strength
FROM relationships
WHERE source_node_id = :source_node_id AND target_node_id = :target_node_id

-- name: find_relationships_between_typed
-- find_relationships_between for a graph whose config names its relationship types
-- ({rel_types}: their checked literals, GraphStore.find_relationships_between): a search of
-- the unique index on all three columns per type, not a walk of every relationship of the
-- source (tens of thousands for a hub: see prefetch_relationships_typed).
SELECT id, rel_type, strength
FROM relationships
WHERE source_node_id = :source_node_id AND rel_type IN ({rel_types})
  AND target_node_id = :target_node_id

-- name: load_fuzzy
-- Fuzzy matching without pg_trgm: a type's names not yet in the in-process trigram index.
SELECT id, external_key, norm_name, fuzzy_key
FROM nodes
WHERE node_type = :node_type AND id > :after AND fuzzy_key IS NOT NULL
ORDER BY id

-- name: find_fuzzy_pg_trgm
-- PostgreSQL with pg_trgm: candidates through the GIN index ix_nodes_fuzzy_key_trgm, at the
-- threshold set by set_trgm_threshold (a little below the configured one); the score that
-- decides is computed in Python (journal_loader/graph/fuzzy.py). {pg_trgm} is the schema
-- pg_trgm is installed in, quoted, from pg_extension.
SELECT id, external_key, norm_name, fuzzy_key
FROM nodes
WHERE node_type = :node_type AND fuzzy_key OPERATOR({pg_trgm}.%) :fuzzy_key

-- name: set_trgm_threshold
SELECT set_config('pg_trgm.similarity_threshold', :limit, true)

-- name: assign_external_key
-- An entity first named without its key (a registered agent) gets the key when its own row
-- arrives; only a keyless node is changed, so a concurrent assignment cannot be overwritten.
UPDATE nodes SET external_key = :external_key, updated_at = :updated_at
WHERE id = :id AND external_key IS NULL

-- name: update_relationship
-- A higher strength: the validity dates and metadata given replace the stored ones, those
-- not given (NULL) are kept.
UPDATE relationships
SET strength = :strength, valid_from = COALESCE(:valid_from, valid_from),
    valid_to = COALESCE(:valid_to, valid_to), metadata = COALESCE(:metadata, metadata),
    updated_at = :updated_at
WHERE id = :id
