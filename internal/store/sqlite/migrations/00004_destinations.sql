-- Per-destination protection (see task.Destination), mirroring the
-- PostgreSQL schema: one shared row per destination and one report row per
-- (destination, replica). Times are unix microseconds (UTC), NULL for the
-- zero time; adaptive_limit is the contract's Limit ("limit" is reserved).
--
-- Version 00003 is taken by another change; store/migrate applies
-- whichever versions are missing, so the gap is deliberate.

-- +goose Up
CREATE TABLE spool_destinations (
    name               TEXT    NOT NULL PRIMARY KEY,
    max_concurrency    INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrency BETWEEN 0 AND 100000),
    rate_limit         REAL    NOT NULL DEFAULT 0 CHECK (rate_limit BETWEEN 0 AND 1000000),
    adaptive_limit     REAL    NOT NULL DEFAULT 0,
    limit_decreased_at INTEGER,
    breaker            TEXT    NOT NULL DEFAULT 'closed' CHECK (breaker IN ('closed', 'open', 'half_open')),
    failures           INTEGER NOT NULL DEFAULT 0,
    open_until         INTEGER,
    cooldown_ms        INTEGER NOT NULL DEFAULT 0,
    probe_owner        TEXT    NOT NULL DEFAULT '',
    probe_until        INTEGER,
    hold_until         INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
) STRICT;

CREATE TABLE spool_destination_reports (
    destination TEXT    NOT NULL,
    replica     TEXT    NOT NULL,
    in_flight   INTEGER NOT NULL,
    successes   INTEGER NOT NULL,
    failures    INTEGER NOT NULL,
    latency_us  INTEGER NOT NULL,
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (destination, replica)
) STRICT;

-- +goose Down
DROP TABLE spool_destination_reports;
DROP TABLE spool_destinations;
