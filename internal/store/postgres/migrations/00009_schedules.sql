-- Periodic schedules (see schedule.Schedule), and the run a task came from.
--
-- Versions 00006 and 00008 are taken by other changes; store/migrate
-- applies whichever versions are missing, in order, so the gaps are
-- deliberate.

-- +goose Up

-- One row per schedule. The leader's claim locks a due row, enqueues its
-- runs and moves next_run_at in one transaction, so a scheduled time is
-- enqueued once whatever replica leads. every_ms 0 = a cron schedule; cron
-- '' = an every schedule. next_run_at NULL = ended (past end_at).
CREATE TABLE spool_schedules (
    name        text        PRIMARY KEY,
    cron        text        NOT NULL DEFAULT '',
    every_ms    bigint      NOT NULL DEFAULT 0 CHECK (every_ms >= 0),
    timezone    text        NOT NULL DEFAULT '',
    missed      text        NOT NULL DEFAULT 'latest' CHECK (missed IN ('skip', 'latest', 'all')),
    jitter_ms   bigint      NOT NULL DEFAULT 0 CHECK (jitter_ms >= 0),
    start_at    timestamptz,
    end_at      timestamptz,
    queue       text        NOT NULL,
    task        jsonb       NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    source      text        NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'file')),
    next_run_at timestamptz,
    last_run_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron = '') <> (every_ms = 0))
);

-- The leader's "which schedules are due".
CREATE INDEX spool_schedules_due_idx ON spool_schedules (next_run_at)
    WHERE NOT paused AND next_run_at IS NOT NULL;

-- The run a task came from. Nullable without a default: catalog-only. No
-- statement filters on them, so ANALYZE skips them (see 00005).
ALTER TABLE spool_tasks ADD COLUMN schedule text, ADD COLUMN scheduled_for timestamptz;
ALTER TABLE spool_tasks
    ALTER COLUMN schedule SET STATISTICS 0,
    ALTER COLUMN scheduled_for SET STATISTICS 0;

-- +goose Down
ALTER TABLE spool_tasks DROP COLUMN scheduled_for, DROP COLUMN schedule;
DROP TABLE spool_schedules;
