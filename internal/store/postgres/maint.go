package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// leaderName is the one elected role: maintenance (rescue, promote, prune).
const leaderName = "maintenance"

// maintChunk bounds the rows one maintenance statement touches, so a huge
// backlog is worked through in short transactions that hold few locks.
const maintChunk = 5000

// AcquireLeadership takes or renews leadership for owner.
func (s *Store) AcquireLeadership(ctx context.Context, owner string, ttl time.Duration) (bool, error) {
	var leader string
	err := s.pool.QueryRow(ctx, `INSERT INTO spool_leader (name, owner, expires_at)
		VALUES ($1, $2, now() + $3 * interval '1 millisecond')
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
			WHERE spool_leader.owner = excluded.owner OR spool_leader.expires_at <= now()
		RETURNING owner`, leaderName, owner, ttl.Milliseconds()).Scan(&leader)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil // another owner's lease has not expired
		}
		return false, wrap("acquire leadership", err)
	}
	return leader == owner, nil
}

// ResignLeadership gives leadership up if owner holds it.
func (s *Store) ResignLeadership(ctx context.Context, owner string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM spool_leader WHERE name = $1 AND owner = $2`, leaderName, owner)
	return wrap("resign leadership", err)
}

// PromoteDue moves due scheduled and retrying tasks to available.
func (s *Store) PromoteDue(ctx context.Context) (int, error) {
	n, err := s.chunked(ctx, promoteDueSQL)
	if err != nil {
		return n, wrap("promote due", err)
	}
	if n > 0 {
		s.notify(ctx)
	}
	return n, nil
}

// The maintenance statements find the rows they locked by ctid, as the
// lease does (see leaseFreeSQL): a join on id is at the mercy of the
// generic plan's guess of what LIMIT $1 returns.

// RescueExpired requeues (or fails, when attempts are spent) running tasks
// whose lease expired. Their lease is cleared, so the old holder's
// completion is refused. The failed ones are counted as finished.
func (s *Store) RescueExpired(ctx context.Context) (int, error) {
	total := 0
	for {
		var n int
		err := s.pool.QueryRow(ctx, `WITH expired AS (
				SELECT ctid, id, updated_at AS leased_at FROM spool_tasks
				WHERE state = 'running' AND lease_expires_at <= now()
				ORDER BY lease_expires_at LIMIT $1
				FOR UPDATE SKIP LOCKED
			), upd AS (
				UPDATE spool_tasks t SET
					state = CASE WHEN t.attempt >= t.max_attempts THEN 'failed' ELSE 'retrying' END,
					finished_at = CASE WHEN t.attempt >= t.max_attempts THEN now() END,
					run_at = CASE WHEN t.attempt >= t.max_attempts THEN t.run_at ELSE now() END,
					last_error = 'lease expired',
					lease_token = NULL, lease_expires_at = NULL, updated_at = now()
				WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM expired)) AND `+recheck(`t.state = 'running'`)+`
				RETURNING t.id, t.queue, t.state, t.attempt, t.traceparent
			), counted AS (
				INSERT INTO spool_task_count_deltas (queue, state, n)
				SELECT queue, state, count(*) FROM upd WHERE state = 'failed' GROUP BY queue, state
			), recorded AS (
				-- The lost attempt, in the history: a running task's
				-- updated_at is when its lease was taken (extensions
				-- leave it alone). Its trace is the task's own.
				INSERT INTO spool_attempts (task_id, attempt, outcome, started_at, finished_at, duration_us,
					error_class, error_message, trace_id)
				SELECT u.id, u.attempt, 'expired', e.leased_at, now(),
					(extract(epoch FROM now() - e.leased_at) * 1000000)::bigint,
					'lease_expired', 'lease expired: no completion arrived before the lease ran out',
					NULLIF(substr(COALESCE(u.traceparent, ''), 4, 32), '')
				FROM upd u JOIN expired e ON e.id = u.id
			)
			SELECT count(*) FROM upd`, maintChunk).Scan(&n)
		if err != nil {
			return total, wrap("rescue expired", err)
		}
		total += n
		if n < maintChunk {
			break
		}
	}
	if total > 0 {
		s.notify(ctx)
	}
	return total, nil
}

// pruneSQL deletes up to $2 final tasks finished more than $1 milliseconds
// ago, oldest first, with their attempt records, takes them off the counts, and marks their
// idempotency keys' reservations pruned, in the same statement.
const pruneSQL = `WITH del AS (
		DELETE FROM spool_tasks WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM spool_tasks
			WHERE state IN ('succeeded', 'failed', 'cancelled')
				AND finished_at < now() - $1 * interval '1 millisecond'
			ORDER BY finished_at LIMIT $2
			FOR UPDATE SKIP LOCKED
		))
		RETURNING id, queue, state, idempotency_key
	), counted AS (
		INSERT INTO spool_task_count_deltas (queue, state, n)
		SELECT queue, state, -count(*) FROM del GROUP BY queue, state
	), attempts AS (
		-- The pruned tasks' attempt records, through the primary key.
		DELETE FROM spool_attempts a USING del d WHERE a.task_id = d.id
	), marked AS (
		-- A stored task holds its key alone (the unique index), so the
		-- key's reservation is its own; setting task_id mends one that
		-- a replica older than 00008 left pointing at a task skipped
		-- for that key.
		UPDATE spool_idempotency_keys k SET pruned_at = now(), task_id = d.id
		FROM del d
		WHERE d.idempotency_key IS NOT NULL
			AND k.queue = d.queue AND k.idempotency_key = d.idempotency_key
	)
	SELECT count(*) FROM del`

// Prune deletes up to limit final tasks finished before now-retention.
func (s *Store) Prune(ctx context.Context, retention time.Duration, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int
	if err := s.pool.QueryRow(ctx, pruneSQL, retention.Milliseconds(), limit).Scan(&n); err != nil {
		return 0, wrap("prune", err)
	}
	return n, nil
}

// PruneIdempotencyKeys releases up to limit keys whose task was pruned and
// that were first used before now-retention; the partial index holds only
// keys whose task is gone, so keys of stored tasks cost nothing here.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, retention time.Duration, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM spool_idempotency_keys WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM spool_idempotency_keys
			WHERE pruned_at IS NOT NULL AND created_at < now() - $1 * interval '1 millisecond'
			ORDER BY created_at LIMIT $2
			FOR UPDATE SKIP LOCKED
		))`, retention.Milliseconds(), limit)
	if err != nil {
		return 0, wrap("prune idempotency keys", err)
	}
	return int(tag.RowsAffected()), nil
}

