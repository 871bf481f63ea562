-- Leasing beside a held-back backlog reads only what it leases.
--
-- When some queue is paused or limited, the free lease cannot walk the
-- global available index (spool_tasks_available_idx) without reading every
-- task the held queues have piled up, at every lease. It takes each free
-- queue's first available tasks from this index instead, and a limited
-- queue's candidates and due-work probe use it too. It replaces the
-- per-queue index of 00001, which also held scheduled and retrying tasks:
-- Lease promotes due ones to available before it picks, so only available
-- tasks are ever picked, and a queue's tasks scheduled for later no longer
-- stand in the way of its walk.

-- +goose Up
CREATE INDEX spool_tasks_queue_available_idx ON spool_tasks (queue, priority, run_at, id)
    WHERE state = 'available';
DROP INDEX spool_tasks_queue_lease_idx;

-- +goose Down
CREATE INDEX spool_tasks_queue_lease_idx ON spool_tasks (queue, priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retrying');
DROP INDEX spool_tasks_queue_available_idx;
