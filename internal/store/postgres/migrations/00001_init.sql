-- +goose Up

-- Queues hold settings and, for rate-limited queues, a token bucket that
-- leasing transactions refill and spend under the row's lock.
CREATE TABLE spool_queues (
    name         text PRIMARY KEY,
    concurrency  integer          NOT NULL DEFAULT 0 CHECK (concurrency >= 0),
    rate_limit   double precision NOT NULL DEFAULT 0 CHECK (rate_limit >= 0),
    max_attempts integer          NOT NULL CHECK (max_attempts >= 1),
    timeout_ms   bigint           NOT NULL CHECK (timeout_ms > 0),
    paused       boolean          NOT NULL DEFAULT false,
    tokens       double precision NOT NULL DEFAULT 0,
    tokens_at    timestamptz      NOT NULL DEFAULT now(),
    created_at   timestamptz      NOT NULL DEFAULT now(),
    updated_at   timestamptz      NOT NULL DEFAULT now()
);

-- No foreign key to spool_queues: Enqueue creates the queue row in the same
-- transaction anyway, and a key check would take a share lock on the queue
-- row that conflicts with the leasing lock of limited queues.
CREATE TABLE spool_tasks (
    id               uuid        PRIMARY KEY,
    queue            text        NOT NULL,
    state            text        NOT NULL CHECK (state IN
                         ('scheduled', 'available', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    priority         smallint    NOT NULL CHECK (priority BETWEEN 0 AND 9),
    run_at           timestamptz NOT NULL,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    timeout_ms       bigint      NOT NULL CHECK (timeout_ms > 0),
    target_url       text        NOT NULL,
    target_method    text        NOT NULL,
    target_headers   jsonb,
    payload          bytea,
    content_type     text        NOT NULL DEFAULT '',
    idempotency_key  text,
    lease_token      bigint,
    lease_expires_at timestamptz,
    last_error       text        NOT NULL DEFAULT '',
    last_status      integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- Idempotency: one task per (queue, key).
CREATE UNIQUE INDEX spool_tasks_idempotency_idx ON spool_tasks (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Leasing across queues, in the order Lease promises.
CREATE INDEX spool_tasks_lease_idx ON spool_tasks (priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retrying');

-- Leasing inside one limited queue, and "does this queue have due work".
CREATE INDEX spool_tasks_queue_lease_idx ON spool_tasks (queue, priority, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retrying');

-- Listing a queue in id order (the API's cursor).
CREATE INDEX spool_tasks_queue_id_idx ON spool_tasks (queue, id);

-- Pruning finished tasks.
CREATE INDEX spool_tasks_finished_idx ON spool_tasks (finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');

-- Rescuing expired leases.
CREATE INDEX spool_tasks_rescue_idx ON spool_tasks (lease_expires_at)
    WHERE state = 'running';

-- Counting a limited queue's running tasks while leasing.
CREATE INDEX spool_tasks_running_idx ON spool_tasks (queue)
    WHERE state = 'running';

-- Lease tokens come from a sequence rather than a random number: a token is
-- then never reused, so a stale holder can never match a later lease.
CREATE SEQUENCE spool_lease_token_seq AS bigint;

-- One row per elected role ("maintenance").
CREATE TABLE spool_leader (
    name       text        PRIMARY KEY,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE spool_leader;
DROP SEQUENCE spool_lease_token_seq;
DROP TABLE spool_tasks;
DROP TABLE spool_queues;
