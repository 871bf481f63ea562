-- Per-destination protection (see task.Destination): one shared row per
-- destination, changed by the dispatchers of every replica under its row
-- lock, and one report row per (destination, replica) that SyncDestinations
-- replaces about once a second while the replica delivers there.
--
-- Version 00006 is taken by another change; goose-format versions only
-- need to be unique and ordered, and store/migrate applies whichever are
-- missing, so the gap is deliberate.

-- +goose Up

-- Zero times are NULL. adaptive_limit is the contract's Limit ("limit" is
-- a reserved word in both databases).
CREATE TABLE spool_destinations (
    name               text             PRIMARY KEY,
    max_concurrency    integer          NOT NULL DEFAULT 0 CHECK (max_concurrency BETWEEN 0 AND 100000),
    rate_limit         double precision NOT NULL DEFAULT 0 CHECK (rate_limit BETWEEN 0 AND 1000000),
    adaptive_limit     double precision NOT NULL DEFAULT 0,
    limit_decreased_at timestamptz,
    breaker            text             NOT NULL DEFAULT 'closed' CHECK (breaker IN ('closed', 'open', 'half_open')),
    failures           integer          NOT NULL DEFAULT 0,
    open_until         timestamptz,
    cooldown_ms        bigint           NOT NULL DEFAULT 0,
    probe_owner        text             NOT NULL DEFAULT '',
    probe_until        timestamptz,
    hold_until         timestamptz,
    created_at         timestamptz      NOT NULL DEFAULT now(),
    updated_at         timestamptz      NOT NULL DEFAULT now()
);

-- No foreign key to spool_destinations: the report is written under the
-- destination's lock anyway, and PruneDestinations deletes reports first.
-- No index on reported_at: the table holds destinations x replicas rows,
-- which the leader's prune scans once a minute.
CREATE TABLE spool_destination_reports (
    destination text        NOT NULL,
    replica     text        NOT NULL,
    in_flight   integer     NOT NULL,
    successes   bigint      NOT NULL,
    failures    bigint      NOT NULL,
    latency_us  bigint      NOT NULL,
    reported_at timestamptz NOT NULL,
    PRIMARY KEY (destination, replica)
);

-- +goose Down
DROP TABLE spool_destination_reports;
DROP TABLE spool_destinations;
