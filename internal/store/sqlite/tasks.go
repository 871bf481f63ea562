package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// taskCols is the column list every task read uses, in scanTask's order.
const taskCols = `id, queue, state, priority, run_at, attempt, max_attempts, timeout_ms,
	target_url, target_method, target_headers, payload, content_type, idempotency_key,
	last_error, last_status, created_at, updated_at, finished_at, lease_token, lease_expires_at, traceparent,
	schedule, scheduled_for`

// pendingStates is the SQL list of states waiting to be leased.
const pendingStates = `('scheduled', 'available', 'retrying')`

// finalStates is the SQL list of final states.
const finalStates = `('succeeded', 'failed', 'cancelled')`

type rowScanner interface{ Scan(dest ...any) error }

// scanned is a task row with its lease columns.
type scanned struct {
	task.Task
	leaseToken     sql.NullInt64
	leaseExpiresAt sql.NullInt64
}

func scanTask(r rowScanner) (scanned, error) {
	var (
		t                          scanned
		state                      string
		runAt, created, updated    int64
		timeoutMS                  int64
		headers, idemKey, lastErr  sql.NullString
		traceParent, sched         sql.NullString
		scheduledFor               sql.NullInt64
		lastStatus, finished       sql.NullInt64
		payload                    []byte
		contentType, method, tgURL string
	)
	err := r.Scan(&t.ID, &t.Queue, &state, &t.Priority, &runAt, &t.Attempt, &t.MaxAttempts, &timeoutMS,
		&tgURL, &method, &headers, &payload, &contentType, &idemKey,
		&lastErr, &lastStatus, &created, &updated, &finished, &t.leaseToken, &t.leaseExpiresAt, &traceParent,
		&sched, &scheduledFor)
	if err != nil {
		return scanned{}, err
	}
	t.State = task.State(state)
	t.RunAt = fromMicros(runAt)
	t.CreatedAt = fromMicros(created)
	t.UpdatedAt = fromMicros(updated)
	if finished.Valid {
		ft := fromMicros(finished.Int64)
		t.FinishedAt = &ft
	}
	t.Timeout = time.Duration(timeoutMS) * time.Millisecond
	t.Target = task.Target{URL: tgURL, Method: method}
	if headers.Valid && headers.String != "" {
		if err := json.Unmarshal([]byte(headers.String), &t.Target.Headers); err != nil {
			return scanned{}, fmt.Errorf("task %s: decode target headers: %w", t.ID, err)
		}
	}
	if len(payload) > 0 {
		t.Payload = payload
	}
	t.ContentType = contentType
	t.IdempotencyKey = idemKey.String
	t.LastError = lastErr.String
	t.LastStatus = int(lastStatus.Int64)
	t.TraceParent = traceParent.String
	t.Schedule = sched.String
	if scheduledFor.Valid {
		t.ScheduledFor = fromMicros(scheduledFor.Int64)
	}
	return t, nil
}

// nullString stores "" as NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// timeoutMillis stores a timeout in whole milliseconds, rounding a positive
// sub-millisecond timeout up so it never becomes "none".
func timeoutMillis(d time.Duration) int64 {
	ms := d.Milliseconds()
	if d > 0 && d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// insertCols are the columns Enqueue writes, in insertTasks' order.
const (
	insertCols = `id, queue, state, priority, run_at, max_attempts, timeout_ms,
	target_url, target_method, target_headers, payload, content_type, idempotency_key,
	created_at, updated_at, traceparent, schedule, scheduled_for`
	insertNCols = 18
)

// insertShapes are the row counts of the prepared inserts, largest first,
// ending in 1.
var insertShapes = []int{100, 10, 1}

// insertSQL is the insert of n rows. A row whose (queue, idempotency key)
// exists would be skipped, not fail the statement, as Enqueue promises;
// Enqueue looks keys up first, so none is.
func insertSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO spool_tasks (` + insertCols + `) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	b.WriteString(` ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`)
	return b.String()
}

