-- A tenth of the sample for spool_tasks' statistics.
--
-- The maintenance leader analyzes spool_tasks whenever a backlog has
-- outgrown its statistics (RefreshStats), which at a steady 1,000 tasks/s
-- is every few seconds. With the default statistics target (100) ANALYZE
-- samples 30,000 rows: 115 ms of one core on a table of 40,000 tasks here,
-- which delayed the deliveries that waited behind it for a core. The
-- planner needs little from this table: the size, the share of each
-- state, and rough distributions of the columns the statements filter or
-- sort on. A target of 10 keeps those (the seven states fit in the list of
-- most common values) and samples 3,000 rows (11 ms on the same table);
-- the columns no statement filters on are not analyzed at all.

-- +goose Up
ALTER TABLE spool_tasks
    ALTER COLUMN id SET STATISTICS 10,
    ALTER COLUMN queue SET STATISTICS 10,
    ALTER COLUMN state SET STATISTICS 10,
    ALTER COLUMN priority SET STATISTICS 10,
    ALTER COLUMN run_at SET STATISTICS 10,
    ALTER COLUMN idempotency_key SET STATISTICS 10,
    ALTER COLUMN lease_expires_at SET STATISTICS 10,
    ALTER COLUMN finished_at SET STATISTICS 10,
    ALTER COLUMN attempt SET STATISTICS 0,
    ALTER COLUMN max_attempts SET STATISTICS 0,
    ALTER COLUMN timeout_ms SET STATISTICS 0,
    ALTER COLUMN target_url SET STATISTICS 0,
    ALTER COLUMN target_method SET STATISTICS 0,
    ALTER COLUMN target_headers SET STATISTICS 0,
    ALTER COLUMN payload SET STATISTICS 0,
    ALTER COLUMN content_type SET STATISTICS 0,
    ALTER COLUMN lease_token SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0,
    ALTER COLUMN last_status SET STATISTICS 0,
    ALTER COLUMN created_at SET STATISTICS 0,
    ALTER COLUMN updated_at SET STATISTICS 0,
    ALTER COLUMN traceparent SET STATISTICS 0;

-- +goose Down
ALTER TABLE spool_tasks
    ALTER COLUMN id SET STATISTICS -1,
    ALTER COLUMN queue SET STATISTICS -1,
    ALTER COLUMN state SET STATISTICS -1,
    ALTER COLUMN priority SET STATISTICS -1,
    ALTER COLUMN run_at SET STATISTICS -1,
    ALTER COLUMN idempotency_key SET STATISTICS -1,
    ALTER COLUMN lease_expires_at SET STATISTICS -1,
    ALTER COLUMN finished_at SET STATISTICS -1,
    ALTER COLUMN attempt SET STATISTICS -1,
    ALTER COLUMN max_attempts SET STATISTICS -1,
    ALTER COLUMN timeout_ms SET STATISTICS -1,
    ALTER COLUMN target_url SET STATISTICS -1,
    ALTER COLUMN target_method SET STATISTICS -1,
    ALTER COLUMN target_headers SET STATISTICS -1,
    ALTER COLUMN payload SET STATISTICS -1,
    ALTER COLUMN content_type SET STATISTICS -1,
    ALTER COLUMN lease_token SET STATISTICS -1,
    ALTER COLUMN last_error SET STATISTICS -1,
    ALTER COLUMN last_status SET STATISTICS -1,
    ALTER COLUMN created_at SET STATISTICS -1,
    ALTER COLUMN updated_at SET STATISTICS -1,
    ALTER COLUMN traceparent SET STATISTICS -1;