// chunked runs an UPDATE taking its chunk size as $1 until a chunk comes
// back short, and returns the total rows changed.
func (s *Store) chunked(ctx context.Context, sql string) (int, error) {
	total := 0
	for {
		tag, err := s.pool.Exec(ctx, sql, maintChunk)
		if err != nil {
			return total, err
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < maintChunk {
			return total, nil
		}
	}
}

// oldestDueSQL finds each queue's oldest due task with a few index seeks
// whatever the backlog: among available tasks, the first entry of
// spool_tasks_queue_available_idx (queue, priority, run_at, id) for each
// queue and priority (0-9, the schema's range), and among scheduled and
// retrying ones, the due part of spool_tasks_due_idx (run_at), which
// holds only what promotion has not reached yet (Lease and the leader
// promote every second). It never reads the finished tasks.
const oldestDueSQL = `SELECT queue, EXTRACT(EPOCH FROM now() - min(run_at))::float8 FROM (
		SELECT q.name AS queue, a.run_at
		FROM spool_queues q CROSS JOIN generate_series(0, 9) AS p(priority)
		CROSS JOIN LATERAL (
			SELECT t.run_at FROM spool_tasks t
			WHERE t.queue = q.name AND t.state = 'available' AND t.priority = p.priority
			ORDER BY t.run_at LIMIT 1) a
		UNION ALL
		SELECT queue, run_at FROM spool_tasks
		WHERE state IN ('scheduled', 'retrying') AND run_at <= now()
	) due
	WHERE run_at <= now()
	GROUP BY queue`

// OldestDue reports how long each queue's oldest due task has waited.
func (s *Store) OldestDue(ctx context.Context) (map[string]time.Duration, error) {
	rows, err := s.pool.Query(ctx, oldestDueSQL)
	if err != nil {
		return nil, wrap("oldest due", err)
	}
	defer rows.Close()
	out := make(map[string]time.Duration)
	for rows.Next() {
		var q string
		var secs float64
		if err := rows.Scan(&q, &secs); err != nil {
			return nil, wrap("oldest due", err)
		}
		out[q] = time.Duration(secs * float64(time.Second))
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("oldest due", err)
	}
	return out, nil
}

// RefreshStats analyzes spool_tasks when its planner statistics no longer
// describe it: never analyzed with rows in it, or more rows changed since
// the last analysis than it held then (plus 1,000). It reports whether it
// ran ANALYZE.
//
// A queue table swings from empty to a large backlog in seconds, faster
// than autovacuum (which looks once a minute) follows. Until then, the
// plans PostgreSQL caches for the prepared statements are those of an
// empty table, where a sequential scan is cheapest, and the statements
// that run on them scan the whole backlog (the lease and the completion
// are kept off sequential scans by genericPlansSQL; the others are not).
// ANALYZE both corrects the estimates and invalidates those cached plans. The maintenance leader calls this
// once a tick; the check is one catalog read.
func (s *Store) RefreshStats(ctx context.Context) (bool, error) {
	var stale bool
	err := s.pool.QueryRow(ctx, `SELECT COALESCE(
			(c.reltuples < 0 AND st.n_live_tup > 1000)
			OR st.n_mod_since_analyze > greatest(c.reltuples, 0) + 1000, false)
		FROM pg_class c JOIN pg_stat_user_tables st ON st.relid = c.oid
		WHERE c.oid = 'spool_tasks'::regclass`).Scan(&stale)
	if err != nil || !stale {
		return false, wrap("refresh statistics", err)
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE spool_tasks`); err != nil {
		return false, wrap("refresh statistics", err)
	}
	return true, nil
}
