package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
)

const pendingStates = `('scheduled', 'available', 'retrying')`

// leaseSQL leases up to $1 due tasks matching filter for $2 milliseconds.
// SKIP LOCKED lets concurrent callers take disjoint rows; a row another
// transaction changed meanwhile is re-checked against the WHERE after it is
// locked, so a task is never leased twice. Tokens come from a sequence and
// are never reused.
func leaseSQL(filter string) string {
	return `
WITH picked AS (
	SELECT t.id FROM spool_tasks t
	WHERE t.state IN ` + pendingStates + ` AND t.run_at <= now() AND ` + filter + `
	ORDER BY t.priority, t.run_at, t.id
	LIMIT $1
	FOR UPDATE SKIP LOCKED
)
UPDATE spool_tasks t
SET state = 'running', attempt = t.attempt + 1,
	lease_token = nextval('spool_lease_token_seq'),
	lease_expires_at = now() + $2 * interval '1 millisecond',
	updated_at = now()
FROM picked
WHERE t.id = picked.id
RETURNING ` + taskColsT + `, t.lease_token, t.lease_expires_at`
}

var (
	// Queues without limits (and not paused), in one statement.
	leaseFreeSQL = leaseSQL(`NOT EXISTS (
		SELECT 1 FROM spool_queues q
		WHERE q.name = t.queue AND (q.paused OR q.concurrency > 0 OR q.rate_limit > 0))`)
	// One limited queue, whose row the transaction has locked.
	leaseQueueSQL = leaseSQL(`t.queue = $3`)
)

// limitedQueuesSQL finds limited, unpaused queues that have due tasks and,
// judging by a snapshot, room to start one. The real check runs under the
// queue's lock; this only spares saturated queues a locking transaction.
const limitedQueuesSQL = `
SELECT q.name FROM spool_queues q
WHERE NOT q.paused AND (q.concurrency > 0 OR q.rate_limit > 0)
	AND (q.concurrency = 0 OR q.concurrency >
		(SELECT count(*) FROM spool_tasks r WHERE r.queue = q.name AND r.state = 'running'))
	AND (q.rate_limit = 0 OR least(greatest(1, q.rate_limit),
		q.tokens + q.rate_limit * extract(epoch FROM clock_timestamp() - q.tokens_at)) >= 1)
	AND EXISTS (SELECT 1 FROM spool_tasks t
		WHERE t.queue = q.name AND t.state IN ` + pendingStates + ` AND t.run_at <= now())`

// Lease takes up to limit due tasks. Limited queues go first: each is
// bounded by its own limits, so it cannot starve the others, whereas a busy
// unlimited queue filling every batch would starve a limited one.
func (s *Store) Lease(ctx context.Context, limit int, leaseFor time.Duration) ([]store.Lease, error) {
	if limit <= 0 {
		return nil, nil
	}
	ms := leaseFor.Milliseconds()
	var out []store.Lease
	// partial returns what was leased with a nil error: those tasks are
	// running now and would otherwise wait for rescue.
	partial := func(op string, err error) ([]store.Lease, error) {
		if len(out) > 0 && ctx.Err() == nil {
			s.log.Warn("lease: partial batch", "op", op, "leased", len(out), "error", err)
			sortLeases(out)
			return out, nil
		}
		return nil, wrap(op, err)
	}

	rows, err := s.pool.Query(ctx, limitedQueuesSQL)
	if err != nil {
		return nil, wrap("lease: limited queues", err)
	}
	limited, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap("lease: limited queues", err)
	}
	// A random order keeps one queue from always being served last when
	// the batch fills up.
	rand.Shuffle(len(limited), func(i, j int) { limited[i], limited[j] = limited[j], limited[i] })
	for _, q := range limited {
		if len(out) >= limit {
			break
		}
		ls, err := s.leaseLimited(ctx, q, limit-len(out), ms)
		if err != nil {
			return partial("lease: queue "+q, err)
		}
		out = append(out, ls...)
	}

	if n := limit - len(out); n > 0 {
		rows, err := s.pool.Query(ctx, leaseFreeSQL, n, ms)
		if err != nil {
			return partial("lease", err)
		}
		ls, err := collectLeases(rows)
		if err != nil {
			return partial("lease", err)
		}
		out = append(out, ls...)
	}
	sortLeases(out)
	return out, nil
}

