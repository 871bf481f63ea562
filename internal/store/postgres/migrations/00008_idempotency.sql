-- Idempotency keys as reservations: one row per (queue, key) holding the
-- fingerprint of the request the key was first used for and the task it
-- made. A key is reserved while its task is stored (Prune stamps pruned_at
-- when it deletes the task) and until PruneIdempotencyKeys releases it,
-- once pruned_at is set and created_at is older than the retention.
--
-- Versions 00006 (and 00007, destinations) belong to other changes; goose
-- versions only need to be unique and ordered, and store/migrate applies
-- whichever are missing.

-- +goose Up

-- fingerprint NULL: unknown (a task stored before this migration), which
-- matches any request, as keys did before.
CREATE TABLE spool_idempotency_keys (
    queue           text        NOT NULL,
    idempotency_key text        NOT NULL,
    fingerprint     bytea,
    task_id         uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    pruned_at       timestamptz,
    PRIMARY KEY (queue, idempotency_key)
);

-- Releasing keys: only those whose task is gone are ever looked at.
CREATE INDEX spool_idempotency_keys_release_idx ON spool_idempotency_keys (created_at)
    WHERE pruned_at IS NOT NULL;

INSERT INTO spool_idempotency_keys (queue, idempotency_key, task_id, created_at)
SELECT queue, idempotency_key, id, created_at FROM spool_tasks
WHERE idempotency_key IS NOT NULL;

-- +goose Down
DROP TABLE spool_idempotency_keys;
