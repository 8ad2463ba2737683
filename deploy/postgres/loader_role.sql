-- journal-loader: the role loaders run as on PostgreSQL (append-only beyond the triggers).
--
-- The journal's triggers refuse UPDATE, DELETE and TRUNCATE, but the table's owner can
-- disable them (ALTER TABLE journal DISABLE TRIGGER USER). So loaders must not run as the
-- owner: they run as this role, which may read the journal and append to it, and nothing
-- else. Whatever else a load writes (projections, leases, the embedded graph) it may write.
-- An edit made by the owner anyway is caught by `journal-loader verify` (hash chains; keep
-- the heads from `verify --export-heads` outside the database to catch deleted tails).
--
-- Not a migration: roles belong to the whole cluster, not to one database or schema, and
-- creating them needs CREATEROLE, which the migrating user should not need. Run it once per
-- schema, as the schema's owner (the user that ran `journal-loader db upgrade`), with psql:
--
--   psql "postgresql://owner@db/graph" -v ON_ERROR_STOP=1 \
--        -v role=journal_loader_writer -v schema=public \
--        -f deploy/postgres/loader_role.sql
--
-- then give the role a password out of band (psql: \password journal_loader_writer) and run
-- loaders with   --db postgresql+psycopg://journal_loader_writer@db/graph
-- Run the file again after `db upgrade` if a migration added tables. Re-running is safe.
--
-- What stays with the owner: migrations (`db upgrade`, which also builds the pg_trgm GIN index
-- of fuzzy matching where pg_trgm is installed), and `projections rebuild` (it deletes and
-- locks the projections). `status --as-of` and `replay` use temporary tables: the TEMPORARY
-- privilege on the database, which PUBLIC has by default.

\set ON_ERROR_STOP on

-- The role, if it does not exist yet: can log in, nothing more.
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')
\gexec

-- Start from nothing in this schema, so re-running also takes back what is no longer listed.
REVOKE ALL ON ALL TABLES IN SCHEMA :"schema" FROM :"role";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA :"schema" FROM :"role";
REVOKE CREATE ON SCHEMA :"schema" FROM :"role";
GRANT USAGE ON SCHEMA :"schema" TO :"role";
ALTER ROLE :"role" SET search_path = :"schema";

-- The journal: read and append. No UPDATE, DELETE, TRUNCATE, TRIGGER, and not the owner, so
-- no ALTER TABLE ... DISABLE TRIGGER either.
REVOKE UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES ON :"schema".journal FROM PUBLIC;
GRANT SELECT, INSERT ON :"schema".journal TO :"role";

-- Projections, kept up to date by each batch (the DLQ loses records that succeed later).
GRANT SELECT, INSERT, UPDATE ON :"schema".sources TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON :"schema".failed_records TO :"role";
GRANT SELECT ON :"schema".loader_status TO :"role";

-- The fencing token of the run that owns a source; settings; the schema's revision (checked
-- before every run: a loader never migrates).
GRANT SELECT, INSERT, UPDATE ON :"schema".source_leases TO :"role";
GRANT SELECT ON :"schema".loader_settings TO :"role";
GRANT SELECT ON :"schema".alembic_version TO :"role";

-- The embedded graph: new nodes, attributes, relationships and provenance; a node gets its
-- external key when its own record arrives; a stronger relationship updates the old one.
GRANT SELECT, INSERT, UPDATE ON :"schema".nodes TO :"role";
GRANT SELECT, INSERT ON :"schema".attributes TO :"role";
GRANT SELECT, INSERT, UPDATE ON :"schema".relationships TO :"role";
GRANT SELECT, INSERT ON :"schema".provenance_records TO :"role";
GRANT SELECT, INSERT ON :"schema".provenance_nodes TO :"role";
GRANT SELECT, INSERT ON :"schema".provenance_attributes TO :"role";
GRANT SELECT, INSERT ON :"schema".provenance_relationships TO :"role";
GRANT SELECT ON :"schema".provenance TO :"role";

-- Journal positions and graph ids come from the tables' sequences: nextval needs USAGE; the
-- journal's also UPDATE, because a batch reserves its block of positions with one setval
-- under the append lock. (Moving that sequence cannot rewrite history: a position already
-- taken is refused by the primary key.)
-- Source ids (migration 0004): nextval, and setval when a database filled by `replay
-- --into` holds ids the sequence never handed out
-- (journal_loader/storage/queries/journal.postgresql.sql).
GRANT USAGE, UPDATE ON SEQUENCE :"schema".sources_source_id_seq TO :"role";
SELECT format('GRANT USAGE%s ON SEQUENCE %s TO %I',
              CASE WHEN t.name = 'journal' THEN ', UPDATE' ELSE '' END,
              pg_get_serial_sequence(format('%I.%I', :'schema', t.name), t.col), :'role')
FROM (VALUES ('journal', 'position'), ('nodes', 'id'), ('attributes', 'id'),
             ('relationships', 'id'), ('provenance_records', 'id')) AS t(name, col)
\gexec
