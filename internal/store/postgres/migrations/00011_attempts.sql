-- Attempt history: one row per delivery attempt, for the dashboard and
-- GET /v1/tasks/{id}/attempts.
--
-- Rows are written by the statement that applies a completion (Complete)
-- or rescues an expired lease (RescueExpired), never on their own, so the
-- history costs a completion one more INSERT inside the statement it
-- already runs (no extra round trip, no extra commit). They go with their
-- task: the prune statement deletes them in the same statement.
--
-- There is no foreign key to spool_tasks on purpose: it would make every
-- attempt insert look the task up again (and lock it FOR KEY SHARE) and
-- every pruned task fire a trigger; the statements above are the only
-- writers and deleters, and they keep the two tables consistent.
--
-- seq orders a task's attempts (a released attempt's number is reused by
-- the next one, so (task_id, attempt) is not unique); the primary key is
-- the index ListAttempts and the prune read.
--
-- Versions 00010 and below belong to other changes; store/migrate applies
-- whichever versions are missing.

-- +goose Up
CREATE TABLE spool_attempts (
    task_id          uuid        NOT NULL,
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    attempt          integer     NOT NULL,
    outcome          text        NOT NULL CHECK (outcome IN ('succeeded', 'retry', 'failed', 'released', 'expired')),
    started_at       timestamptz,             -- NULL: unknown
    finished_at      timestamptz NOT NULL,
    duration_us      bigint,                  -- NULL: unknown
    status           integer,                 -- NULL: no response
    error_class      text,                    -- NULL: none
    error_message    text,
    response_excerpt text,                    -- NULL: none kept
    response_headers jsonb,                   -- NULL: none kept
    replica          text,
    trace_id         text,
    PRIMARY KEY (task_id, seq)
);

-- +goose Down
DROP TABLE spool_attempts;
