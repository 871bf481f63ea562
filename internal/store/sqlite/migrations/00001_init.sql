-- Spool's schema on SQLite. It mirrors the PostgreSQL schema column for
-- column; times are INTEGER unix microseconds (UTC) so that comparisons and
-- index range scans are plain integer work, and tables are STRICT so a wrong
-- type is an error instead of a silent affinity conversion.

-- +goose Up
CREATE TABLE spool_queues (
    name         TEXT    NOT NULL PRIMARY KEY,
    concurrency  INTEGER NOT NULL DEFAULT 0,   -- 0 = unlimited
    rate_limit   REAL    NOT NULL DEFAULT 0,   -- starts per second, 0 = unlimited
    max_attempts INTEGER NOT NULL,
    timeout_ms   INTEGER NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    -- token bucket for rate_limit; tokens_at = 0 means "never drawn", a full bucket
    tokens       REAL    NOT NULL DEFAULT 0,
    tokens_at    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE spool_tasks (
    id               TEXT    NOT NULL PRIMARY KEY,           -- UUIDv7 string, time-ordered
    queue            TEXT    NOT NULL REFERENCES spool_queues (name),
    state            TEXT    NOT NULL CHECK (state IN ('scheduled', 'available', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    target_url       TEXT    NOT NULL,
    target_method    TEXT    NOT NULL,
    target_headers   TEXT,                                   -- JSON object, NULL when none
    payload          BLOB,
    content_type     TEXT    NOT NULL DEFAULT '',
    idempotency_key  TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    last_error       TEXT,
    last_status      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
) STRICT;

-- Idempotency: one task per (queue, key).
CREATE UNIQUE INDEX spool_tasks_idempotency ON spool_tasks (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Leasing across every queue, in dispatch order; only pending tasks are indexed
-- so finished history does not slow the hot path.
CREATE INDEX spool_tasks_lease ON spool_tasks (priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retrying');

-- Leasing one queue (queues with a concurrency or rate limit get their own
-- capped pick, see Lease).
CREATE INDEX spool_tasks_lease_queue ON spool_tasks (queue, priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retrying');

-- ListTasks without a state filter.
CREATE INDEX spool_tasks_queue_id ON spool_tasks (queue, id);

-- ListTasks with a state filter, counts by state, running count per queue.
CREATE INDEX spool_tasks_queue_state ON spool_tasks (queue, state, id);

-- PromoteDue.
CREATE INDEX spool_tasks_promote ON spool_tasks (run_at)
    WHERE state IN ('scheduled', 'retrying');

-- RescueExpired.
CREATE INDEX spool_tasks_rescue ON spool_tasks (lease_expires_at)
    WHERE state = 'running';

-- Prune.
CREATE INDEX spool_tasks_prune ON spool_tasks (finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');

-- Lease tokens come from this counter rather than from a random number: a
-- token is then never reused, so a stale holder can never match a later lease.
CREATE TABLE spool_lease_seq (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
) STRICT;
INSERT INTO spool_lease_seq (id, last) VALUES (1, 0);

-- One row per elected role ("maintenance").
CREATE TABLE spool_leader (
    name       TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- +goose Down
DROP TABLE spool_leader;
DROP TABLE spool_lease_seq;
DROP TABLE spool_tasks;
DROP TABLE spool_queues;
