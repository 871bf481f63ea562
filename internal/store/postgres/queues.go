package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

const queueCols = `name, concurrency, rate_limit, max_attempts, timeout_ms, paused, weight, retry_statuses, created_at, updated_at`

func scanQueue(row pgx.Row) (task.Queue, error) {
	var q task.Queue
	var timeoutMS int64
	var retry string
	if err := row.Scan(&q.Name, &q.Concurrency, &q.RateLimit, &q.MaxAttempts, &timeoutMS, &q.Paused, &q.Weight, &retry,
		&q.CreatedAt, &q.UpdatedAt); err != nil {
		return task.Queue{}, err
	}
	rs, err := task.ParseRetryStatuses(retry)
	if err != nil {
		return task.Queue{}, fmt.Errorf("queue %s: stored %w", q.Name, err)
	}
	q.RetryStatuses = rs
	q.Timeout = time.Duration(timeoutMS) * time.Millisecond
	q.CreatedAt, q.UpdatedAt = q.CreatedAt.UTC(), q.UpdatedAt.UTC()
	return q, nil
}

// zeroCounts has an entry for every state, as the contract asks.
func zeroCounts() map[task.State]int64 {
	m := make(map[task.State]int64, len(task.States))
	for _, st := range task.States {
		m[st] = 0
	}
	return m
}

// countsSQL counts tasks by queue and state; $1 NULL means every queue.
// It reads no more than the backlog, whatever the retention keeps: each
// pending state of each queue is an index-only range of
// spool_tasks_queue_state_idx, and the final states are the folded totals
// plus the deltas not folded yet (see migration 00010). One statement, one
// snapshot: the figures are exact and consistent with each other.
const countsSQL = `SELECT q.name, s.state,
		(SELECT count(*) FROM spool_tasks t WHERE t.queue = q.name AND t.state = s.state)
	FROM spool_queues q CROSS JOIN unnest('{scheduled,available,running,retrying}'::text[]) AS s(state)
	WHERE $1::text IS NULL OR q.name = $1
	UNION ALL
	SELECT queue, state, sum(n)::bigint FROM (
		SELECT queue, state, n FROM spool_task_counts
		UNION ALL
		SELECT queue, state, n FROM spool_task_count_deltas) c
	WHERE $1::text IS NULL OR queue = $1
	GROUP BY queue, state`

// queuesWithCounts reads queues (one, or all when name is nil) and their
// counts in one round trip.
func queuesWithCounts(ctx context.Context, q interface {
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}, name *string) ([]task.Queue, error) {
	var (
		b      pgx.Batch
		queues []task.Queue
		counts = make(map[string]map[task.State]int64)
	)
	b.Queue(`SELECT `+queueCols+` FROM spool_queues WHERE $1::text IS NULL OR name = $1 ORDER BY name`, name).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				q, err := scanQueue(rows)
				if err != nil {
					return err
				}
				queues = append(queues, q)
			}
			return rows.Err()
		})
	b.Queue(countsSQL, name).Query(func(rows pgx.Rows) error {
		var queue, state string
		var n int64
		_, err := pgx.ForEachRow(rows, []any{&queue, &state, &n}, func() error {
			if counts[queue] == nil {
				counts[queue] = zeroCounts()
			}
			counts[queue][task.State(state)] = n
			return nil
		})
		return err
	})
	if err := q.SendBatch(ctx, &b).Close(); err != nil {
		return nil, err
	}
	for i := range queues {
		queues[i].Counts = counts[queues[i].Name]
		if queues[i].Counts == nil {
			queues[i].Counts = zeroCounts()
		}
	}
	return queues, nil
}

// foldCountsSQL moves the count deltas into the totals. Two leaders
// folding at once (a handover) cannot count a delta twice: the second
// DELETE waits for the first's row locks and then skips the rows it
// deleted.
const foldCountsSQL = `WITH d AS (DELETE FROM spool_task_count_deltas RETURNING queue, state, n)
	INSERT INTO spool_task_counts AS c (queue, state, n)
	SELECT queue, state, sum(n) FROM d GROUP BY queue, state
	ON CONFLICT (queue, state) DO UPDATE SET n = c.n + excluded.n`

// FoldCounts folds the deltas that completions, rescues, cancels, retries
// and prunes appended into the per-queue totals of finished tasks, so that
// counting reads a few rows. It reports how many (queue, state) totals
// changed.
func (s *Store) FoldCounts(ctx context.Context) (int, error) {
	tag, err := s.pool.Exec(ctx, foldCountsSQL)
	if err != nil {
		return 0, wrap("fold counts", err)
	}
	return int(tag.RowsAffected()), nil
}

// GetQueue returns a queue with its counts.
func (s *Store) GetQueue(ctx context.Context, name string) (task.Queue, error) {
	qs, err := queuesWithCounts(ctx, s.pool, &name)
	if err != nil {
		return task.Queue{}, wrap("get queue "+name, err)
	}
	if len(qs) == 0 {
		return task.Queue{}, fmt.Errorf("get queue %s: %w", name, store.ErrNotFound)
	}
	return qs[0], nil
}

