package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// leaderName is the one leadership Spool elects (maintenance).
const leaderName = "maintenance"

// AcquireLeadership makes owner the leader for ttl if nobody leads (or the
// leader's term expired), or renews owner's term; it reports whether owner
// leads now.
func (s *Store) AcquireLeadership(ctx context.Context, owner string, ttl time.Duration) (bool, error) {
	var leads bool
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		ts := s.now()
		// The DO UPDATE's WHERE leaves another owner's live term alone; then
		// no row is returned.
		var got string
		err := tx.QueryRowContext(ctx, `INSERT INTO spool_leader (name, owner, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
				WHERE spool_leader.owner = excluded.owner OR spool_leader.expires_at <= ?
			RETURNING owner`, leaderName, owner, micros(ts.Add(ttl)), micros(ts)).Scan(&got)
		if errors.Is(err, sql.ErrNoRows) {
			leads = false
			return nil
		}
		if err != nil {
			return err
		}
		leads = got == owner
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("acquire leadership: %w", classify(err))
	}
	return leads, nil
}

// ResignLeadership ends owner's term if owner leads.
func (s *Store) ResignLeadership(ctx context.Context, owner string) error {
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM spool_leader WHERE name = ? AND owner = ?`, leaderName, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("resign leadership: %w", classify(err))
	}
	return nil
}

// promoteChunk is how many tasks one statement of PromoteDue promotes.
const promoteChunk = 1000

// PromoteDue makes scheduled and retrying tasks whose run_at has passed
// available, and returns how many.
func (s *Store) PromoteDue(ctx context.Context) (int, error) {
	var n int64
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		n = 0
		ts := micros(s.now())
		// promoteChunk rows a statement: the write connection keeps a
		// statement's journal in memory (temp_store), so no statement may
		// change an unbounded number of rows. Promoted rows leave
		// spool_tasks_promote, so each round starts where the last stopped.
		for {
			res, err := tx.ExecContext(ctx, `UPDATE spool_tasks SET state = 'available', updated_at = ?1
				WHERE rowid IN (SELECT rowid FROM spool_tasks
					WHERE state IN ('scheduled', 'retrying') AND run_at <= ?1 LIMIT ?2)`, ts, promoteChunk)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += k
			if k < promoteChunk {
				return nil
			}
		}
	})
	if err != nil {
		return 0, fmt.Errorf("promote due: %w", classify(err))
	}
	if n > 0 {
		s.hub.broadcast()
	}
	return int(n), nil
}

// RescueExpired puts running tasks whose lease expired back to retrying,
// due now (or fails them if their attempts are spent), and returns how many.
// Both record "lease expired" as the last error: the attempt ended without
// a response.
func (s *Store) RescueExpired(ctx context.Context) (int, error) {
	st, err := s.statements(ctx)
	if err != nil {
		return 0, fmt.Errorf("rescue expired: %w", classify(err))
	}
	var n, retrying int64
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		n, retrying = 0, 0
		counts := make(finalCounts)
		// Leases expire on the lease clock; the rest is wall time.
		ts := micros(s.now())
		// The lost attempts, in the history, first (the update below
		// changes what they are read from): a running task's updated_at
		// is when its lease was taken (extensions leave it alone), and
		// its trace is the task's own.
		if _, err := tx.ExecContext(ctx, `INSERT INTO spool_attempts (task_id, attempt, outcome, started_at,
				finished_at, duration_us, error_class, error_message, trace_id)
			SELECT id, attempt, 'expired', updated_at, ?1, max(?1 - updated_at, 0),
				'lease_expired', 'lease expired: no completion arrived before the lease ran out',
				nullif(substr(coalesce(traceparent, ''), 4, 32), '')
			FROM spool_tasks WHERE state = 'running' AND lease_expires_at <= ?2
			ORDER BY lease_expires_at`, ts, micros(s.leaseNow())); err != nil {
			return fmt.Errorf("record expired attempts: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `UPDATE spool_tasks SET
				state       = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
				run_at      = CASE WHEN attempt >= max_attempts THEN run_at ELSE ?1 END,
				finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE NULL END,
				updated_at = ?1, lease_token = NULL, lease_expires_at = NULL,
				last_error = 'lease expired', last_status = NULL
			WHERE state = 'running' AND lease_expires_at <= ?2
			RETURNING queue, state`, ts, micros(s.leaseNow()))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var queue, state string
			if err := rows.Scan(&queue, &state); err != nil {
				return err
			}
			n++
			if state == "retrying" {
				retrying++
			}
			counts.add(queue, state, 1)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return storeCounts(ctx, tx, st, counts)
	})
	if err != nil {
		return 0, fmt.Errorf("rescue expired: %w", classify(err))
	}
	if retrying > 0 {
		s.hub.broadcast()
	}
	return int(n), nil
}

// pruneSQL deletes up to ?2 final tasks finished before ?1, oldest first,
// through spool_tasks_prune (Prune takes them off the counts).
const pruneSQL = `DELETE FROM spool_tasks WHERE id IN (
		SELECT id FROM spool_tasks
		WHERE state IN ` + finalStates + ` AND finished_at < ?1
		ORDER BY finished_at LIMIT ?2)`

// pruneAttemptsSQL deletes the attempts of the tasks in ?1 (a JSON array
// of ids) through spool_attempts_task.
const pruneAttemptsSQL = `DELETE FROM spool_attempts WHERE task_id IN (SELECT value FROM json_each(?1))`

// Prune deletes up to limit final tasks that finished before now-retention
// and returns how many; their idempotency keys stay reserved, marked
// pruned.
func (s *Store) Prune(ctx context.Context, retention time.Duration, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	st, err := s.statements(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune: %w", classify(err))
	}
	var n int64
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		n = 0
		counts := make(finalCounts)
		ts := s.now()
		rows, err := tx.QueryContext(ctx, pruneSQL+` RETURNING id, queue, state, idempotency_key`, micros(ts.Add(-retention)), limit)
		if err != nil {
			return err
		}
		type gone struct{ id, queue, key string }
		var keyed []gone
		ids := []byte{'['}
		for rows.Next() {
			var g gone
			var state string
			var key sql.NullString
			if err := rows.Scan(&g.id, &g.queue, &state, &key); err != nil {
				rows.Close()
				return err
			}
			if n > 0 {
				ids = append(ids, ',')
			}
			ids = appendJSONString(ids, g.id)
			n++
			counts.add(g.queue, state, -1)
			if key.Valid {
				g.key = key.String
				keyed = append(keyed, g)
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		if n > 0 {
			// Their attempt records, through spool_attempts_task.
			ids = append(ids, ']')
			if _, err := tx.ExecContext(ctx, pruneAttemptsSQL, string(ids)); err != nil {
				return fmt.Errorf("prune attempts: %w", err)
			}
		}
		for _, g := range keyed {
			// A stored task holds its key alone (the unique index): the
			// key's reservation is its own.
			if _, err := tx.ExecContext(ctx, `UPDATE spool_idempotency_keys SET pruned_at = ?, task_id = ?
				WHERE queue = ? AND idempotency_key = ?`, micros(ts), g.id, g.queue, g.key); err != nil {
				return fmt.Errorf("mark idempotency key: %w", err)
			}
		}
		return storeCounts(ctx, tx, st, counts)
	})
	if err != nil {
		return 0, fmt.Errorf("prune: %w", classify(err))
	}
	return int(n), nil
}

// PruneIdempotencyKeys releases up to limit keys whose task was pruned and
// that were first used before now-retention.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, retention time.Duration, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int64
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM spool_idempotency_keys WHERE (queue, idempotency_key) IN (
				SELECT queue, idempotency_key FROM spool_idempotency_keys
				WHERE pruned_at IS NOT NULL AND created_at < ?
				ORDER BY created_at LIMIT ?)`, micros(s.now().Add(-retention)), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", classify(err))
	}
	return int(n), nil
}

