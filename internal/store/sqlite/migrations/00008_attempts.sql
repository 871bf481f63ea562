-- Attempt history (as PostgreSQL's 00011): one row per delivery attempt,
-- written in the transaction that applies the completion (Complete) or
-- rescues an expired lease (RescueExpired), deleted in the transaction
-- that prunes its task. No foreign key, for the same reasons: the writers
-- keep the tables consistent and a pruned task costs no trigger.
--
-- The rowid orders a task's attempts: a new row's is above every stored
-- one. Times are unix microseconds, as everywhere.
--
-- Versions 00007 and below belong to other changes; store/migrate applies
-- whichever versions are missing.

-- +goose Up
CREATE TABLE spool_attempts (
    task_id          TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    outcome          TEXT    NOT NULL CHECK (outcome IN ('succeeded', 'retry', 'failed', 'released', 'expired')),
    started_at       INTEGER,             -- NULL: unknown
    finished_at      INTEGER NOT NULL,
    duration_us      INTEGER,             -- NULL: unknown
    status           INTEGER,             -- NULL: no response
    error_class      TEXT,
    error_message    TEXT,
    response_excerpt TEXT,
    response_headers TEXT,                -- JSON object, NULL when none
    replica          TEXT,
    trace_id         TEXT
) STRICT;

CREATE INDEX spool_attempts_task ON spool_attempts (task_id);

-- +goose Down
DROP TABLE spool_attempts;
