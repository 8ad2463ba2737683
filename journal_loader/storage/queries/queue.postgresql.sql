-- The worker queue's tables (procrastinate's, in the journal's schema; PostgreSQL only), run
-- by journal_loader/storage/queue_store.py.

-- name: queue_installed
SELECT 1 FROM pg_tables
WHERE schemaname = current_schema() AND tablename = 'procrastinate_jobs'

-- name: queue_note
-- The comment `db upgrade` leaves on the jobs table: which procrastinate installed it.
SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')

-- name: queue_jobs
-- A task's jobs in some states, oldest first, with when each last changed.
SELECT j.id, j.status::text AS status, j.attempts, j.worker_id, j.scheduled_at, j.args,
       (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id) AS changed_at
FROM procrastinate_jobs j
WHERE j.task_name = :task AND j.status::text = ANY(:statuses)
ORDER BY j.id
