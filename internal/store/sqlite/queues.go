package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/spoolhq/spool/internal/task"
)

const queueCols = `name, concurrency, rate_limit, max_attempts, timeout_ms, paused, weight, retry_statuses, created_at, updated_at`

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func scanQueue(r rowScanner) (task.Queue, error) {
	var (
		q                task.Queue
		timeoutMS        int64
		paused           int
		created, updated int64
		retry            string
	)
	if err := r.Scan(&q.Name, &q.Concurrency, &q.RateLimit, &q.MaxAttempts, &timeoutMS, &paused, &q.Weight, &retry,
		&created, &updated); err != nil {
		return task.Queue{}, err
	}
	rs, err := task.ParseRetryStatuses(retry)
	if err != nil {
		return task.Queue{}, fmt.Errorf("queue %s: stored %w", q.Name, err)
	}
	q.RetryStatuses = rs
	q.Timeout = time.Duration(timeoutMS) * time.Millisecond
	q.Paused = paused != 0
	q.CreatedAt = fromMicros(created)
	q.UpdatedAt = fromMicros(updated)
	q.Counts = zeroCounts()
	return q, nil
}

// zeroCounts has every state, so callers never meet a missing key.
func zeroCounts() map[task.State]int64 {
	m := make(map[task.State]int64, len(task.States))
	for _, st := range task.States {
		m[st] = 0
	}
	return m
}

// countsSQL counts tasks by queue and state (?1 NULL: every queue). It
// reads no more than the backlog, whatever the retention keeps: each
// pending state of each queue is a range of spool_tasks_queue_state, which
// covers the count, and the final states are the totals of
// spool_task_counts (migration 00007), kept by the writes (finalCounts).
const countsSQL = `SELECT q.name, s.column1,
		(SELECT count(*) FROM spool_tasks t WHERE t.queue = q.name AND t.state = s.column1)
	FROM spool_queues q CROSS JOIN (VALUES ('scheduled'), ('available'), ('running'), ('retrying')) AS s
	WHERE ?1 IS NULL OR q.name = ?1
	UNION ALL
	SELECT queue, state, n FROM spool_task_counts WHERE ?1 IS NULL OR queue = ?1`

// addCounts reads countsSQL for name (nil: every queue) into the Counts of
// qs, which byName indexes.
func addCounts(ctx context.Context, q querier, name any, qs []task.Queue, byName map[string]int) error {
	rows, err := q.QueryContext(ctx, countsSQL, name)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			queue, st string
			n         int64
		)
		if err := rows.Scan(&queue, &st, &n); err != nil {
			return err
		}
		if i, ok := byName[queue]; ok {
			qs[i].Counts[task.State(st)] = n
		}
	}
	return rows.Err()
}

// getQueue reads one queue with its counts through q.
func getQueue(ctx context.Context, q querier, name string) (task.Queue, error) {
	qu, err := scanQueue(q.QueryRowContext(ctx, `SELECT `+queueCols+` FROM spool_queues WHERE name = ?`, name))
	if err != nil {
		return task.Queue{}, err
	}
	qs := []task.Queue{qu}
	if err := addCounts(ctx, q, name, qs, map[string]int{name: 0}); err != nil {
		return task.Queue{}, err
	}
	return qs[0], nil
}

// readTx runs fn in a read transaction on the read pool, so that what fn
// reads in several statements is one snapshot.
func (s *Store) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return classify(err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only: nothing to keep or lose
	return fn(tx)
}

// GetQueue returns a queue's settings and counts (store.ErrNotFound).
func (s *Store) GetQueue(ctx context.Context, name string) (task.Queue, error) {
	var out task.Queue
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = getQueue(ctx, tx, name)
		return err
	})
	if err != nil {
		return task.Queue{}, fmt.Errorf("get queue %q: %w", name, classify(err))
	}
	return out, nil
}

// ListQueues returns every queue by name, with counts.
func (s *Store) ListQueues(ctx context.Context) ([]task.Queue, error) {
	out := []task.Queue{}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+queueCols+` FROM spool_queues ORDER BY name`)
		if err != nil {
			return err
		}
		byName := make(map[string]int)
		for rows.Next() {
			q, err := scanQueue(rows)
			if err != nil {
				rows.Close()
				return err
			}
			byName[q.Name] = len(out)
			out = append(out, q)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		return addCounts(ctx, tx, nil, out, byName)
	})
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", classify(err))
	}
	return out, nil
}

