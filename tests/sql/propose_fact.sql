-- A stand-in for an existing Propose API deployment, for the tests of
-- journal_loader.graph.postgres_client (and bench/bench_propose_client.py): the kind of
-- deployment that keeps the idempotency key (p_provenance_metadata) and raises its
-- exceptions. tests/sql/propose_deployment.sql models the deployment built from the Propose
-- API's public migrations (issue 14): text ids, no key kept, ambiguous answers, partial
-- writes, tables named like journal-loader's, every exception answered as `error`.
--
-- The type and the function have the deployments' exact signature (issue 3):
--   propose_fact(p_source_node_type varchar, p_source_node_name varchar,
--                p_target_node_type varchar, p_target_node_name varchar,
--                p_relationship_type varchar, p_source_name varchar, p_source_type varchar,
--                p_source_attributes jsonb DEFAULT '[]', p_target_attributes jsonb DEFAULT '[]',
--                p_relationship_strength numeric(3,2) DEFAULT 1.0,
--                p_relationship_valid_from date DEFAULT NULL,
--                p_relationship_valid_to date DEFAULT NULL,
--                p_relationship_metadata jsonb DEFAULT NULL,
--                p_provenance_confidence numeric(3,2) DEFAULT 0.9,
--                p_provenance_metadata jsonb DEFAULT NULL)
--     RETURNS propose_api_response
--
-- What it implements: allowed types (an unknown one is an `error` answer), entities by exact
-- normalised name within their type (created otherwise), attributes [{"type","value"}],
-- relationships created or `relationship_duplicate` (a higher strength raises the stored one),
-- opposing relationship types (kg_relationship_types.opposes) as `conflicts` with the new
-- relationship stored at strength * 0.7, and provenance rows per node, attribute and
-- relationship. Provenance carries p_provenance_metadata; a call repeated with the same
-- idempotency_key adds no provenance row (UNIQUE (idempotency_key, subject...)), so a
-- re-proposed in-doubt fact leaves the graph as one call would.
--
-- Test hooks: kg_faults makes the function raise a given SQLSTATE for a source node name,
-- the first `times` calls (counted by a sequence of its own: not undone by the rollback the
-- error causes). Everything lives in the current schema (the tests' own).

CREATE TYPE propose_api_response AS (
    status varchar,
    overall_confidence numeric(3,2),
    actions jsonb,
    conflicts jsonb,
    provenance_ids jsonb
);

CREATE TABLE kg_node_types (name varchar(100) PRIMARY KEY);

CREATE TABLE kg_relationship_types (
    name varchar(100) PRIMARY KEY,
    opposes varchar(100)
);

CREATE TABLE kg_nodes (
    id bigserial PRIMARY KEY,
    node_type varchar(100) NOT NULL REFERENCES kg_node_types (name),
    name varchar NOT NULL,
    norm_name varchar NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node_type, norm_name)
);

CREATE TABLE kg_attributes (
    id bigserial PRIMARY KEY,
    node_id bigint NOT NULL REFERENCES kg_nodes (id),
    attr_type varchar(100) NOT NULL,
    value text NOT NULL,
    UNIQUE (node_id, attr_type, value)
);

CREATE TABLE kg_relationships (
    id bigserial PRIMARY KEY,
    source_node_id bigint NOT NULL REFERENCES kg_nodes (id),
    rel_type varchar(100) NOT NULL REFERENCES kg_relationship_types (name),
    target_node_id bigint NOT NULL REFERENCES kg_nodes (id),
    strength numeric(3,2) NOT NULL CHECK (strength BETWEEN 0 AND 1),
    valid_from date,
    valid_to date,
    metadata jsonb,
    UNIQUE (source_node_id, rel_type, target_node_id)
);

CREATE TABLE kg_provenance (
    id bigserial PRIMARY KEY,
    subject_kind varchar(16) NOT NULL,
    subject_id bigint NOT NULL,
    source_name varchar NOT NULL,
    source_type varchar NOT NULL,
    confidence numeric(3,2) NOT NULL,
    metadata jsonb,
    idempotency_key text,
    UNIQUE (idempotency_key, subject_kind, subject_id)
);

CREATE TABLE kg_faults (
    source_node_name varchar PRIMARY KEY,
    errcode char(5) NOT NULL,
    times int NOT NULL DEFAULT 2147483647,
    calls regclass NOT NULL  -- a sequence per fault: counts calls, even rolled-back ones
);

