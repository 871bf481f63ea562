package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// The bulk changes. Each is one statement over at most store.MaxBulk
// rows: old locks the rows it changes in id order (two bulk calls, or a
// bulk call and a single change, never wait on each other in a cycle),
// upd changes them as CancelTask and RetryTask do, counted appends one
// count delta per (queue, state) left or entered, and the outer select
// answers for every id given: the changed rows, then the others (not in
// upd, a hashed subplan) as the statement's snapshot saw them.
const (
	cancelSet = `SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
				finished_at = now(), updated_at = now()`
	retrySet = `SET state = 'available', run_at = now(), attempt = 0, finished_at = NULL,
				lease_token = NULL, lease_expires_at = NULL, updated_at = now()`

	cancelIDsSQL = `WITH old AS (
			SELECT id FROM spool_tasks
			WHERE id = ANY ($2::uuid[]) AND queue = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled')
			ORDER BY id FOR UPDATE
		), upd AS (
			UPDATE spool_tasks t ` + cancelSet + `
			FROM old WHERE t.id = old.id
			RETURNING t.id
		), counted AS (
			INSERT INTO spool_task_count_deltas (queue, state, n)
			SELECT $1::text, 'cancelled', count(*) FROM upd HAVING count(*) > 0
		)
		SELECT id::text, 'cancelled', true FROM upd
		UNION ALL
		SELECT id::text, state, false FROM spool_tasks
		WHERE id = ANY ($2::uuid[]) AND queue = $1 AND id NOT IN (SELECT id FROM upd)`

	retryIDsSQL = `WITH old AS (
			SELECT id, state FROM spool_tasks
			WHERE id = ANY ($2::uuid[]) AND queue = $1 AND state IN ('failed', 'cancelled')
			ORDER BY id FOR UPDATE
		), upd AS (
			UPDATE spool_tasks t ` + retrySet + `
			FROM old WHERE t.id = old.id
			RETURNING t.id
		), counted AS (
			INSERT INTO spool_task_count_deltas (queue, state, n)
			SELECT $1::text, state, -count(*) FROM old GROUP BY state
		), wake AS (
			SELECT pg_notify('` + wakeupChannel + `', '') WHERE EXISTS (SELECT FROM upd)
		)
		SELECT id::text, 'available', true FROM upd, (SELECT count(*) FROM wake) w
		UNION ALL
		SELECT id::text, state, false FROM spool_tasks
		WHERE id = ANY ($2::uuid[]) AND queue = $1 AND id NOT IN (SELECT id FROM upd)`

	// The sweeps take a (queue, state, id) range of spool_tasks_queue_state_idx
	// up to the LIMIT; more looks one entry past the last row examined.
	sweepOld = `WITH old AS (
			SELECT id, state FROM spool_tasks
			WHERE queue = $1 AND state = $2 AND id > $3::uuid
			ORDER BY queue, state, id LIMIT $4
			FOR UPDATE
		)`
	sweepAnswer = `, last AS (
			SELECT id FROM old ORDER BY id DESC LIMIT 1
		)
		SELECT (SELECT count(*) FROM upd), (SELECT id::text FROM last),
			EXISTS (SELECT FROM spool_tasks WHERE queue = $1 AND state = $2
				AND id > COALESCE((SELECT id FROM last), $3::uuid))`

	cancelStateSQL = sweepOld + `, upd AS (
			UPDATE spool_tasks t ` + cancelSet + `
			FROM old WHERE t.id = old.id
			RETURNING t.id
		), counted AS (
			INSERT INTO spool_task_count_deltas (queue, state, n)
			SELECT $1::text, 'cancelled', count(*) FROM upd HAVING count(*) > 0
		)` + sweepAnswer

	retryStateSQL = sweepOld + `, upd AS (
			UPDATE spool_tasks t ` + retrySet + `
			FROM old WHERE t.id = old.id
			RETURNING t.id
		), counted AS (
			INSERT INTO spool_task_count_deltas (queue, state, n)
			SELECT $1::text, state, -count(*) FROM old GROUP BY state
		), wake AS (
			SELECT pg_notify('` + wakeupChannel + `', '') WHERE EXISTS (SELECT FROM upd)
		)` + sweepAnswer + `, (SELECT count(*) FROM wake)`
)

// CancelTasks cancels the unfinished tasks among ids in one statement.
func (s *Store) CancelTasks(ctx context.Context, queue string, ids []string) ([]store.BulkResult, error) {
	return s.bulk(ctx, "cancel tasks", cancelIDsSQL, queue, ids, "only an unfinished task can be cancelled")
}

