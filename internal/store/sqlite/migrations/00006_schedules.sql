-- Periodic schedules (see schedule.Schedule), and the run a task came from.
-- Mirrors PostgreSQL's 00009_schedules.sql; times are unix microseconds.
--
-- Versions 00003 and 00005 are taken by other changes; store/migrate
-- applies whichever versions are missing, in order, so the gaps are
-- deliberate.

-- +goose Up
CREATE TABLE spool_schedules (
    name        TEXT    NOT NULL PRIMARY KEY,
    cron        TEXT    NOT NULL DEFAULT '',
    every_ms    INTEGER NOT NULL DEFAULT 0 CHECK (every_ms >= 0),
    timezone    TEXT    NOT NULL DEFAULT '',
    missed      TEXT    NOT NULL DEFAULT 'latest' CHECK (missed IN ('skip', 'latest', 'all')),
    jitter_ms   INTEGER NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
    start_at    INTEGER,
    end_at      INTEGER,
    queue       TEXT    NOT NULL,
    task        TEXT    NOT NULL,                       -- JSON template
    paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    source      TEXT    NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file')),
    next_run_at INTEGER,                                -- NULL = ended
    last_run_at INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK ((cron = '') <> (every_ms = 0))
) STRICT;

CREATE INDEX spool_schedules_due ON spool_schedules (next_run_at)
    WHERE paused = 0 AND next_run_at IS NOT NULL;

ALTER TABLE spool_tasks ADD COLUMN schedule TEXT;
ALTER TABLE spool_tasks ADD COLUMN scheduled_for INTEGER;

-- +goose Down
ALTER TABLE spool_tasks DROP COLUMN scheduled_for;
ALTER TABLE spool_tasks DROP COLUMN schedule;
DROP TABLE spool_schedules;
