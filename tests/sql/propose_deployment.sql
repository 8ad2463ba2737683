-- A stand-in for a real Propose API deployment (issue 14), for the tests of
-- journal_loader.graph.postgres_client. tests/sql/propose_fact.sql models a deployment that
-- keeps the idempotency key; this one models the six-worker deployment built from the API's
-- public migrations, in every way the client depends on:
--
-- * its tables are `sources`, `nodes`, `attributes`, `relationships` and `provenance`, the
--   names journal-loader's own tables have, plus the lookup table `relationship_types`;
-- * the function's SQL is unqualified: it reads whatever `nodes` the caller's search_path
--   finds first (journal-loader's, if its schema comes first: `column n.node_id does not
--   exist`);
-- * ids are ULID-like text (26 characters of Crockford base32), never integers;
-- * p_provenance_metadata is accepted and ignored (the body never names it): repeats are
--   absorbed only by natural keys (a node by type and name, a relationship by its ends and
--   type, a provenance row by source and subject);
-- * entities: exact normalised name within the type, else fuzzy (trigram similarity): >= 0.8
--   matches the best, 0.6-0.8 is ambiguous: status `conflicts`, overall_confidence 0,
--   actions NULL and one conflict {"type": "ambiguous_entities", "source_alternatives",
--   "target_alternatives"}; no relationship, no provenance. A side resolved before is
--   not rolled back: a new source entity stays created (a partial write);
-- * opposing relationship types (relationship_types.opposes): `conflicts`, the new one stored
--   at strength * 0.7, the conflict naming the relationship it opposes;
-- * every exception inside the function is caught and answered as status `error` with the
--   message (SQLERRM), a deadlock included.
--
-- Test hook: stand_in_faults makes the function raise errcode with message for a source node
-- name, the first `times` calls (a sequence of its own counts them: not undone by the
-- rollback of the function's exception block). Everything goes in the current schema.

CREATE TYPE propose_api_response AS (
    status varchar,
    overall_confidence numeric(3,2),
    actions jsonb,
    conflicts jsonb,
    provenance_ids jsonb
);

CREATE FUNCTION new_ulid() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    out text := '';
BEGIN
    FOR i IN 1..10 LOOP
        out := substr(alphabet, (ms % 32)::int + 1, 1) || out;
        ms := ms / 32;
    END LOOP;
    FOR i IN 1..16 LOOP
        out := out || substr(alphabet, floor(random() * 32)::int + 1, 1);
    END LOOP;
    RETURN out;
END $$;

CREATE TABLE relationship_types (
    type_name varchar(100) PRIMARY KEY,
    opposes varchar(100)
);

CREATE TABLE sources (
    source_id text PRIMARY KEY DEFAULT new_ulid(),
    name varchar NOT NULL,
    source_type varchar NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, source_type)
);

CREATE TABLE nodes (
    node_id text PRIMARY KEY DEFAULT new_ulid(),
    node_type varchar(100) NOT NULL,
    name varchar NOT NULL,
    norm_name varchar NOT NULL,
    trigrams text[] NOT NULL DEFAULT '{}',  -- for fuzzy matching (pg_trgm's, spelt out below)
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node_type, norm_name)
);
CREATE INDEX nodes_trigrams ON nodes USING gin (trigrams);

CREATE TABLE attributes (
    attribute_id text PRIMARY KEY DEFAULT new_ulid(),
    node_id text NOT NULL REFERENCES nodes (node_id),
    attribute_type varchar(100) NOT NULL,
    value text NOT NULL,
    UNIQUE (node_id, attribute_type, value)
);

CREATE TABLE relationships (
    relationship_id text PRIMARY KEY DEFAULT new_ulid(),
    source_node_id text NOT NULL REFERENCES nodes (node_id),
    relationship_type varchar(100) NOT NULL REFERENCES relationship_types (type_name),
    target_node_id text NOT NULL REFERENCES nodes (node_id),
    strength numeric(3,2) NOT NULL CHECK (strength BETWEEN 0 AND 1),
    valid_from date,
    valid_to date,
    metadata jsonb,
    UNIQUE (source_node_id, relationship_type, target_node_id)
);

CREATE TABLE provenance (
    provenance_id text PRIMARY KEY DEFAULT new_ulid(),
    source_id text NOT NULL REFERENCES sources (source_id),
    node_id text REFERENCES nodes (node_id),
    attribute_id text REFERENCES attributes (attribute_id),
    relationship_id text REFERENCES relationships (relationship_id),
    confidence numeric(3,2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (source_id, node_id, attribute_id, relationship_id)
);

CREATE TABLE stand_in_faults (
    source_node_name varchar PRIMARY KEY,
    errcode char(5) NOT NULL,
    message text NOT NULL,
    times int NOT NULL DEFAULT 2147483647,
    calls regclass NOT NULL
);

CREATE FUNCTION norm_name(p_name varchar) RETURNS varchar
LANGUAGE sql IMMUTABLE AS $$
    SELECT lower(regexp_replace(btrim(p_name), '\s+', ' ', 'g'))
$$;

-- pg_trgm's similarity(), spelt out: words padded with two spaces before and one after.
CREATE FUNCTION name_trigrams(p_name text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(DISTINCT substr(w, i, 3)), '{}')
    FROM (SELECT '  ' || word || ' ' AS w
          FROM regexp_split_to_table(lower(p_name), '[^a-z0-9]+') AS word
          WHERE word <> '') AS words,
         generate_series(1, length(w) - 2) AS i
$$;

CREATE FUNCTION trigram_similarity(a text[], b text[]) RETURNS real
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN u.n = 0 THEN 0 ELSE i.n::real / u.n END
    FROM (SELECT count(*) AS n FROM (SELECT unnest(a) INTERSECT SELECT unnest(b)) x) AS i,
         (SELECT count(*) AS n FROM (SELECT unnest(a) UNION SELECT unnest(b)) y) AS u
$$;

CREATE FUNCTION name_similarity(a text, b text) RETURNS real
LANGUAGE sql IMMUTABLE AS $$
    SELECT trigram_similarity(name_trigrams(a), name_trigrams(b))
$$;

CREATE FUNCTION provenance_row(
    p_source text, p_node text, p_attribute text, p_relationship text, p_confidence numeric
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id text;
BEGIN
    INSERT INTO provenance (source_id, node_id, attribute_id, relationship_id, confidence)
    VALUES (p_source, p_node, p_attribute, p_relationship, p_confidence)
    ON CONFLICT (source_id, node_id, attribute_id, relationship_id) DO NOTHING
    RETURNING provenance_id INTO v_id;
    IF v_id IS NULL THEN
        SELECT p.provenance_id INTO v_id FROM provenance p
        WHERE p.source_id = p_source
          AND p.node_id IS NOT DISTINCT FROM p_node
          AND p.attribute_id IS NOT DISTINCT FROM p_attribute
          AND p.relationship_id IS NOT DISTINCT FROM p_relationship;
    END IF;
    RETURN v_id;
END $$;

-- An entity: exact name, else the best fuzzy match >= 0.8, else ambiguous (candidates
-- 0.6-0.8: o_id NULL, o_alternatives set), else created.
CREATE FUNCTION resolve_entity(
    p_type varchar, p_name varchar, OUT o_id text, OUT o_action jsonb, OUT o_alternatives jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    v_score real;
    v_best text;
    v_candidates jsonb;
    v_trigrams text[] := name_trigrams(p_name);
BEGIN
    SELECT n.node_id INTO o_id FROM nodes n
    WHERE n.node_type = p_type AND n.norm_name = norm_name(p_name);
    IF o_id IS NOT NULL THEN
        o_action := jsonb_build_object('action', 'entity_matched', 'entity_id', o_id,
                                       'confidence', 1.0, 'match_reason', 'exact_name_match');
        RETURN;
    END IF;
    -- candidates share a trigram (the GIN index); each scored once
    SELECT max(c.score), (array_agg(c.node_id ORDER BY c.score DESC, c.node_id))[1],
           jsonb_agg(jsonb_build_object('id', c.node_id, 'name', c.name,
                                        'similarity', round(c.score::numeric, 3))
                     ORDER BY c.score DESC, c.node_id) FILTER (WHERE c.score >= 0.6)
    INTO v_score, v_best, v_candidates
    FROM (SELECT n.node_id, n.name, trigram_similarity(n.trigrams, v_trigrams) AS score
          FROM nodes n WHERE n.node_type = p_type AND n.trigrams && v_trigrams) AS c;
    IF v_score >= 0.8 THEN
        o_id := v_best;
        o_action := jsonb_build_object('action', 'entity_matched', 'entity_id', o_id,
                                       'confidence', round(v_score::numeric, 2),
                                       'match_reason', 'fuzzy_match');
        RETURN;
    END IF;
    IF v_score >= 0.6 THEN
        o_alternatives := v_candidates;
        RETURN;
    END IF;
    INSERT INTO nodes (node_type, name, norm_name, trigrams)
    VALUES (p_type, p_name, norm_name(p_name), v_trigrams)
    RETURNING node_id INTO o_id;
    o_action := jsonb_build_object('action', 'entity_created', 'entity_id', o_id,
                                   'confidence', 1.0, 'match_reason', 'new_entity');
END $$;

CREATE FUNCTION attributes_of(
    p_node text, p_attributes jsonb, p_source text, p_confidence numeric
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_attr jsonb;
    v_id text;
    v_prov jsonb := '[]';
BEGIN
    FOR v_attr IN SELECT * FROM jsonb_array_elements(COALESCE(p_attributes, '[]')) LOOP
        INSERT INTO attributes (node_id, attribute_type, value)
        VALUES (p_node, v_attr ->> 'type', v_attr ->> 'value')
        ON CONFLICT (node_id, attribute_type, value) DO NOTHING
        RETURNING attribute_id INTO v_id;
        IF v_id IS NULL THEN
            SELECT a.attribute_id INTO v_id FROM attributes a
            WHERE a.node_id = p_node AND a.attribute_type = v_attr ->> 'type'
              AND a.value = v_attr ->> 'value';
        END IF;
        v_prov := v_prov || to_jsonb(provenance_row(p_source, NULL, v_id, NULL, p_confidence));
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
    v_fault record;
    v_data_source text;
    v_source text;
    v_target text;
    v_source_action jsonb;
    v_target_action jsonb;
    v_source_alternatives jsonb;
    v_target_alternatives jsonb;
    v_actions jsonb;
    v_conflicts jsonb := '[]';
    v_prov jsonb := '[]';
    v_strength numeric(3,2) := p_relationship_strength;
    v_rel text;
    v_old numeric(3,2);
    v_status varchar := 'success';
    v_opposing record;
BEGIN
    BEGIN
        SELECT * INTO v_fault FROM stand_in_faults WHERE source_node_name = p_source_node_name;
        IF FOUND AND nextval(v_fault.calls) <= v_fault.times THEN
            RAISE EXCEPTION '%', v_fault.message USING ERRCODE = v_fault.errcode;
        END IF;

        INSERT INTO sources (name, source_type) VALUES (p_source_name, p_source_type)
        ON CONFLICT (name, source_type) DO NOTHING RETURNING source_id INTO v_data_source;
        IF v_data_source IS NULL THEN
            SELECT s.source_id INTO v_data_source FROM sources s
            WHERE s.name = p_source_name AND s.source_type = p_source_type;
        END IF;

        SELECT o_id, o_action, o_alternatives
        INTO v_source, v_source_action, v_source_alternatives
        FROM resolve_entity(p_source_node_type, p_source_node_name);
        SELECT o_id, o_action, o_alternatives
        INTO v_target, v_target_action, v_target_alternatives
        FROM resolve_entity(p_target_node_type, p_target_node_name);
        IF v_source IS NULL OR v_target IS NULL THEN
            -- what was created above stays (the deployment does not roll it back)
            RETURN ROW('conflicts', 0.00, NULL,
                       jsonb_build_array(jsonb_build_object(
                           'type', 'ambiguous_entities',
                           'source_alternatives', COALESCE(v_source_alternatives, '[]'),
                           'target_alternatives', COALESCE(v_target_alternatives, '[]'))),
                       '[]'::jsonb)::propose_api_response;
        END IF;
        v_actions := jsonb_build_array(v_source_action, v_target_action);
        v_prov := v_prov
            || to_jsonb(provenance_row(v_data_source, v_source, NULL, NULL,
                                       p_provenance_confidence))
            || to_jsonb(provenance_row(v_data_source, v_target, NULL, NULL,
                                       p_provenance_confidence))
            || attributes_of(v_source, p_source_attributes, v_data_source,
                             p_provenance_confidence)
            || attributes_of(v_target, p_target_attributes, v_data_source,
                             p_provenance_confidence);

        FOR v_opposing IN
            SELECT r.relationship_id, r.relationship_type
            FROM relationships r JOIN relationship_types t
              ON (t.type_name = p_relationship_type AND t.opposes = r.relationship_type)
              OR (t.type_name = r.relationship_type AND t.opposes = p_relationship_type)
            WHERE r.source_node_id = v_source AND r.target_node_id = v_target
        LOOP
            v_status := 'conflicts';
            v_conflicts := v_conflicts || jsonb_build_object(
                'type', 'opposing_relationship',
                'existing_relationship_id', v_opposing.relationship_id,
                'existing_relationship_type', v_opposing.relationship_type,
                'source_entity_id', v_source, 'target_entity_id', v_target);
        END LOOP;
        IF v_status = 'conflicts' THEN
            v_strength := round(p_relationship_strength * 0.7, 2);
        END IF;

        SELECT r.relationship_id, r.strength INTO v_rel, v_old FROM relationships r
        WHERE r.source_node_id = v_source AND r.relationship_type = p_relationship_type
          AND r.target_node_id = v_target;
        IF v_rel IS NULL THEN
            INSERT INTO relationships (source_node_id, relationship_type, target_node_id,
                                       strength, valid_from, valid_to, metadata)
            VALUES (v_source, p_relationship_type, v_target, v_strength,
                    p_relationship_valid_from, p_relationship_valid_to,
                    p_relationship_metadata)
            RETURNING relationship_id INTO v_rel;
            v_actions := v_actions || jsonb_build_object(
                'action', 'relationship_created', 'relationship_id', v_rel,
                'confidence', v_strength);
        ELSE
            IF v_strength > v_old THEN
                UPDATE relationships SET strength = v_strength WHERE relationship_id = v_rel;
            END IF;
            v_actions := v_actions || jsonb_build_object(
                'action', 'relationship_duplicate', 'relationship_id', v_rel,
                'confidence', greatest(v_strength, v_old));
        END IF;
        v_prov := v_prov || to_jsonb(provenance_row(v_data_source, NULL, NULL, v_rel,
                                                    p_provenance_confidence));
        RETURN ROW(v_status, 1.00, v_actions, v_conflicts, v_prov)::propose_api_response;
    EXCEPTION WHEN OTHERS THEN
        RETURN ROW('error', 0.00,
                   jsonb_build_array(jsonb_build_object('action', 'error', 'message', SQLERRM)),
                   '[]'::jsonb, '[]'::jsonb)::propose_api_response;
    END;
END $$;