// RetryTasks retries the failed and cancelled tasks among ids in one
// statement.
func (s *Store) RetryTasks(ctx context.Context, queue string, ids []string) ([]store.BulkResult, error) {
	return s.bulk(ctx, "retry tasks", retryIDsSQL, queue, ids, "only a failed or cancelled task can be retried")
}

// bulk runs a by-ids statement and answers for each id in input order.
func (s *Store) bulk(ctx context.Context, op, sql, queue string, ids []string, rule string) ([]store.BulkResult, error) {
	if len(ids) > store.MaxBulk {
		return nil, fmt.Errorf("%s: %d ids; at most %d", op, len(ids), store.MaxBulk)
	}
	var valid []string
	for _, id := range ids {
		if validID(id) {
			valid = append(valid, id)
		}
	}
	type result struct {
		state   string
		changed bool
	}
	var got map[string]result
	err := retryDeadlock(func() error {
		got = make(map[string]result, len(valid))
		if len(valid) == 0 {
			return nil
		}
		rows, err := s.pool.Query(ctx, sql, queue, valid)
		if err != nil {
			return err
		}
		var (
			id string
			r  result
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &r.state, &r.changed}, func() error {
			got[id] = r
			return nil
		})
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	out := make([]store.BulkResult, len(ids))
	for i, id := range ids {
		out[i].ID = id
		key := id
		if u, err := uuid.Parse(id); err == nil {
			key = u.String() // the database answers in canonical form
		}
		r, ok := got[key]
		switch {
		case !ok:
			out[i].Err = fmt.Errorf("task %s of queue %s: %w", id, queue, store.ErrNotFound)
		case r.changed:
			out[i].State = task.State(r.state)
		default:
			out[i].State = task.State(r.state)
			out[i].Err = fmt.Errorf("task %s: %w: task is %s; %s", id, store.ErrConflict, r.state, rule)
		}
	}
	return out, nil
}

// CancelState cancels the next tasks of a queue in an unfinished state.
func (s *Store) CancelState(ctx context.Context, p store.SweepParams) (store.Sweep, error) {
	if p.State.Final() {
		return store.Sweep{}, fmt.Errorf("cancel %s tasks: %w: only unfinished tasks can be cancelled", p.State, store.ErrConflict)
	}
	return s.sweep(ctx, "cancel tasks", cancelStateSQL, p)
}

// RetryState retries the next failed or cancelled tasks of a queue.
func (s *Store) RetryState(ctx context.Context, p store.SweepParams) (store.Sweep, error) {
	if p.State != task.Failed && p.State != task.Cancelled {
		return store.Sweep{}, fmt.Errorf("retry %s tasks: %w: only failed or cancelled tasks can be retried", p.State, store.ErrConflict)
	}
	return s.sweep(ctx, "retry tasks", retryStateSQL, p)
}

// sweep runs a sweep statement on a custom plan (see ListTasks).
func (s *Store) sweep(ctx context.Context, op, sql string, p store.SweepParams) (store.Sweep, error) {
	after := uuid.Nil.String()
	if p.After != "" {
		if !validID(p.After) {
			return store.Sweep{}, fmt.Errorf("%s: invalid cursor %q", op, p.After)
		}
		after = p.After
	}
	limit := min(max(p.Limit, 1), store.MaxBulk)
	var (
		sw   store.Sweep
		last *string
	)
	err := retryDeadlock(func() error {
		return s.customPlans(ctx, func(b *pgx.Batch) {
			b.Queue(sql, p.Queue, string(p.State), after, limit).QueryRow(func(row pgx.Row) error {
				dest := []any{&sw.Changed, &last, &sw.More}
				if sql == retryStateSQL {
					var woke int
					dest = append(dest, &woke)
				}
				return row.Scan(dest...)
			})
		})
	})
	if err != nil {
		return store.Sweep{}, wrap(op, err)
	}
	if last != nil {
		sw.Last = *last
	} else {
		sw.Last = p.After
	}
	return sw, nil
}

// retryDeadlock runs fn again (twice at most) when PostgreSQL aborted it
// as a deadlock's victim. A bulk statement locks its rows in id order, but
// a completion batch locks its own in the order the dispatcher sends them,
// so a bulk cancel of running tasks and their completions can wait on
// each other in a cycle; the aborted statement changed nothing.
func retryDeadlock(fn func() error) error {
	for i := 0; ; i++ {
		err := fn()
		var pgErr *pgconn.PgError
		if i < 2 && errors.As(err, &pgErr) && pgErr.Code == "40P01" {
			continue
		}
		return err
	}
}