// FoldCounts has nothing to do: the transactions that finish, reopen and
// prune tasks change the totals of finished tasks themselves.
func (s *Store) FoldCounts(context.Context) (int, error) { return 0, nil }

// oldestDueSQL finds each queue's oldest task due at ?1 with one seek of
// spool_tasks_lease_queue (queue, priority, run_at, id) per queue and
// priority (0-9, the API's range), whatever the backlog or the history
// holds: within a queue and priority, the index is in run_at order.
const oldestDueSQL = `SELECT q.name, min(
		(SELECT t.run_at FROM spool_tasks t
		WHERE t.queue = q.name AND t.priority = p.column1 AND t.state IN ` + pendingStates + ` AND t.run_at <= ?1
		ORDER BY t.run_at LIMIT 1)) AS oldest
	FROM spool_queues q CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS p
	GROUP BY q.name HAVING oldest IS NOT NULL`

// OldestDue reports how long each queue's oldest due task has waited.
func (s *Store) OldestDue(ctx context.Context) (map[string]time.Duration, error) {
	ts := micros(s.now())
	rows, err := s.read.QueryContext(ctx, oldestDueSQL, ts)
	if err != nil {
		return nil, fmt.Errorf("oldest due: %w", classify(err))
	}
	defer rows.Close()
	out := make(map[string]time.Duration)
	for rows.Next() {
		var q string
		var runAt int64
		if err := rows.Scan(&q, &runAt); err != nil {
			return nil, fmt.Errorf("oldest due: %w", classify(err))
		}
		out[q] = time.Duration(ts-runAt) * time.Microsecond
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("oldest due: %w", classify(err))
	}
	return out, nil
}
