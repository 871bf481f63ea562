-- Queue settings for fair scheduling and retries.
--
-- weight is a queue's share of the workers when several queues have due
-- work: the lease orders candidates by (running + rank) / weight, so with
-- weights 2 and 1 two backlogged queues get two workers and one.
-- retry_statuses is which failed attempts retry, in the canonical text
-- form of task.RetryStatuses (the default is task.DefaultRetryStatuses).

-- +goose Up
ALTER TABLE spool_queues
    ADD COLUMN weight integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000),
    ADD COLUMN retry_statuses text NOT NULL DEFAULT '408,425,429,500-599,timeout,connection';

-- +goose Down
ALTER TABLE spool_queues DROP COLUMN retry_statuses, DROP COLUMN weight;
