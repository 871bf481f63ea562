-- The W3C traceparent of the enqueue that created a task, so its deliveries
-- join the caller's trace. NULL when the enqueue carried no trace context.

-- +goose Up
ALTER TABLE spool_tasks ADD COLUMN traceparent TEXT;

-- +goose Down
ALTER TABLE spool_tasks DROP COLUMN traceparent;
