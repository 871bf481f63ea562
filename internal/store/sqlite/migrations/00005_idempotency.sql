-- Idempotency keys as reservations: one row per (queue, key) holding the
-- fingerprint of the request the key was first used for and the task it
-- made. A key is reserved while its task is stored (Prune stamps pruned_at
-- when it deletes the task) and until PruneIdempotencyKeys releases it,
-- once pruned_at is set and created_at is older than the retention. Times
-- are microseconds since the epoch, as in spool_tasks.
--
-- Version 00003 belongs to another change; store/migrate applies whichever
-- versions are missing, in order.

-- +goose Up

-- fingerprint NULL: unknown (a task stored before this migration), which
-- matches any request, as keys did before.
CREATE TABLE spool_idempotency_keys (
    queue           TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    fingerprint     BLOB,
    task_id         TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    pruned_at       INTEGER,
    PRIMARY KEY (queue, idempotency_key)
) STRICT, WITHOUT ROWID;

CREATE INDEX spool_idempotency_keys_release ON spool_idempotency_keys (created_at)
    WHERE pruned_at IS NOT NULL;

INSERT INTO spool_idempotency_keys (queue, idempotency_key, task_id, created_at)
SELECT queue, idempotency_key, id, created_at FROM spool_tasks
WHERE idempotency_key IS NOT NULL;

-- +goose Down
DROP TABLE spool_idempotency_keys;
