-- Counts of finished tasks kept as they change (as PostgreSQL's 00010).
--
-- The pending states (scheduled, available, running, retrying) are
-- bounded by the backlog and counted when asked, through
-- spool_tasks_queue_state (queue, state, id), which covers the count. The
-- final states (succeeded, failed, cancelled) grow with the retention, so
-- their counts live here, kept by triggers on spool_tasks in the writing
-- transaction itself: exact, and no code path can forget one. SQLite has
-- one writer at a time, so the counter rows make no one wait; PostgreSQL
-- appends deltas instead (see its migration 00010).
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

CREATE TRIGGER spool_tasks_count_insert AFTER INSERT ON spool_tasks
WHEN new.state IN ('succeeded', 'failed', 'cancelled')
BEGIN
    INSERT INTO spool_task_counts (queue, state, n) VALUES (new.queue, new.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER spool_tasks_count_finish AFTER UPDATE OF state ON spool_tasks
WHEN new.state IN ('succeeded', 'failed', 'cancelled') AND new.state IS NOT old.state
BEGIN
    INSERT INTO spool_task_counts (queue, state, n) VALUES (new.queue, new.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER spool_tasks_count_reopen AFTER UPDATE OF state ON spool_tasks
WHEN old.state IN ('succeeded', 'failed', 'cancelled') AND new.state IS NOT old.state
BEGIN
    UPDATE spool_task_counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
END;

CREATE TRIGGER spool_tasks_count_delete AFTER DELETE ON spool_tasks
WHEN old.state IN ('succeeded', 'failed', 'cancelled')
BEGIN
    UPDATE spool_task_counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
END;

-- +goose Down
DROP TRIGGER spool_tasks_count_delete;
DROP TRIGGER spool_tasks_count_reopen;
DROP TRIGGER spool_tasks_count_finish;
DROP TRIGGER spool_tasks_count_insert;
DROP TABLE spool_task_counts;
