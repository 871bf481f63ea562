package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// The bulk changes run in one write transaction: read the states of the
// tasks concerned (by primary key, or a (queue, state, id) range up to the
// LIMIT), change the ones whose state allows it with one UPDATE, and
// count the finished states they leave or enter (storeCounts), as
// CancelTask and RetryTask do for one task. The write lock keeps what
// was read until the update.
const (
	// +queue: by primary key, not through the queue's index, which the
	// planner preferred (the whole queue read for a few ids).
	bulkStatesSQL = `SELECT id, state FROM spool_tasks
		WHERE +queue = ? AND id IN (SELECT value FROM json_each(?))`
	sweepStatesSQL = `SELECT id, state FROM spool_tasks
		WHERE queue = ? AND state = ? AND id > ? ORDER BY id LIMIT ?`
	sweepMoreSQL = `SELECT EXISTS (SELECT 1 FROM spool_tasks WHERE queue = ? AND state = ? AND id > ?)`
	cancelIDsSQL = `UPDATE spool_tasks SET
			state = 'cancelled', finished_at = ?, updated_at = ?,
			lease_token = NULL, lease_expires_at = NULL
		WHERE id IN (SELECT value FROM json_each(?)) AND state NOT IN ` + finalStates
	retryIDsSQL = `UPDATE spool_tasks SET
			state = 'available', run_at = ?, attempt = 0, finished_at = NULL, updated_at = ?,
			lease_token = NULL, lease_expires_at = NULL
		WHERE id IN (SELECT value FROM json_each(?)) AND state IN ('failed', 'cancelled')`
)

// bulkOp is one kind of bulk change.
type bulkOp struct {
	name    string
	update  string
	allowed func(task.State) bool
	to      task.State
	rule    string
}

var (
	cancelOp = bulkOp{"cancel tasks", cancelIDsSQL, func(st task.State) bool { return !st.Final() }, task.Cancelled,
		"only an unfinished task can be cancelled"}
	retryOp = bulkOp{"retry tasks", retryIDsSQL, func(st task.State) bool { return st == task.Failed || st == task.Cancelled }, task.Available,
		"only a failed or cancelled task can be retried"}
)

// CancelTasks cancels the unfinished tasks among ids.
func (s *Store) CancelTasks(ctx context.Context, queue string, ids []string) ([]store.BulkResult, error) {
	return s.bulk(ctx, cancelOp, queue, ids)
}

// RetryTasks retries the failed and cancelled tasks among ids.
func (s *Store) RetryTasks(ctx context.Context, queue string, ids []string) ([]store.BulkResult, error) {
	return s.bulk(ctx, retryOp, queue, ids)
}

// rowState is a task's id and state as a bulk change read them.
type rowState struct{ id, state string }

func (s *Store) bulk(ctx context.Context, op bulkOp, queue string, ids []string) ([]store.BulkResult, error) {
	if len(ids) > store.MaxBulk {
		return nil, fmt.Errorf("%s: %d ids; at most %d", op.name, len(ids), store.MaxBulk)
	}
	was := make(map[string]string, len(ids))
	changed := 0
	err := s.change(ctx, op, queue, func(tx *sql.Tx) ([]rowState, error) {
		rows, err := readStates(ctx, tx, bulkStatesSQL, queue, idsJSON(ids))
		for _, r := range rows {
			was[r.id] = r.state
		}
		return rows, err
	}, &changed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op.name, classify(err))
	}
	out := make([]store.BulkResult, len(ids))
	for i, id := range ids {
		out[i].ID = id
		st, ok := was[id]
		switch {
		case !ok:
			out[i].Err = fmt.Errorf("task %s of queue %s: %w", id, queue, store.ErrNotFound)
		case op.allowed(task.State(st)):
			out[i].State = op.to
		default:
			out[i].State = task.State(st)
			out[i].Err = fmt.Errorf("task %s: %w: task is %s; %s", id, store.ErrConflict, st, op.rule)
		}
	}
	return out, nil
}

// change runs, in one write transaction, read (the tasks concerned), the
// update of those whose state op allows, and their counts; *changed is
// how many it changed.
func (s *Store) change(ctx context.Context, op bulkOp, queue string, read func(tx *sql.Tx) ([]rowState, error), changed *int) error {
	st, err := s.statements(ctx)
	if err != nil {
		return err
	}
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		rows, err := read(tx)
		if err != nil {
			return err
		}
		var ids []string
		counts := finalCounts{}
		for _, r := range rows {
			if op.allowed(task.State(r.state)) {
				ids = append(ids, r.id)
				counts.add(queue, r.state, -1)
				counts.add(queue, string(op.to), 1)
			}
		}
		*changed = len(ids)
		if len(ids) == 0 {
			return nil
		}
		ts := micros(s.now())
		res, err := tx.ExecContext(ctx, op.update, ts, ts, idsJSON(ids))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != int64(len(ids)) {
			return fmt.Errorf("changed %d of %d tasks (%v)", n, len(ids), err)
		}
		return storeCounts(ctx, tx, st, counts)
	})
	if err == nil && *changed > 0 && op.to == task.Available {
		s.hub.broadcast()
	}
	return err
}

// readStates reads (id, state) rows.
func readStates(ctx context.Context, tx *sql.Tx, q string, args ...any) ([]rowState, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []rowState
	for rows.Next() {
		var r rowState
		if err := rows.Scan(&r.id, &r.state); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CancelState cancels the next tasks of a queue in an unfinished state.
func (s *Store) CancelState(ctx context.Context, p store.SweepParams) (store.Sweep, error) {
	if p.State.Final() {
		return store.Sweep{}, fmt.Errorf("cancel %s tasks: %w: only unfinished tasks can be cancelled", p.State, store.ErrConflict)
	}
	return s.sweep(ctx, cancelOp, p)
}

// RetryState retries the next failed or cancelled tasks of a queue.
func (s *Store) RetryState(ctx context.Context, p store.SweepParams) (store.Sweep, error) {
	if !retryOp.allowed(p.State) {
		return store.Sweep{}, fmt.Errorf("retry %s tasks: %w: only failed or cancelled tasks can be retried", p.State, store.ErrConflict)
	}
	return s.sweep(ctx, retryOp, p)
}

func (s *Store) sweep(ctx context.Context, op bulkOp, p store.SweepParams) (store.Sweep, error) {
	limit := min(max(p.Limit, 1), store.MaxBulk)
	sw := store.Sweep{Last: p.After}
	err := s.change(ctx, op, p.Queue, func(tx *sql.Tx) ([]rowState, error) {
		rows, err := readStates(ctx, tx, sweepStatesSQL, p.Queue, string(p.State), p.After, limit)
		if err != nil {
			return nil, err
		}
		if len(rows) > 0 {
			sw.Last = rows[len(rows)-1].id
		}
		return rows, tx.QueryRowContext(ctx, sweepMoreSQL, p.Queue, string(p.State), sw.Last).Scan(&sw.More)
	}, &sw.Changed)
	if err != nil {
		return store.Sweep{}, fmt.Errorf("%s: %w", op.name, classify(err))
	}
	return sw, nil
}