// leaseLimited leases from one queue with a concurrency or rate limit.
// Locking the queue row serializes this across replicas, so the running
// count and the token bucket read under the lock are exact.
func (s *Store) leaseLimited(ctx context.Context, queue string, limit int, ms int64) ([]store.Lease, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	// The lock and the read are separate statements: in READ COMMITTED each
	// statement takes a fresh snapshot, so the count below sees the tasks
	// that the previous lock holder leased and committed. (A subquery in
	// the locking statement would use the snapshot from before the wait.)
	// One batch keeps it one round trip.
	var (
		b                    pgx.Batch
		paused               bool
		concurrency, running int
		rate, tokens         float64
		tokensAt, now        time.Time
	)
	b.Queue(`SELECT 1 FROM spool_queues WHERE name = $1 FOR UPDATE`, queue)
	b.Queue(`SELECT q.paused, q.concurrency, q.rate_limit, q.tokens, q.tokens_at, clock_timestamp(),
			(SELECT count(*) FROM spool_tasks r WHERE r.queue = q.name AND r.state = 'running')
		FROM spool_queues q WHERE q.name = $1`, queue).
		QueryRow(func(row pgx.Row) error {
			return row.Scan(&paused, &concurrency, &rate, &tokens, &tokensAt, &now, &running)
		})
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil // queue row gone; nothing to lease
		}
		return nil, err
	}
	if paused || (concurrency == 0 && rate == 0) {
		// Changed since limitedQueuesSQL; the next call takes the other path.
		return nil, tx.Commit(ctx)
	}
	allowed := limit
	if concurrency > 0 {
		allowed = min(allowed, concurrency-running)
	}
	if rate > 0 {
		tokens = refill(tokens, rate, now.Sub(tokensAt))
		// The epsilon absorbs float error, e.g. 0.1*10 summing to 0.999….
		allowed = min(allowed, int(math.Floor(tokens+1e-9)))
	}
	if allowed <= 0 {
		return nil, tx.Commit(ctx)
	}
	rows, err := tx.Query(ctx, leaseQueueSQL, allowed, ms, queue)
	if err != nil {
		return nil, err
	}
	ls, err := collectLeases(rows)
	if err != nil {
		return nil, err
	}
	if rate > 0 && len(ls) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE spool_queues SET tokens = $2, tokens_at = $3 WHERE name = $1`,
			queue, tokens-float64(len(ls)), now); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return ls, nil
}

// refill is the token bucket: rate tokens per second since the last
// update, capped at a burst of max(1, rate).
func refill(tokens, rate float64, elapsed time.Duration) float64 {
	if elapsed < 0 {
		elapsed = 0
	}
	return min(max(1, rate), tokens+rate*elapsed.Seconds())
}

func collectLeases(rows pgx.Rows) ([]store.Lease, error) {
	defer rows.Close()
	var out []store.Lease
	for rows.Next() {
		var l store.Lease
		t, err := scanTask(rows, &l.Token, &l.ExpiresAt)
		if err != nil {
			return nil, err
		}
		l.Task, l.ExpiresAt = t, l.ExpiresAt.UTC()
		out = append(out, l)
	}
	return out, rows.Err()
}

// sortLeases puts a batch in lease order (RETURNING has no order).
func sortLeases(ls []store.Lease) {
	slices.SortFunc(ls, func(a, b store.Lease) int {
		return cmp.Or(
			cmp.Compare(a.Task.Priority, b.Task.Priority),
			a.Task.RunAt.Compare(b.Task.RunAt),
			cmp.Compare(a.Task.ID, b.Task.ID))
	})
}

// leaseRefArrays splits refs into parallel arrays, leaving out ids that
// cannot exist.
func leaseRefArrays(refs []store.LeaseRef) (ids []string, tokens []int64) {
	for _, r := range refs {
		if validID(r.TaskID) {
			ids, tokens = append(ids, r.TaskID), append(tokens, r.Token)
		}
	}
	return ids, tokens
}

// ExtendLeases pushes the expiry of held leases and reports the lost ones.
func (s *Store) ExtendLeases(ctx context.Context, refs []store.LeaseRef, leaseFor time.Duration) ([]store.LeaseRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	ids, tokens := leaseRefArrays(refs)
	rows, err := s.pool.Query(ctx, `UPDATE spool_tasks t
		SET lease_expires_at = now() + $3 * interval '1 millisecond'
		FROM unnest($1::uuid[], $2::bigint[]) AS c(id, token)
		WHERE t.id = c.id AND t.state = 'running' AND t.lease_token = c.token
		RETURNING t.id::text, t.lease_token`, ids, tokens, leaseFor.Milliseconds())
	if err != nil {
		return nil, wrap("extend leases", err)
	}
	held := make(map[store.LeaseRef]bool, len(refs))
	var ref store.LeaseRef
	if _, err := pgx.ForEachRow(rows, []any{&ref.TaskID, &ref.Token}, func() error {
		held[ref] = true
		return nil
	}); err != nil {
		return nil, wrap("extend leases", err)
	}
	var lost []store.LeaseRef
	for _, r := range refs {
		if !held[r] {
			lost = append(lost, r)
		}
	}
	return lost, nil
}

// completeSQL applies a batch of completions in one statement. SET
// expressions see the row before the update, so t.attempt is the attempt
// that just ended. Only a running task still under the presented token
// changes: a rescued, cancelled or finished task does not.
const completeSQL = `
UPDATE spool_tasks t SET
	state = CASE c.outcome
		WHEN 1 THEN 'succeeded'
		WHEN 3 THEN 'failed'
		WHEN 4 THEN 'available'
		ELSE CASE WHEN t.attempt >= t.max_attempts THEN 'failed' ELSE 'retrying' END
	END,
	run_at = CASE
		WHEN c.outcome = 4 THEN now()
		WHEN c.outcome = 2 AND t.attempt < t.max_attempts THEN COALESCE(c.retry_at, now())
		ELSE t.run_at
	END,
	attempt = CASE WHEN c.outcome = 4 THEN greatest(t.attempt - 1, 0) ELSE t.attempt END,
	finished_at = CASE
		WHEN c.outcome IN (1, 3) OR (c.outcome = 2 AND t.attempt >= t.max_attempts) THEN now()
	END,
	lease_token = NULL,
	lease_expires_at = NULL,
	last_error = c.last_error,
	last_status = c.last_status,
	updated_at = now()
FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::timestamptz[], $5::text[], $6::int[])
	AS c(id, token, outcome, retry_at, last_error, last_status)
WHERE t.id = c.id AND t.state = 'running' AND t.lease_token = c.token
RETURNING t.id::text, t.state IN ('available', 'retrying') AND t.run_at <= now()`

// Complete applies completions in one statement (so one transaction).
func (s *Store) Complete(ctx context.Context, cs []store.Completion) ([]bool, error) {
	accepted := make([]bool, len(cs))
	if len(cs) == 0 {
		return accepted, nil
	}
	var (
		ids, errs        []string
		tokens           []int64
		outcomes, status []int32
		retryAt          []*time.Time
		sent             = make(map[string]int, len(cs)) // task id -> index in cs
	)
	for i, c := range cs {
		switch c.Outcome {
		case store.Succeeded, store.Retry, store.Fail, store.Release:
		default:
			return nil, fmt.Errorf("complete: task %s: unknown outcome %d", c.TaskID, c.Outcome)
		}
		if !validID(c.TaskID) {
			continue // cannot be a held lease
		}
		if _, dup := sent[c.TaskID]; dup {
			// One attempt ends once; a second report for the same task in
			// the batch is refused rather than racing the first.
			continue
		}
		sent[c.TaskID] = i
		var ra *time.Time
		if c.Outcome == store.Retry && !c.RetryAt.IsZero() {
			t := c.RetryAt
			ra = &t
		}
		ids, tokens, outcomes = append(ids, c.TaskID), append(tokens, c.Token), append(outcomes, int32(c.Outcome))
		retryAt, errs, status = append(retryAt, ra), append(errs, c.LastError), append(status, int32(c.LastStatus))
	}
	if len(ids) == 0 {
		return accepted, nil
	}
	rows, err := s.pool.Query(ctx, completeSQL, ids, tokens, outcomes, retryAt, errs, status)
	if err != nil {
		return nil, wrap("complete", err)
	}
	var (
		id     string
		dueNow bool
		anyDue bool
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &dueNow}, func() error {
		if i, ok := sent[id]; ok {
			accepted[i] = true
		}
		anyDue = anyDue || dueNow
		return nil
	}); err != nil {
		return nil, wrap("complete", err)
	}
	if anyDue {
		// A released task or an immediate retry can run now. The update is
		// committed; a lost signal only costs a poll interval.
		s.notify(ctx)
	}
	return accepted, nil
}

// notify signals spool_wakeup outside any transaction; failures are logged
// because callers poll anyway.
func (s *Store) notify(ctx context.Context) {
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, '')`, wakeupChannel); err != nil {
		s.log.Debug("notify failed", "error", err)
	}
}