// Enqueue inserts the tasks in one transaction (see store.Store).
func (s *Store) Enqueue(ctx context.Context, tasks []store.NewTask) ([]store.Enqueued, error) {
	if len(tasks) == 0 {
		return []store.Enqueued{}, nil
	}
	for i, nt := range tasks {
		if nt.ID == "" || nt.Queue == "" {
			return nil, fmt.Errorf("enqueue: task %d: id and queue are required", i)
		}
	}
	ts := s.now()
	out := make([]store.Enqueued, len(tasks))
	// dupOf[i] = j when tasks[i] repeats the idempotency key of an earlier
	// tasks[j] in this call; -1 otherwise.
	dupOf, err := store.FirstOfKeys(tasks)
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	insert := make([]int, 0, len(tasks)) // indexes of tasks to insert
	for i, j := range dupOf {
		if j < 0 {
			insert = append(insert, i)
		}
	}

	st, err := s.statements(ctx)
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", classify(err))
	}
	due := 0 // tasks inserted available in queues that are not paused
	var lease *store.EnqueueLeaseRun
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		defaults, err := ensureQueues(ctx, tx, st, tasks, ts)
		if err != nil {
			return err
		}
		// A task whose (queue, idempotency key) is reserved already is not
		// inserted: the reservation's task is the answer, or the reason to
		// refuse the call. With the write lock held the answer cannot
		// change before the insert.
		fresh := make([]int, 0, len(insert))
		var keys *keyStmts
		for _, i := range insert {
			nt := tasks[i]
			if nt.IdempotencyKey != "" {
				if keys == nil {
					keys = txKeyStmts(ctx, tx, st)
				}
				t, held, err := keys.reserve(ctx, i, nt, ts)
				if err != nil {
					return err
				}
				if held {
					out[i] = store.Enqueued{Task: t, Existing: true}
					continue
				}
			}
			out[i] = store.Enqueued{Task: newTaskRow(nt, defaults[nt.Queue], ts)}
			if out[i].Task.State == task.Available && !defaults[nt.Queue].paused {
				due++
			}
			fresh = append(fresh, i)
		}
		if err := insertTasks(ctx, tx, st, out, fresh); err != nil {
			return err
		}
		lease, err = s.enqueueLease(ctx, tx, st, due)
		return err
	})
	wake := due > 0
	if lease != nil && !lease.HandOver(err) {
		wake = false // the lease took the work; nothing left to wake for
	}
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", classify(err))
	}
	for i, j := range dupOf {
		if j >= 0 {
			out[i] = store.Enqueued{Task: out[j].Task, Existing: true}
		}
	}
	if wake {
		s.hub.broadcast()
	}
	return out, nil
}

// keyStmts are the idempotency statements of one write transaction.
type keyStmts struct {
	lookup, insert, taskByID *sql.Stmt
}

func txKeyStmts(ctx context.Context, tx *sql.Tx, st *statements) *keyStmts {
	return &keyStmts{
		lookup:   tx.StmtContext(ctx, st.keyLookup),
		insert:   tx.StmtContext(ctx, st.keyInsert),
		taskByID: tx.StmtContext(ctx, st.taskByID),
	}
}

// reserve reserves nt's key for nt, the call's task i, or, when the key is
// reserved already, returns the reservation's task with held set, or the
// *store.IdempotencyError that refuses the call.
func (k *keyStmts) reserve(ctx context.Context, i int, nt store.NewTask, ts time.Time) (task.Task, bool, error) {
	var (
		fingerprint []byte
		taskID      string
		pruned      bool
	)
	err := k.lookup.QueryRowContext(ctx, nt.Queue, nt.IdempotencyKey).Scan(&fingerprint, &taskID, &pruned)
	if errors.Is(err, sql.ErrNoRows) {
		var fp any
		if nt.Fingerprint != nil {
			fp = nt.Fingerprint
		}
		if _, err := k.insert.ExecContext(ctx, nt.Queue, nt.IdempotencyKey, fp, nt.ID, micros(ts)); err != nil {
			return task.Task{}, false, fmt.Errorf("task %s: reserve idempotency key: %w", nt.ID, err)
		}
		return task.Task{}, false, nil
	}
	if err != nil {
		return task.Task{}, false, fmt.Errorf("task %s: idempotency key: %w", nt.ID, err)
	}
	refuse := &store.IdempotencyError{Index: i, Queue: nt.Queue, Key: nt.IdempotencyKey, TaskID: taskID}
	switch {
	case pruned:
		refuse.Err = store.ErrIdempotencyPruned
		return task.Task{}, false, refuse
	case !store.SameRequest(fingerprint, nt.Fingerprint):
		refuse.Err = store.ErrIdempotencyMismatch
		return task.Task{}, false, refuse
	}
	t, err := scanTask(k.taskByID.QueryRowContext(ctx, taskID))
	if errors.Is(err, sql.ErrNoRows) {
		// Prune marks a reservation in the transaction that deletes its
		// task; an unmarked reservation without its task is a bug.
		return task.Task{}, false, fmt.Errorf("task %s: idempotency key %q is reserved for task %s, which is missing", nt.ID, nt.IdempotencyKey, taskID)
	}
	if err != nil {
		return task.Task{}, false, fmt.Errorf("task %s: idempotency key: %w", nt.ID, err)
	}
	return t.Task, true, nil
}