CREATE FUNCTION kg_norm(p_name varchar) RETURNS varchar
LANGUAGE sql IMMUTABLE AS $$
    SELECT lower(regexp_replace(btrim(p_name), '\s+', ' ', 'g'))
$$;

CREATE FUNCTION kg_provenance_row(
    p_kind varchar, p_subject bigint, p_source_name varchar, p_source_type varchar,
    p_confidence numeric, p_metadata jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_key text := p_metadata ->> 'idempotency_key';
BEGIN
    INSERT INTO kg_provenance (subject_kind, subject_id, source_name, source_type, confidence,
                               metadata, idempotency_key)
    VALUES (p_kind, p_subject, p_source_name, p_source_type, p_confidence, p_metadata, v_key)
    ON CONFLICT (idempotency_key, subject_kind, subject_id) DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM kg_provenance
        WHERE idempotency_key = v_key AND subject_kind = p_kind AND subject_id = p_subject;
    END IF;
    RETURN v_id;
END $$;

-- An entity by exact normalised name, created when absent; returns its id and action.
CREATE FUNCTION kg_entity(p_type varchar, p_name varchar, OUT o_id bigint, OUT o_action jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO kg_nodes (node_type, name, norm_name)
    VALUES (p_type, p_name, kg_norm(p_name))
    ON CONFLICT (node_type, norm_name) DO NOTHING
    RETURNING id INTO o_id;
    IF o_id IS NOT NULL THEN
        o_action := jsonb_build_object('action', 'entity_created', 'entity_id', o_id,
                                       'confidence', 1.0, 'match_reason', 'new_entity');
    ELSE
        SELECT id INTO o_id FROM kg_nodes WHERE node_type = p_type AND norm_name = kg_norm(p_name);
        o_action := jsonb_build_object('action', 'entity_matched', 'entity_id', o_id,
                                       'confidence', 1.0, 'match_reason', 'exact_name_match');
    END IF;
END $$;

CREATE FUNCTION kg_attributes_of(
    p_node bigint, p_attributes jsonb, p_source_name varchar, p_source_type varchar,
    p_confidence numeric, p_metadata jsonb
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_attr jsonb;
    v_id bigint;
    v_prov jsonb := '[]';
BEGIN
    FOR v_attr IN SELECT * FROM jsonb_array_elements(COALESCE(p_attributes, '[]')) LOOP
        INSERT INTO kg_attributes (node_id, attr_type, value)
        VALUES (p_node, v_attr ->> 'type', v_attr ->> 'value')
        ON CONFLICT (node_id, attr_type, value) DO NOTHING
        RETURNING id INTO v_id;
        IF v_id IS NULL THEN
            SELECT id INTO v_id FROM kg_attributes
            WHERE node_id = p_node AND attr_type = v_attr ->> 'type' AND value = v_attr ->> 'value';
        END IF;
        v_prov := v_prov || to_jsonb(kg_provenance_row('attribute', v_id, p_source_name,
                                                       p_source_type, p_confidence, p_metadata));
    END LOOP;
    RETURN v_prov;
END $$;

CREATE FUNCTION propose_fact(
    p_source_node_type varchar, p_source_node_name varchar,
    p_target_node_type varchar, p_target_node_name varchar,
    p_relationship_type varchar, p_source_name varchar, p_source_type varchar,
    p_source_attributes jsonb DEFAULT '[]', p_target_attributes jsonb DEFAULT '[]',
    p_relationship_strength numeric(3,2) DEFAULT 1.0,
    p_relationship_valid_from date DEFAULT NULL, p_relationship_valid_to date DEFAULT NULL,
    p_relationship_metadata jsonb DEFAULT NULL,
    p_provenance_confidence numeric(3,2) DEFAULT 0.9, p_provenance_metadata jsonb DEFAULT NULL)
RETURNS propose_api_response
LANGUAGE plpgsql AS $$
DECLARE
    v_fault kg_faults%ROWTYPE;
    v_source bigint;
    v_target bigint;
    v_source_action jsonb;
    v_target_action jsonb;
    v_actions jsonb;
    v_conflicts jsonb := '[]';
    v_prov jsonb := '[]';
    v_strength numeric(3,2) := p_relationship_strength;
    v_rel bigint;
    v_old numeric(3,2);
    v_status varchar := 'success';
    v_opposing record;
    v_unknown text;
BEGIN
    SELECT * INTO v_fault FROM kg_faults WHERE source_node_name = p_source_node_name;
    IF FOUND AND nextval(v_fault.calls) <= v_fault.times THEN
        RAISE EXCEPTION 'injected fault % for %', v_fault.errcode, p_source_node_name
            USING ERRCODE = v_fault.errcode;
    END IF;

    SELECT string_agg(t, ', ') INTO v_unknown
    FROM unnest(ARRAY[p_source_node_type, p_target_node_type]) AS t
    WHERE NOT EXISTS (SELECT 1 FROM kg_node_types WHERE name = t);
    IF v_unknown IS NOT NULL THEN
        RETURN ROW('error', 0.00,
                   jsonb_build_array(jsonb_build_object(
                       'action', 'error', 'message', 'unknown node type: ' || v_unknown)),
                   '[]'::jsonb, '[]'::jsonb)::propose_api_response;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM kg_relationship_types WHERE name = p_relationship_type) THEN
        RETURN ROW('error', 0.00,
                   jsonb_build_array(jsonb_build_object(
                       'action', 'error',
                       'message', 'unknown relationship type: ' || p_relationship_type)),
                   '[]'::jsonb, '[]'::jsonb)::propose_api_response;
    END IF;

    SELECT o_id, o_action INTO v_source, v_source_action
    FROM kg_entity(p_source_node_type, p_source_node_name);
    SELECT o_id, o_action INTO v_target, v_target_action
    FROM kg_entity(p_target_node_type, p_target_node_name);
    v_actions := jsonb_build_array(v_source_action || '{"role": "source"}',
                                   v_target_action || '{"role": "target"}');
    v_prov := v_prov
        || to_jsonb(kg_provenance_row('node', v_source, p_source_name, p_source_type,
                                      p_provenance_confidence, p_provenance_metadata))
        || to_jsonb(kg_provenance_row('node', v_target, p_source_name, p_source_type,
                                      p_provenance_confidence, p_provenance_metadata))
        || kg_attributes_of(v_source, p_source_attributes, p_source_name, p_source_type,
                            p_provenance_confidence, p_provenance_metadata)
        || kg_attributes_of(v_target, p_target_attributes, p_source_name, p_source_type,
                            p_provenance_confidence, p_provenance_metadata);

    FOR v_opposing IN
        SELECT r.id, r.rel_type FROM kg_relationships r JOIN kg_relationship_types t
          ON (t.name = p_relationship_type AND t.opposes = r.rel_type)
          OR (t.name = r.rel_type AND t.opposes = p_relationship_type)
        WHERE r.source_node_id = v_source AND r.target_node_id = v_target
    LOOP
        v_status := 'conflicts';
        v_conflicts := v_conflicts || jsonb_build_object(
            'relationship_id', v_opposing.id, 'relationship_type', v_opposing.rel_type,
            'source_entity_id', v_source, 'target_entity_id', v_target);
    END LOOP;
    IF v_status = 'conflicts' THEN
        v_strength := round(p_relationship_strength * 0.7, 2);
    END IF;

    SELECT id, strength INTO v_rel, v_old FROM kg_relationships
    WHERE source_node_id = v_source AND rel_type = p_relationship_type
      AND target_node_id = v_target;
    IF v_rel IS NULL THEN
        INSERT INTO kg_relationships (source_node_id, rel_type, target_node_id, strength,
                                      valid_from, valid_to, metadata)
        VALUES (v_source, p_relationship_type, v_target, v_strength,
                p_relationship_valid_from, p_relationship_valid_to, p_relationship_metadata)
        RETURNING id INTO v_rel;
        v_actions := v_actions || jsonb_build_object(
            'action', CASE WHEN v_status = 'conflicts' THEN 'relationship_conflicted'
                           ELSE 'relationship_created' END,
            'relationship_id', v_rel, 'confidence', v_strength);
    ELSE
        IF v_strength > v_old THEN
            UPDATE kg_relationships SET strength = v_strength WHERE id = v_rel;
        END IF;
        v_actions := v_actions || jsonb_build_object(
            'action', 'relationship_duplicate', 'relationship_id', v_rel,
            'confidence', greatest(v_strength, v_old));
    END IF;
    v_prov := v_prov || to_jsonb(kg_provenance_row('relationship', v_rel, p_source_name,
                                                   p_source_type, p_provenance_confidence,
                                                   p_provenance_metadata));

    RETURN ROW(v_status, 1.00, v_actions, v_conflicts, v_prov)::propose_api_response;
END $$;
