-- PostgreSQL versions of journal.sql blocks.

-- name: next_source_id
-- From a sequence (migration 0004): two registrations at once get two ids, where MAX + 1
-- gave both the same one. If the table already holds higher ids than the sequence (a
-- database filled by `replay --into`), jump past them; that is the only case that calls
-- setval, so two registrations never move the sequence backwards.
SELECT CASE WHEN s.n > s.m THEN s.n ELSE setval('sources_source_id_seq', s.m + 1) END
FROM (
  SELECT nextval('sources_source_id_seq') AS n,
         (SELECT COALESCE(MAX(source_id), 0) FROM sources) AS m
) AS s

-- name: wait_for_lease
-- A run that lost its lock may still be inside a batch transaction: its check_lease holds
-- this row until that transaction ends (journal_store.PostgresJournalStore.source_for_run).
SELECT generation FROM source_leases WHERE source_id = :source_id FOR UPDATE
