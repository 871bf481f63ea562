-- Counts of finished tasks kept as they change (as PostgreSQL's 00010).
--
-- The pending states (scheduled, available, running, retrying) are
-- bounded by the backlog and counted when asked, through
-- spool_tasks_queue_state (queue, state, id), which covers the count. The
-- final states (succeeded, failed, cancelled) grow with the retention, so
-- their counts live here, changed in the transaction that finishes,
-- reopens or prunes tasks: one upsert per queue and state it changed
-- (addCounts). SQLite has one writer at a time, so the counter rows make
-- no one wait; PostgreSQL appends deltas instead (see its migration
-- 00010). Triggers kept them first, but a row trigger on every completed
-- task cost a tenth to a fifth of BenchmarkLeaseComplete.
--
-- The list indexes exist since 00001: spool_tasks_queue_id (queue, id)
-- and spool_tasks_queue_state (queue, state, id).
--
-- Versions 00003 to 00006 belong to other changes; store/migrate applies
-- whichever versions are missing, so the gap is deliberate.

-- +goose Up
CREATE TABLE spool_task_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL CHECK (state IN ('succeeded', 'failed', 'cancelled')),
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) STRICT, WITHOUT ROWID;

INSERT INTO spool_task_counts (queue, state, n)
    SELECT queue, state, count(*) FROM spool_tasks
    WHERE state IN ('succeeded', 'failed', 'cancelled')
    GROUP BY queue, state;

-- +goose Down
DROP TABLE spool_task_counts;
