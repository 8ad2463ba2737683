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

-- name: last_reserved
-- Read FIRST (JournalStore.high_water): the last position reserved, from the sequence of the
-- journal (live: no snapshot hides a reservation). A sequence never called has handed out
-- nothing, unless it was set back with is_called false: then the last position in the
-- journal. Why this read comes before in_flight_low: journal_loader/storage/postgres.py,
-- PostgresTx.reserve_positions.
SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('journal', 'position')::regclass),
                (SELECT MAX(position) FROM journal), 0)

-- name: in_flight_low
-- Read SECOND: the lowest first position of the batches still in flight, from their marks:
-- shared advisory locks, each held by a batch transaction to its end, keyed mark_base plus
-- the first position of the batch. pg_locks shows a bigint key as classid (its high 32
-- bits) and objid (its low 32); classid >> 8 is the 23-bit prefix of every mark. NULL: none
-- in flight. (No apostrophes in these comments: the placeholder rewriting reads them.)
SELECT MIN((l.classid::bigint << 32 | l.objid::bigint) - :mark_base)
FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint >> 8 = :mark_prefix