// ListQueueSettings returns every queue's settings by name, without counts.
func (s *Store) ListQueueSettings(ctx context.Context) ([]task.Queue, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+queueCols+` FROM spool_queues ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list queue settings: %w", classify(err))
	}
	defer rows.Close()
	out := []task.Queue{}
	for rows.Next() {
		q, err := scanQueue(rows)
		if err != nil {
			return nil, fmt.Errorf("list queue settings: %w", classify(err))
		}
		q.Counts = nil
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list queue settings: %w", classify(err))
	}
	return out, nil
}

// UpdateQueue applies p to queue name, creating it first if missing.
func (s *Store) UpdateQueue(ctx context.Context, name string, p task.QueuePatch) (task.Queue, error) {
	st, err := s.statements(ctx)
	if err != nil {
		return task.Queue{}, fmt.Errorf("update queue %q: %w", name, classify(err))
	}
	var out task.Queue
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		ts := s.now()
		if err := createQueue(ctx, tx, st, name, ts); err != nil {
			return err
		}
		var conc, maxAttempts, timeoutMS, paused, rate, weight, retry any
		if p.Concurrency != nil {
			conc = *p.Concurrency
		}
		if p.RateLimit != nil {
			rate = *p.RateLimit
		}
		if p.MaxAttempts != nil {
			maxAttempts = *p.MaxAttempts
		}
		if p.Timeout != nil {
			timeoutMS = timeoutMillis(*p.Timeout)
		}
		if p.Weight != nil {
			weight = *p.Weight
		}
		if p.RetryStatuses != nil {
			retry = p.RetryStatuses.String()
		}
		if p.Paused != nil {
			paused = 0
			if *p.Paused {
				paused = 1
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE spool_queues SET
				concurrency  = coalesce(?, concurrency),
				rate_limit   = coalesce(?, rate_limit),
				max_attempts = coalesce(?, max_attempts),
				timeout_ms   = coalesce(?, timeout_ms),
				paused       = coalesce(?, paused),
				weight       = coalesce(?, weight),
				retry_statuses = coalesce(?, retry_statuses),
				updated_at   = ?
			WHERE name = ?`, conc, rate, maxAttempts, timeoutMS, paused, weight, retry, micros(ts), name); err != nil {
			return err
		}
		var err error
		out, err = scanQueue(tx.QueryRowContext(ctx, `SELECT `+queueCols+` FROM spool_queues WHERE name = ?`, name))
		return err
	})
	if err != nil {
		return task.Queue{}, fmt.Errorf("update queue %q: %w", name, classify(err))
	}
	// Counted after the commit, on a read connection: the change never
	// holds the write lock while counting.
	if err := addCounts(ctx, s.read, name, []task.Queue{out}, map[string]int{name: 0}); err != nil {
		return task.Queue{}, fmt.Errorf("update queue %q: %w", name, classify(err))
	}
	// Resuming a queue or raising its limits can make waiting tasks
	// leasable; a new weight changes which queue's task goes next.
	if !out.Paused && (p.Paused != nil || p.Concurrency != nil || p.RateLimit != nil || p.Weight != nil) {
		s.hub.broadcast()
	}
	return out, nil
}

// countKey names one total of spool_task_counts.
type countKey struct{ queue, state string }

// finalCounts gathers the changes a transaction makes to the totals of
// finished tasks.
type finalCounts map[countKey]int64

// add counts n tasks of queue entering state (n < 0: leaving it); states
// that are not final are not kept.
func (c finalCounts) add(queue, state string, n int64) {
	switch task.State(state) {
	case task.Succeeded, task.Failed, task.Cancelled:
		c[countKey{queue, state}] += n
	}
}

// storeCounts applies c to spool_task_counts in tx, one upsert per total.
func storeCounts(ctx context.Context, tx *sql.Tx, st *statements, c finalCounts) error {
	for k, n := range c {
		if n == 0 {
			continue
		}
		if _, err := tx.StmtContext(ctx, st.countAdd).ExecContext(ctx, k.queue, k.state, n); err != nil {
			return fmt.Errorf("count finished tasks: %w", err)
		}
	}
	return nil
}
