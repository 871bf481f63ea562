-- Queue settings for fair scheduling and retries (as PostgreSQL's 00006).
-- weight is a queue's share of the workers when several queues have due
-- work; retry_statuses is which failed attempts retry, in the canonical
-- text form of task.RetryStatuses.

-- +goose Up
ALTER TABLE spool_queues ADD COLUMN weight INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000);
ALTER TABLE spool_queues ADD COLUMN retry_statuses TEXT NOT NULL DEFAULT '408,425,429,500-599,timeout,connection';

-- +goose Down
ALTER TABLE spool_queues DROP COLUMN retry_statuses;
ALTER TABLE spool_queues DROP COLUMN weight;
