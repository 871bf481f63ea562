package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// taskColumns lists what scanTask reads, qualified with alias (e.g. "t.")
// where a statement joins another relation with the same column names.
func taskColumns(alias string) string {
	cols := []string{
		"id::text", "queue", "state", "attempt", "max_attempts", "priority",
		"run_at", "created_at", "updated_at", "finished_at",
		"target_url", "target_method", "target_headers", "payload", "content_type",
		"timeout_ms", "idempotency_key", "last_error", "last_status", "traceparent",
	}
	for i, c := range cols {
		cols[i] = alias + c
	}
	return strings.Join(cols, ", ")
}

var (
	taskCols  = taskColumns("")
	taskColsT = taskColumns("t.")
)

// scanTask reads the columns of taskColumns, then extra.
func scanTask(row pgx.Row, extra ...any) (task.Task, error) {
	var (
		t         task.Task
		state     string
		headers   []byte
		timeoutMS int64
		ikey      *string
		tp        *string
	)
	dest := append([]any{
		&t.ID, &t.Queue, &state, &t.Attempt, &t.MaxAttempts, &t.Priority,
		&t.RunAt, &t.CreatedAt, &t.UpdatedAt, &t.FinishedAt,
		&t.Target.URL, &t.Target.Method, &headers, &t.Payload, &t.ContentType,
		&timeoutMS, &ikey, &t.LastError, &t.LastStatus, &tp,
	}, extra...)
	if err := row.Scan(dest...); err != nil {
		return task.Task{}, err
	}
	t.State = task.State(state)
	t.Timeout = time.Duration(timeoutMS) * time.Millisecond
	if ikey != nil {
		t.IdempotencyKey = *ikey
	}
	if tp != nil {
		t.TraceParent = *tp
	}
	if headers != nil {
		if err := json.Unmarshal(headers, &t.Target.Headers); err != nil {
			return task.Task{}, fmt.Errorf("task %s: decode headers: %w", t.ID, err)
		}
	}
	t.RunAt, t.CreatedAt, t.UpdatedAt = t.RunAt.UTC(), t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	if t.FinishedAt != nil {
		f := t.FinishedAt.UTC()
		t.FinishedAt = &f
	}
	return t, nil
}

func collectTasks(rows pgx.Rows) ([]task.Task, error) {
	defer rows.Close()
	var out []task.Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// validID reports whether id can be a task id; anything else cannot exist,
// and sending it to a uuid column would be an error rather than "no row".
func validID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil
}

// insertTasksSQL inserts a batch given as parallel arrays, in one
// statement: it first creates the missing queues ($14, sorted and distinct,
// so that concurrent enqueues creating the same queues lock in one order)
// with the default settings ($15, $16), and takes a task's unset
// max_attempts and timeout (0) from its queue. A queue created by this
// statement or by a concurrent transaction is not in this statement's
// snapshot; it has the default settings, which the COALESCE falls back to.
// A (queue, idempotency key) already present is skipped and absent from
// RETURNING.
var insertTasksSQL = `
WITH new_queues AS (
	INSERT INTO spool_queues (name, max_attempts, timeout_ms)
	SELECT n, $15, $16 FROM unnest($14::text[]) AS n
	ON CONFLICT (name) DO NOTHING
)
INSERT INTO spool_tasks (id, queue, state, priority, run_at, max_attempts, timeout_ms,
	target_url, target_method, target_headers, payload, content_type, idempotency_key, traceparent)
SELECT i.id, i.queue,
	CASE WHEN i.run_at > now() THEN 'scheduled' ELSE 'available' END,
	i.priority, COALESCE(i.run_at, now()),
	COALESCE(NULLIF(i.max_attempts, 0), q.max_attempts, $15),
	COALESCE(NULLIF(i.timeout_ms, 0), q.timeout_ms, $16),
	i.url, i.method, i.headers::jsonb, i.payload, i.content_type, i.ikey, i.traceparent
FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::timestamptz[], $5::int[], $6::bigint[],
	$7::text[], $8::text[], $9::text[], $10::bytea[], $11::text[], $12::text[], $13::text[])
	WITH ORDINALITY AS i(id, queue, priority, run_at, max_attempts, timeout_ms, url, method, headers, payload, content_type, ikey, traceparent, n)
LEFT JOIN spool_queues q ON q.name = i.queue
ORDER BY i.n
ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING ` + taskCols

