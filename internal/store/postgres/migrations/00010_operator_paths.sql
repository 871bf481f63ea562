-- Operator paths that stay fast however many finished tasks are kept.
--
-- Counts by state: the pending states (scheduled, available, running,
-- retrying) are bounded by the backlog and are counted when asked, through
-- spool_tasks_queue_state_idx below (an index-only range per queue and
-- state). The final states (succeeded, failed, cancelled) grow with the
-- retention, a week of it being millions of rows, so they are kept
-- incrementally instead: every statement that moves tasks into or out of
-- a final state (completion, rescue, cancel, retry, prune) appends one row
-- per (queue, state) it changed to spool_task_count_deltas, in the same
-- statement, and the maintenance leader folds those rows into
-- spool_task_counts every second (FoldCounts). A reader sums both tables
-- in one snapshot, so the counts are exact. The deltas are append-only
-- with no index: concurrent completions never wait for each other on a
-- counter row, and one insert of a few rows is all a completion pays.
--
-- The list index: (queue, state, id) serves a list filtered by state in
-- its ORDER BY id, and replaces (queue, id). A list of every state merges
-- the seven (queue, state) ranges of the same index in id order (Merge
-- Append), so the table keeps as many index entries per row version as
-- before: each state change writes a new entry into every index, and one
-- more index would cost every enqueue, lease and completion.
--
-- Versions 00006 to 00009 belong to other changes; store/migrate applies
-- whichever versions are missing, so the gap is deliberate.
--
-- Applying it counts the finished tasks once and builds the index: a few
-- seconds per million tasks, during which writes to spool_tasks wait.
-- Replicas of an earlier build still running after it (a rolling upgrade)
-- do not record their completions in spool_task_count_deltas; the counts
-- of the tasks they finish then are missing until those tasks are pruned.

-- +goose Up
CREATE TABLE spool_task_counts (
    queue text   NOT NULL,
    state text   NOT NULL CHECK (state IN ('succeeded', 'failed', 'cancelled')),
    n     bigint NOT NULL,
    PRIMARY KEY (queue, state)
);

CREATE TABLE spool_task_count_deltas (
    queue text   NOT NULL,
    state text   NOT NULL CHECK (state IN ('succeeded', 'failed', 'cancelled')),
    n     bigint NOT NULL
);

INSERT INTO spool_task_counts (queue, state, n)
    SELECT queue, state, count(*) FROM spool_tasks
    WHERE state IN ('succeeded', 'failed', 'cancelled')
    GROUP BY queue, state;

CREATE INDEX spool_tasks_queue_state_idx ON spool_tasks (queue, state, id);
DROP INDEX spool_tasks_queue_id_idx;

-- +goose Down
CREATE INDEX spool_tasks_queue_id_idx ON spool_tasks (queue, id);
DROP INDEX spool_tasks_queue_state_idx;
DROP TABLE spool_task_count_deltas;
DROP TABLE spool_task_counts;
