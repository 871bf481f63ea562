-- The W3C traceparent of the enqueue that created a task, so its deliveries
-- join the caller's trace. Nullable without a default: adding it is a
-- catalog-only change, instant on a table of any size.

-- +goose Up
ALTER TABLE spool_tasks ADD COLUMN traceparent text;

-- +goose Down
ALTER TABLE spool_tasks DROP COLUMN traceparent;