// Enqueue inserts tasks in one statement and, with the wake-up NOTIFY, one
// round trip (an implicit transaction) whatever the batch size; looking up
// the originals of conflicting idempotency keys takes a second.
func (s *Store) Enqueue(ctx context.Context, in []store.NewTask) ([]store.Enqueued, error) {
	if len(in) == 0 {
		return []store.Enqueued{}, nil
	}
	type ikey struct{ queue, key string }
	// firstOf[i] is the index of the earlier task sharing i's key, or -1: a
	// repeated key in one call is not sent; it resolves to the first.
	firstOf := make([]int, len(in))
	seen := make(map[ikey]int)
	var queues []string
	queueSeen := make(map[string]bool)
	var send []int // indexes of tasks to insert
	for i, nt := range in {
		if !validID(nt.ID) {
			return nil, fmt.Errorf("enqueue: task %d: invalid id %q", i, nt.ID)
		}
		if nt.Queue == "" {
			return nil, fmt.Errorf("enqueue: task %d: empty queue name", i)
		}
		if !queueSeen[nt.Queue] {
			queueSeen[nt.Queue] = true
			queues = append(queues, nt.Queue)
		}
		firstOf[i] = -1
		if nt.IdempotencyKey != "" {
			k := ikey{nt.Queue, nt.IdempotencyKey}
			if j, ok := seen[k]; ok {
				firstOf[i] = j
				continue
			}
			seen[k] = i
		}
		send = append(send, i)
	}
	// Lock rows in one global order (queue names sorted; keyed tasks by
	// key) so two batches touching the same keys cannot deadlock.
	slices.Sort(queues)
	slices.SortStableFunc(send, func(a, b int) int {
		x, y := in[a], in[b]
		if (x.IdempotencyKey == "") != (y.IdempotencyKey == "") {
			if x.IdempotencyKey == "" {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(x.Queue, y.Queue), cmp.Compare(x.IdempotencyKey, y.IdempotencyKey))
	})

	n := len(send)
	var (
		ids, qs, urls, methods, ctypes = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		prios                          = make([]int16, n)
		runAts                         = make([]*time.Time, n)
		maxAtt                         = make([]int32, n)
		tmo                            = make([]int64, n)
		headers, keys, traceparents    = make([]*string, n), make([]*string, n), make([]*string, n)
		payloads                       = make([][]byte, n)
		due                            bool
		soon                           = time.Now().Add(time.Second)
	)
	for j, i := range send {
		nt := in[i]
		ids[j], qs[j], urls[j], ctypes[j] = nt.ID, nt.Queue, nt.Target.URL, nt.ContentType
		methods[j] = cmp.Or(nt.Target.Method, "POST")
		prios[j] = int16(nt.Priority)
		if !nt.RunAt.IsZero() {
			ra := nt.RunAt
			runAts[j] = &ra
		}
		// Due now by this clock, or nearly: the database's clock decides the
		// state, and a spare NOTIFY costs less than a task left to the poll.
		due = due || nt.RunAt.Before(soon)
		maxAtt[j] = int32(nt.MaxAttempts)
		tmo[j] = nt.Timeout.Milliseconds()
		if nt.Target.Headers != nil {
			b, err := json.Marshal(nt.Target.Headers)
			if err != nil {
				return nil, fmt.Errorf("enqueue: task %s: headers: %w", nt.ID, err)
			}
			h := string(b)
			headers[j] = &h
		}
		payloads[j] = nt.Payload // nil stays NULL, empty stays empty
		if nt.IdempotencyKey != "" {
			k := nt.IdempotencyKey
			keys[j] = &k
		}
		if nt.TraceParent != "" {
			tp := nt.TraceParent
			traceparents[j] = &tp
		}
	}
	var (
		batch    pgx.Batch
		inserted []task.Task
	)
	batch.Queue(insertTasksSQL, ids, qs, prios, runAts, maxAtt, tmo, urls, methods, headers, payloads, ctypes, keys, traceparents,
		queues, task.DefaultMaxAttempts, task.DefaultTimeout.Milliseconds()).
		Query(func(rows pgx.Rows) error {
			var err error
			inserted, err = collectTasks(rows)
			return err
		})
	if due {
		// Delivered at commit, to every replica's LISTEN connection.
		batch.Queue(`SELECT pg_notify($1, '')`, wakeupChannel)
	}
	// Not in a transaction, the batch runs as one implicit transaction.
	if err := s.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return nil, enqueueErr(err)
	}
	byID := make(map[string]task.Task, len(inserted))
	for _, t := range inserted {
		byID[t.ID] = t
	}

	// Keys that conflicted with a stored task: fetch the originals.
	var cq, ck []string
	for _, i := range send {
		if _, ok := byID[in[i].ID]; !ok {
			cq, ck = append(cq, in[i].Queue), append(ck, in[i].IdempotencyKey)
		}
	}
	existing := make(map[ikey]task.Task)
	if len(cq) > 0 {
		// The originals are committed: ON CONFLICT waited for them.
		rows, err := s.pool.Query(ctx, `SELECT `+taskCols+` FROM spool_tasks
			WHERE (queue, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, cq, ck)
		if err != nil {
			return nil, wrap("enqueue: existing", err)
		}
		found, err := collectTasks(rows)
		if err != nil {
			return nil, wrap("enqueue: existing", err)
		}
		for _, t := range found {
			existing[ikey{t.Queue, t.IdempotencyKey}] = t
		}
	}

	out := make([]store.Enqueued, len(in))
	for i, nt := range in {
		if j := firstOf[i]; j >= 0 {
			out[i] = store.Enqueued{Task: out[j].Task, Existing: true}
			continue
		}
		if t, ok := byID[nt.ID]; ok {
			out[i] = store.Enqueued{Task: t}
			continue
		}
		t, ok := existing[ikey{nt.Queue, nt.IdempotencyKey}]
		if !ok {
			// Not inserted and no original: only a key conflict skips a row,
			// so the original was deleted (pruned) in between. Rare; retry.
			return nil, fmt.Errorf("enqueue: task %s: idempotency key %q conflicted but the original is gone; retry", nt.ID, nt.IdempotencyKey)
		}
		out[i] = store.Enqueued{Task: t, Existing: true}
	}
	return out, nil
}

// enqueueErr names a duplicate task id, the one rejection a caller can
// provoke (ids are the caller's UUIDv7s).
func enqueueErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "spool_tasks_pkey" {
		return fmt.Errorf("enqueue: %w: a task with that id exists (%s)", store.ErrConflict, pgErr.Detail)
	}
	return wrap("enqueue", err)
}

// GetTask returns one task.
func (s *Store) GetTask(ctx context.Context, id string) (task.Task, error) {
	if !validID(id) {
		return task.Task{}, fmt.Errorf("get task %q: %w", id, store.ErrNotFound)
	}
	t, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskCols+` FROM spool_tasks WHERE id = $1`, id))
	if err != nil {
		return task.Task{}, notFound("get task "+id, err)
	}
	return t, nil
}

// listPage is a page of one queue's tasks in one state (state: a literal
// or a parameter), in id order: the ids come from a range of
// spool_tasks_queue_state_idx (queue, state, id) read up to the LIMIT,
// then the rows by primary key. The range is ordered by all three
// columns, which is id order since queue and state are fixed: a generic
// plan does not take a parameter for a constant, so with ORDER BY id
// alone it saw no order in that index and walked the primary key instead,
// filtering on queue and state (the whole table read to list a rare
// state). ORDER BY names the table's id: a bare id would be taskCols'
// text cast, which no index is in the order of.
func listPage(state, after, limit string) string {
	return `SELECT spool_tasks.id AS uid, ` + taskCols + ` FROM spool_tasks
	WHERE id = ANY (ARRAY(SELECT id FROM spool_tasks
		WHERE queue = $1 AND state = ` + state + ` AND id > ` + after + `::uuid
		ORDER BY queue, state, id LIMIT ` + limit + `))
	ORDER BY spool_tasks.id`
}

// listStateSQL lists one state of a queue.
var listStateSQL = `SELECT ` + listedCols + ` FROM (` + listPage("$2", "$3", "$4") + `) t`

// listAllSQL lists every state of a queue: one page per state (each
// reads at most LIMIT entries), merged in id order and cut at LIMIT.
var listAllSQL = func() string {
	parts := make([]string, len(task.States))
	for i, st := range task.States {
		parts[i] = `(` + listPage(`'`+string(st)+`'`, "$2", "$3") + `)`
	}
	return `SELECT ` + listedCols + ` FROM (` + strings.Join(parts, "\n\tUNION ALL ") + `) t ORDER BY uid LIMIT $3`
}()

// listedCols names taskCols' columns as a subquery returns them.
var listedCols = func() string {
	cols := strings.Split(taskCols, ", ")
	for i, c := range cols {
		cols[i], _, _ = strings.Cut(c, "::")
	}
	return strings.Join(cols, ", ")
}()

// ListTasks pages through one queue in id order.
func (s *Store) ListTasks(ctx context.Context, p store.ListParams) ([]task.Task, error) {
	limit := min(max(p.Limit, 1), 1000)
	after := uuid.Nil.String() // below every id
	if p.After != "" {
		if !validID(p.After) {
			return nil, fmt.Errorf("list tasks: invalid cursor %q", p.After)
		}
		after = p.After
	}
	// Custom plans, in the same implicit transaction: a generic plan
	// guesses every state's share of a queue alike, and for a rare one
	// (failed among millions succeeded) preferred walking the primary key
	// in id order, filtering, to reading the (queue, state, id) range.
	var (
		b  pgx.Batch
		ts []task.Task
	)
	b.Queue(`SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`)
	collect := func(rows pgx.Rows) error {
		var err error
		ts, err = collectTasks(rows)
		return err
	}
	if p.State != "" {
		b.Queue(listStateSQL, p.Queue, string(p.State), after, limit).Query(collect)
	} else {
		b.Queue(listAllSQL, p.Queue, after, limit).Query(collect)
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, wrap("list tasks", err)
	}
	if ts == nil {
		ts = []task.Task{}
	}
	return ts, nil
}

// CancelTask cancels an unfinished task, dropping any lease on it.
func (s *Store) CancelTask(ctx context.Context, id string) (task.Task, error) {
	return s.transition(ctx, "cancel task", id, `WITH upd AS (
			UPDATE spool_tasks
			SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
				finished_at = now(), updated_at = now()
			WHERE id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled')
			RETURNING *
		), counted AS (
			INSERT INTO spool_task_count_deltas (queue, state, n) SELECT queue, state, 1 FROM upd
		)
		SELECT `+taskCols+` FROM upd`)
}

// RetryTask makes a failed or cancelled task run again from attempt 1.
func (s *Store) RetryTask(ctx context.Context, id string) (task.Task, error) {
	// The update's RETURNING sees the new state only; old locks the row
	// and reads the state it leaves, to take it off that count.
	return s.transition(ctx, "retry task", id, `WITH old AS (
			SELECT id, queue, state FROM spool_tasks
			WHERE id = $1 AND state IN ('failed', 'cancelled')
			FOR UPDATE
		), upd AS (
			UPDATE spool_tasks t
			SET state = 'available', run_at = now(), attempt = 0, finished_at = NULL,
				lease_token = NULL, lease_expires_at = NULL, updated_at = now()
			FROM old WHERE t.id = old.id
			RETURNING t.*
		), counted AS (
			INSERT INTO spool_task_count_deltas (queue, state, n) SELECT queue, state, -1 FROM old
		), wake AS (
			SELECT pg_notify('`+wakeupChannel+`', '') FROM upd
		)
		SELECT `+taskCols+` FROM upd, (SELECT count(*) FROM wake) w`)
}

// transition runs an UPDATE … RETURNING of one task and tells a missing
// task (ErrNotFound) from one in the wrong state (ErrConflict).
func (s *Store) transition(ctx context.Context, op, id, sql string) (task.Task, error) {
	op = op + " " + id
	if !validID(id) {
		return task.Task{}, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	t, err := scanTask(s.pool.QueryRow(ctx, sql, id))
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return task.Task{}, wrap(op, err)
	}
	var state string
	err = s.pool.QueryRow(ctx, `SELECT state FROM spool_tasks WHERE id = $1`, id).Scan(&state)
	if err != nil {
		return task.Task{}, notFound(op, err)
	}
	return task.Task{}, fmt.Errorf("%s: %w: task is %s", op, store.ErrConflict, state)
}