type queueDefaults struct {
	maxAttempts int
	timeoutMS   int64
	paused      bool // a task due in it wakes no dispatcher: nothing could lease it
}

// ensureQueues creates the missing queues of tasks with default settings and
// returns each queue's defaults for tasks that leave them unset.
func ensureQueues(ctx context.Context, tx *sql.Tx, st *statements, tasks []store.NewTask, ts time.Time) (map[string]queueDefaults, error) {
	defaults := make(map[string]queueDefaults, 1)
	get := tx.StmtContext(ctx, st.queueDefaults)
	for _, nt := range tasks {
		if _, ok := defaults[nt.Queue]; ok {
			continue
		}
		// Most enqueues go to a queue that exists: one read finds it.
		var d queueDefaults
		err := get.QueryRowContext(ctx, nt.Queue).Scan(&d.maxAttempts, &d.timeoutMS, &d.paused)
		if errors.Is(err, sql.ErrNoRows) {
			if err := createQueue(ctx, tx, st, nt.Queue, ts); err != nil {
				return nil, err
			}
			err = get.QueryRowContext(ctx, nt.Queue).Scan(&d.maxAttempts, &d.timeoutMS, &d.paused)
		}
		if err != nil {
			return nil, fmt.Errorf("queue %q: %w", nt.Queue, err)
		}
		defaults[nt.Queue] = d
	}
	return defaults, nil
}

// createQueue inserts queue name with the default settings unless it exists.
func createQueue(ctx context.Context, tx *sql.Tx, st *statements, name string, ts time.Time) error {
	_, err := tx.StmtContext(ctx, st.createQueue).ExecContext(ctx,
		name, task.DefaultMaxAttempts, task.DefaultTimeout.Milliseconds(), micros(ts))
	if err != nil {
		return fmt.Errorf("create queue %q: %w", name, err)
	}
	return nil
}

// newTaskRow is the task Enqueue stores for nt.
func newTaskRow(nt store.NewTask, d queueDefaults, ts time.Time) task.Task {
	runAt := ts
	if nt.Delay > 0 {
		runAt = fromMicros(micros(ts) + nt.Delay.Microseconds())
	}
	if !nt.RunAt.IsZero() {
		runAt = fromMicros(nt.RunAt.UnixMicro())
	}
	state := task.Available
	if runAt.After(ts) {
		state = task.Scheduled
	}
	maxAttempts := nt.MaxAttempts
	if maxAttempts == 0 {
		maxAttempts = d.maxAttempts
	}
	timeoutMS := timeoutMillis(nt.Timeout)
	if nt.Timeout == 0 {
		timeoutMS = d.timeoutMS
	}
	tg := task.Target{URL: nt.Target.URL, Method: nt.Target.Method}
	if len(nt.Target.Headers) > 0 {
		tg.Headers = make(map[string]string, len(nt.Target.Headers))
		for k, v := range nt.Target.Headers {
			tg.Headers[k] = v
		}
	}
	var scheduledFor time.Time
	if !nt.ScheduledFor.IsZero() {
		scheduledFor = fromMicros(nt.ScheduledFor.UnixMicro())
	}
	var payload []byte
	if len(nt.Payload) > 0 {
		payload = nt.Payload // shared, not copied: see store.Store.Enqueue
	}
	return task.Task{
		ID:             nt.ID,
		Queue:          nt.Queue,
		State:          state,
		MaxAttempts:    maxAttempts,
		Priority:       nt.Priority,
		RunAt:          runAt,
		CreatedAt:      ts,
		UpdatedAt:      ts,
		Target:         tg,
		Payload:        payload,
		ContentType:    nt.ContentType,
		Timeout:        time.Duration(timeoutMS) * time.Millisecond,
		IdempotencyKey: nt.IdempotencyKey,
		TraceParent:    nt.TraceParent,
		Schedule:       nt.Schedule,
		ScheduledFor:   scheduledFor,
	}
}