// ListQueues returns every queue by name, with counts.
func (s *Store) ListQueues(ctx context.Context) ([]task.Queue, error) {
	qs, err := queuesWithCounts(ctx, s.pool, nil)
	if err != nil {
		return nil, wrap("list queues", err)
	}
	if qs == nil {
		qs = []task.Queue{}
	}
	return qs, nil
}

// ListQueueSettings returns every queue's settings by name, without counts.
func (s *Store) ListQueueSettings(ctx context.Context) ([]task.Queue, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+queueCols+` FROM spool_queues ORDER BY name`)
	if err != nil {
		return nil, wrap("list queue settings", err)
	}
	qs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (task.Queue, error) { return scanQueue(row) })
	if err != nil {
		return nil, wrap("list queue settings", err)
	}
	if qs == nil {
		qs = []task.Queue{}
	}
	return qs, nil
}

// UpdateQueue applies p, creating the queue first if needed. Changing the
// rate limit refills the token bucket to its new burst, so a queue starts
// (or restarts) at full speed.
func (s *Store) UpdateQueue(ctx context.Context, name string, p task.QueuePatch) (task.Queue, error) {
	op := "update queue " + name
	if err := validatePatch(p); err != nil {
		return task.Queue{}, fmt.Errorf("%s: %w", op, err)
	}
	var timeoutMS *int64
	if p.Timeout != nil {
		ms := p.Timeout.Milliseconds()
		timeoutMS = &ms
	}
	var retry *string
	if p.RetryStatuses != nil {
		r := p.RetryStatuses.String()
		retry = &r
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return task.Queue{}, wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `INSERT INTO spool_queues (name, max_attempts, timeout_ms) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO NOTHING`, name, task.DefaultMaxAttempts, task.DefaultTimeout.Milliseconds()); err != nil {
		return task.Queue{}, wrap(op, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE spool_queues SET
			concurrency  = COALESCE($2::int, concurrency),
			rate_limit   = COALESCE($3::double precision, rate_limit),
			max_attempts = COALESCE($4::int, max_attempts),
			timeout_ms   = COALESCE($5::bigint, timeout_ms),
			paused       = COALESCE($6::boolean, paused),
			weight       = COALESCE($7::int, weight),
			retry_statuses = COALESCE($8::text, retry_statuses),
			tokens       = CASE WHEN $3::double precision <> rate_limit THEN greatest(1, $3::double precision) ELSE tokens END,
			tokens_at    = CASE WHEN $3::double precision <> rate_limit THEN clock_timestamp() ELSE tokens_at END,
			updated_at   = now()
		WHERE name = $1`, name, p.Concurrency, p.RateLimit, p.MaxAttempts, timeoutMS, p.Paused, p.Weight, retry); err != nil {
		return task.Queue{}, wrap(op, err)
	}
	// Resuming or loosening limits can make tasks runnable right away; a
	// new weight changes which queue's task goes next.
	if (p.Paused != nil && !*p.Paused) || p.Concurrency != nil || p.RateLimit != nil || p.Weight != nil {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, wakeupChannel); err != nil {
			return task.Queue{}, wrap(op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return task.Queue{}, wrap(op, err)
	}
	// Counted after the commit: the change never waits for a count, and
	// the queue row's lock (which limited queues' leases take) is not held
	// while counting.
	qs, err := queuesWithCounts(ctx, s.pool, &name)
	if err != nil {
		return task.Queue{}, wrap(op, err)
	}
	if len(qs) == 0 {
		return task.Queue{}, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return qs[0], nil
}

// validatePatch rejects settings the schema would refuse, with a message
// that names the field (the API validates first; this is the backstop).
func validatePatch(p task.QueuePatch) error {
	switch {
	case p.Concurrency != nil && *p.Concurrency < 0:
		return fmt.Errorf("concurrency %d is negative", *p.Concurrency)
	case p.RateLimit != nil && (*p.RateLimit < 0 || math.IsNaN(*p.RateLimit) || math.IsInf(*p.RateLimit, 0)):
		return fmt.Errorf("rate_limit %v is not a non-negative number", *p.RateLimit)
	case p.MaxAttempts != nil && (*p.MaxAttempts < 1 || *p.MaxAttempts > task.MaxMaxAttempts):
		return fmt.Errorf("max_attempts %d is outside 1..%d", *p.MaxAttempts, task.MaxMaxAttempts)
	case p.Timeout != nil && (*p.Timeout < time.Millisecond || *p.Timeout > task.MaxTimeout):
		return fmt.Errorf("timeout %v is outside 1ms..%v", *p.Timeout, task.MaxTimeout)
	case p.Weight != nil && (*p.Weight < 1 || *p.Weight > task.MaxWeight):
		return fmt.Errorf("weight %d is outside 1..%d", *p.Weight, task.MaxWeight)
	}
	return nil
}
