-- Leasing walks an index in the order it promises and stops at its LIMIT.
--
-- The lease index of 00001 covered every pending state, so a lease had to
-- skip past tasks scheduled for later and, with the queue anti-join it was
-- planned with, read and sort the whole backlog (about 19 ms for 100 out
-- of 20,000 due tasks). Now Lease first moves due scheduled and retrying
-- tasks to available (through an index on run_at, which bounds that scan
-- to the due ones), then leases from available tasks only, whose index is
-- in (priority, run_at, id) order: every entry is due, so the walk stops
-- after LIMIT rows.
--
-- The running-state indexes merge into one (queue, lease_expires_at): it
-- counts a limited queue's running tasks and finds expired leases (the
-- running set is bounded by the workers), and a lease writes one index
-- entry fewer.

-- +goose Up
CREATE INDEX spool_tasks_available_idx ON spool_tasks (priority, run_at, id)
    WHERE state = 'available';
CREATE INDEX spool_tasks_due_idx ON spool_tasks (run_at)
    WHERE state IN ('scheduled', 'retrying');
CREATE INDEX spool_tasks_running_queue_idx ON spool_tasks (queue, lease_expires_at)
    WHERE state = 'running';
DROP INDEX spool_tasks_lease_idx;
DROP INDEX spool_tasks_rescue_idx;
DROP INDEX spool_tasks_running_idx;

-- +goose Down
CREATE INDEX spool_tasks_lease_idx ON spool_tasks (priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retrying');
CREATE INDEX spool_tasks_rescue_idx ON spool_tasks (lease_expires_at)
    WHERE state = 'running';
CREATE INDEX spool_tasks_running_idx ON spool_tasks (queue)
    WHERE state = 'running';
DROP INDEX spool_tasks_running_queue_idx;
DROP INDEX spool_tasks_due_idx;
DROP INDEX spool_tasks_available_idx;