// insertTasks inserts out[idx], whose idempotency keys are not stored. Any
// constraint failure (a duplicate id, say) fails the statement and so the
// whole batch. Rows go in by insertShapes[k] at a time, largest first: one
// statement of many rows costs much less per row than many of one, and a
// few fixed shapes keep every statement prepared.
func insertTasks(ctx context.Context, tx *sql.Tx, st *statements, out []store.Enqueued, idx []int) error {
	args := make([]any, 0, min(len(idx), insertShapes[0])*insertNCols)
	for len(idx) > 0 {
		k := 0
		for insertShapes[k] > len(idx) {
			k++
		}
		n := insertShapes[k]
		args = args[:0]
		for _, i := range idx[:n] {
			t := out[i].Task
			var headers any
			if len(t.Target.Headers) > 0 {
				b, err := json.Marshal(t.Target.Headers)
				if err != nil {
					return fmt.Errorf("task %s: encode headers: %w", t.ID, err)
				}
				headers = string(b)
			}
			var payload any
			if len(t.Payload) > 0 {
				payload = t.Payload
			}
			args = append(args, t.ID, t.Queue, string(t.State), t.Priority, micros(t.RunAt), t.MaxAttempts,
				t.Timeout.Milliseconds(), t.Target.URL, t.Target.Method, headers, payload, t.ContentType,
				nullString(t.IdempotencyKey), micros(t.CreatedAt), micros(t.UpdatedAt), nullString(t.TraceParent),
				nullString(t.Schedule), nullMicros(t.ScheduledFor))
		}
		res, err := tx.StmtContext(ctx, st.insertTasks[k]).ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("insert tasks: %w", err)
		}
		got, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("insert tasks: %w", err)
		}
		if got != int64(n) {
			// Only a key conflict is skipped, and Enqueue looked those up.
			return fmt.Errorf("insert tasks: %d of %d rows inserted", got, n)
		}
		idx = idx[n:]
	}
	return nil
}

// GetTask returns one task (store.ErrNotFound).
func (s *Store) GetTask(ctx context.Context, id string) (task.Task, error) {
	st, err := s.statements(ctx)
	if err != nil {
		return task.Task{}, fmt.Errorf("get task %s: %w", id, classify(err))
	}
	t, err := scanTask(st.getTask.QueryRowContext(ctx, id))
	if err != nil {
		return task.Task{}, fmt.Errorf("get task %s: %w", id, classify(err))
	}
	return t.Task, nil
}

// CancelTask cancels an unfinished task; a final one is store.ErrConflict.
func (s *Store) CancelTask(ctx context.Context, id string) (task.Task, error) {
	st, err := s.statements(ctx)
	if err != nil {
		return task.Task{}, fmt.Errorf("cancel task %s: %w", id, classify(err))
	}
	var out task.Task
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		ts := micros(s.now())
		// Clearing the lease token is what makes a running attempt's
		// completion be refused.
		t, err := scanTask(tx.QueryRowContext(ctx, `UPDATE spool_tasks SET
				state = 'cancelled', finished_at = ?, updated_at = ?,
				lease_token = NULL, lease_expires_at = NULL
			WHERE id = ? AND state NOT IN `+finalStates+`
			RETURNING `+taskCols, ts, ts, id))
		if err == nil {
			out = t.Task
			return storeCounts(ctx, tx, st, finalCounts{{out.Queue, string(task.Cancelled)}: 1})
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return existsOrNotFound(ctx, tx, id, "only an unfinished task can be cancelled")
	})
	if err != nil {
		return task.Task{}, fmt.Errorf("cancel task %s: %w", id, classify(err))
	}
	return out, nil
}

// RetryTask makes a failed or cancelled task available again.
func (s *Store) RetryTask(ctx context.Context, id string) (task.Task, error) {
	st, err := s.statements(ctx)
	if err != nil {
		return task.Task{}, fmt.Errorf("retry task %s: %w", id, classify(err))
	}
	var out task.Task
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		ts := micros(s.now())
		// RETURNING sees the new state only; the write lock keeps the one
		// read here until the update.
		var was string
		if err := tx.QueryRowContext(ctx, `SELECT state FROM spool_tasks WHERE id = ?`, id).Scan(&was); err != nil &&
			!errors.Is(err, sql.ErrNoRows) {
			return err
		}
		t, err := scanTask(tx.QueryRowContext(ctx, `UPDATE spool_tasks SET
				state = 'available', run_at = ?, attempt = 0, finished_at = NULL, updated_at = ?,
				lease_token = NULL, lease_expires_at = NULL
			WHERE id = ? AND state IN ('failed', 'cancelled')
			RETURNING `+taskCols, ts, ts, id))
		if err == nil {
			out = t.Task
			return storeCounts(ctx, tx, st, finalCounts{{out.Queue, was}: -1})
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return existsOrNotFound(ctx, tx, id, "only a failed or cancelled task can be retried")
	})
	if err != nil {
		return task.Task{}, fmt.Errorf("retry task %s: %w", id, classify(err))
	}
	s.hub.broadcast()
	return out, nil
}

// existsOrNotFound explains why a guarded update of task id matched nothing:
// store.ErrNotFound if there is no such task, else store.ErrConflict with
// the task's state and why.
func existsOrNotFound(ctx context.Context, tx *sql.Tx, id, why string) error {
	var state string
	err := tx.QueryRowContext(ctx, `SELECT state FROM spool_tasks WHERE id = ?`, id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: task is %s; %s", store.ErrConflict, state, why)
}
