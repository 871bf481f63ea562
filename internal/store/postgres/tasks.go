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
		"schedule", "scheduled_for",
	}
	for i, c := range cols {
		cols[i] = alias + c
	}
	return strings.Join(cols, ", ")
}

var (
	taskCols  = taskColumns("")
	taskColsT = taskColumns("t.")
	// insertedCols is what Enqueue's insert returns: every column but the
	// payload, which the caller has (a batch's payloads can be 10 MiB, and
	// would come back over the wire and be copied once more).
	insertedCols = strings.Replace(taskCols, "payload", "NULL::bytea", 1)
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
		sched     *string
		schedFor  *time.Time
	)
	dest := append([]any{
		&t.ID, &t.Queue, &state, &t.Attempt, &t.MaxAttempts, &t.Priority,
		&t.RunAt, &t.CreatedAt, &t.UpdatedAt, &t.FinishedAt,
		&t.Target.URL, &t.Target.Method, &headers, &t.Payload, &t.ContentType,
		&timeoutMS, &ikey, &t.LastError, &t.LastStatus, &tp,
		&sched, &schedFor,
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
	if sched != nil {
		t.Schedule = *sched
	}
	if schedFor != nil {
		t.ScheduledFor = schedFor.UTC()
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

// insertTasksStatement inserts a batch given as parallel arrays, in one
// statement: it first creates the missing queues ($14, sorted and distinct,
// so that concurrent enqueues creating the same queues lock in one order)
// with the default settings ($15, $16), and takes a task's unset
// max_attempts and timeout (0) from its queue. A task without a run_at is
// due its delay ($17, µs) after the database's now(), never the caller's. A queue created by this
// statement or by a concurrent transaction is not in this statement's
// snapshot; it has the default settings, which the COALESCE falls back to.
//
// With keyed, it also reserves each task's idempotency key ($12) with its
// fingerprint ($17) and inserts only the keyed tasks whose reservation it
// made. A key already reserved is locked (ON CONFLICT waits for a
// concurrent reservation to commit and sees the latest version); if that
// reservation's task was pruned, or its fingerprint differs from the task's
// (NULL on either side matches), the DO UPDATE sets task_id to NULL, which
// the NOT NULL constraint refuses: the statement, and with it the whole
// batch, fails, and Enqueue reads why. Otherwise nothing is updated and the
// task is absent from RETURNING. A task whose (queue, idempotency key) is
// on a stored task without a reservation (written by a Spool older than
// migration 00008 during a rolling upgrade) is skipped as well.
func insertTasksStatement(keyed bool) string {
	reserve, only := "", ""
	if keyed {
		reserve = `, reserved AS (
	INSERT INTO spool_idempotency_keys AS k (queue, idempotency_key, fingerprint, task_id)
	SELECT r.queue, r.ikey, r.fingerprint, r.id
	FROM unnest($1::uuid[], $2::text[], $12::text[], $20::bytea[]) WITH ORDINALITY AS r(id, queue, ikey, fingerprint, n)
	WHERE r.ikey IS NOT NULL
	ORDER BY r.n
	ON CONFLICT (queue, idempotency_key) DO UPDATE SET task_id = NULL
	WHERE k.pruned_at IS NOT NULL OR k.fingerprint <> EXCLUDED.fingerprint
	RETURNING task_id
)`
		only = `WHERE i.ikey IS NULL OR i.id IN (SELECT task_id FROM reserved)
`
	}
	return `
WITH new_queues AS (
	INSERT INTO spool_queues (name, max_attempts, timeout_ms)
	SELECT n, $15, $16 FROM unnest($14::text[]) AS n
	ON CONFLICT (name) DO NOTHING
)` + reserve + `
INSERT INTO spool_tasks (id, queue, state, priority, run_at, max_attempts, timeout_ms,
	target_url, target_method, target_headers, payload, content_type, idempotency_key, traceparent,
	schedule, scheduled_for)
SELECT i.id, i.queue,
	CASE WHEN i.run_at > now() OR (i.run_at IS NULL AND i.delay_us > 0) THEN 'scheduled' ELSE 'available' END,
	i.priority, COALESCE(i.run_at, now() + i.delay_us * interval '1 microsecond'),
	COALESCE(NULLIF(i.max_attempts, 0), q.max_attempts, $15),
	COALESCE(NULLIF(i.timeout_ms, 0), q.timeout_ms, $16),
	i.url, i.method, i.headers::jsonb, i.payload, i.content_type, i.ikey, i.traceparent,
	i.schedule, i.scheduled_for
FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::timestamptz[], $5::int[], $6::bigint[],
	$7::text[], $8::text[], $9::text[], $10::bytea[], $11::text[], $12::text[], $13::text[],
	$17::text[], $18::timestamptz[], $19::bigint[])
	WITH ORDINALITY AS i(id, queue, priority, run_at, max_attempts, timeout_ms, url, method, headers, payload, content_type, ikey, traceparent,
		schedule, scheduled_for, delay_us, n)
LEFT JOIN spool_queues q ON q.name = i.queue
` + only + `ORDER BY i.n
ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING ` + insertedCols
}

// notifyDueSQL sends the wake-up of an enqueue ($1 the channel, $2 the
// origin) unless every queue of the batch ($3) is paused, and answers
// whether it did. Spool's own benchmark pauses its queue while it
// enqueues, and an operator may park work the same way: each of those
// enqueues woke every dispatcher for a lease that could only come back
// empty (at 8,000 enqueues/s, as many leases competing with them for the
// database). Resuming a queue sends its own wake-up.
const notifyDueSQL = `WITH open AS (
	SELECT 1 FROM spool_queues q WHERE q.name = ANY($3::text[]) AND NOT q.paused LIMIT 1
), sent AS (
	SELECT pg_notify($1, $2) FROM open
)
SELECT count(*) > 0 FROM sent`

// insertTasksSQL serves calls without idempotency keys, which cost no
// reservation; insertKeyedTasksSQL the others.
var (
	insertTasksSQL      = insertTasksStatement(false)
	insertKeyedTasksSQL = insertTasksStatement(true)
)

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
	firstOf, err := store.FirstOfKeys(in)
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	var queues []string
	queueSeen := make(map[string]bool)
	var send []int // indexes of tasks to insert
	keyed := false
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
		if firstOf[i] < 0 {
			send = append(send, i)
			keyed = keyed || nt.IdempotencyKey != ""
		}
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

	rows, err := newInsertRows(in, send, queues)
	if err != nil {
		return nil, err
	}
	sqlText, due := insertTasksSQL, rows.due > 0
	if keyed {
		sqlText = insertKeyedTasksSQL
	}
	var (
		inserted []task.Task
		woke     bool // the wake-up was sent
	)
	if chunks := payloadChunks(rows.payloads, maxStatementPayload); len(chunks) > 1 {
		// Megabytes of payloads: one statement per chunk, in one
		// transaction, so that pgx encodes (and holds) a chunk's
		// parameters at a time rather than the whole batch's, twice over.
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			for _, c := range chunks {
				res, err := tx.Query(ctx, sqlText, rows.args(c[0], c[1], keyed)...)
				if err != nil {
					return err
				}
				got, err := collectTasks(res)
				if err != nil {
					return err
				}
				inserted = append(inserted, got...)
			}
			if due {
				return tx.QueryRow(ctx, notifyDueSQL, wakeupChannel, s.origin, queues).Scan(&woke)
			}
			return nil
		})
		if err != nil {
			if refused(err) {
				return nil, s.refusal(ctx, in, send)
			}
			return nil, enqueueErr(err)
		}
	} else {
		var batch pgx.Batch
		batch.Queue(sqlText, rows.args(0, len(send), keyed)...).
			Query(func(rows pgx.Rows) error {
				var err error
				inserted, err = collectTasks(rows)
				return err
			})
		if due {
			// Delivered at commit, to every other replica's LISTEN
			// connection; this one's Wakeups are signalled below.
			batch.Queue(notifyDueSQL, wakeupChannel, s.origin, queues).QueryRow(func(row pgx.Row) error { return row.Scan(&woke) })
		}
		lease := s.enqueueLease(&batch, rows.due, queues)
		// Not in a transaction, the batch runs as one implicit transaction.
		err := s.pool.SendBatch(ctx, &batch).Close()
		if err == nil && due {
			s.paused.note(queues, woke, time.Now())
		}
		if lease != nil && !lease.HandOver(err) {
			woke = false // the lease took the work; nothing left to wake for
		}
		if err != nil {
			if refused(err) {
				return nil, s.refusal(ctx, in, send)
			}
			return nil, enqueueErr(err)
		}
	}
	if woke {
		s.wakeLocal()
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
			t.Payload = nt.Payload // stored as given; not returned by the insert
			out[i] = store.Enqueued{Task: t}
			continue
		}
		t, ok := existing[ikey{nt.Queue, nt.IdempotencyKey}]
		if !ok {
			// Not inserted and no original: the original was pruned after
			// the statement checked its reservation. Rare; the pruned
			// reservation answers a retry.
			return nil, fmt.Errorf("enqueue: %w", &store.IdempotencyError{Err: store.ErrIdempotencyPruned,
				Index: i, Queue: nt.Queue, Key: nt.IdempotencyKey})
		}
		out[i] = store.Enqueued{Task: t, Existing: true}
	}
	return out, nil
}

// refused reports whether err is insertKeyedTasksSQL refusing a key (its
// DO UPDATE setting task_id to NULL).
func refused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23502" &&
		pgErr.TableName == "spool_idempotency_keys" && pgErr.ColumnName == "task_id"
}

// refusal reads why the reservations of in[send] refused the call (which
// rolled back) and returns the *IdempotencyError of the first refused task
// in input order.
func (s *Store) refusal(ctx context.Context, in []store.NewTask, send []int) error {
	var qs, ks []string
	for _, i := range send {
		if in[i].IdempotencyKey != "" {
			qs, ks = append(qs, in[i].Queue), append(ks, in[i].IdempotencyKey)
		}
	}
	type reservation struct {
		fingerprint []byte
		taskID      string
		pruned      bool
	}
	type ikey struct{ queue, key string }
	held := make(map[ikey]reservation, len(qs))
	rows, err := s.pool.Query(ctx, `SELECT queue, idempotency_key, fingerprint, task_id::text, pruned_at IS NOT NULL
		FROM spool_idempotency_keys
		WHERE (queue, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))`, qs, ks)
	if err != nil {
		return wrap("enqueue: idempotency keys", err)
	}
	var (
		k ikey
		r reservation
	)
	_, err = pgx.ForEachRow(rows, []any{&k.queue, &k.key, &r.fingerprint, &r.taskID, &r.pruned}, func() error {
		held[k] = r
		return nil
	})
	if err != nil {
		return wrap("enqueue: idempotency keys", err)
	}
	slices.Sort(send) // input order: the first refused task is named
	for _, i := range send {
		nt := in[i]
		r, ok := held[ikey{nt.Queue, nt.IdempotencyKey}]
		if nt.IdempotencyKey == "" || !ok {
			continue
		}
		e := &store.IdempotencyError{Index: i, Queue: nt.Queue, Key: nt.IdempotencyKey, TaskID: r.taskID}
		switch {
		case r.pruned:
			e.Err = store.ErrIdempotencyPruned
		case !store.SameRequest(r.fingerprint, nt.Fingerprint):
			e.Err = store.ErrIdempotencyMismatch
		default:
			continue
		}
		return fmt.Errorf("enqueue: %w", e)
	}
	// The refusing reservation changed since (released, say): nothing was
	// stored, and a retry decides afresh.
	return fmt.Errorf("enqueue: %w: an idempotency key was refused, then released; retry", store.ErrConflict)
}

// maxStatementPayload is about how many payload bytes one insert statement
// carries; a batch with more is split (see Enqueue).
const maxStatementPayload = 1 << 20

// payloadChunks splits payloads into runs [a, b) of at most max bytes each
// (a larger payload is a run of its own).
func payloadChunks(payloads [][]byte, max int) [][2]int {
	var out [][2]int
	start, size := 0, 0
	for j, p := range payloads {
		if j > start && size+len(p) > max {
			out = append(out, [2]int{start, j})
			start, size = j, 0
		}
		size += len(p)
	}
	return append(out, [2]int{start, len(payloads)})
}

// insertRows are insertTasksSQL's arguments for in[send] as parallel
// arrays (queues: the distinct queue names, sorted); due counts the tasks
// due about now.
type insertRows struct {
	ids, qs, urls, methods, ctypes         []string
	prios                                  []int16
	runAts, scheduledFor                   []*time.Time
	delays                                 []int64 // µs after the database's now(), when runAts is nil
	maxAtt                                 []int32
	tmo                                    []int64
	headers, keys, traceparents, schedules []*string
	payloads, fingerprints                 [][]byte
	queues                                 []string
	due                                    int
}

func newInsertRows(in []store.NewTask, send []int, queues []string) (*insertRows, error) {
	n := len(send)
	r := &insertRows{
		ids: make([]string, n), qs: make([]string, n), urls: make([]string, n), methods: make([]string, n), ctypes: make([]string, n),
		prios: make([]int16, n), runAts: make([]*time.Time, n), scheduledFor: make([]*time.Time, n),
		maxAtt: make([]int32, n), tmo: make([]int64, n), delays: make([]int64, n),
		headers: make([]*string, n), keys: make([]*string, n), traceparents: make([]*string, n), schedules: make([]*string, n),
		payloads: make([][]byte, n), fingerprints: make([][]byte, n), queues: queues,
	}
	soon := time.Now().Add(time.Second)
	for j, i := range send {
		nt := in[i]
		r.ids[j], r.qs[j], r.urls[j], r.ctypes[j] = nt.ID, nt.Queue, nt.Target.URL, nt.ContentType
		r.methods[j] = cmp.Or(nt.Target.Method, "POST")
		r.prios[j] = int16(nt.Priority)
		// Due now by this clock, or nearly: the database's clock decides the
		// state, and a spare NOTIFY costs less than a task left to the poll.
		if !nt.RunAt.IsZero() {
			ra := nt.RunAt
			r.runAts[j] = &ra
			if nt.RunAt.Before(soon) {
				r.due++
			}
		} else {
			r.delays[j] = max(nt.Delay, 0).Microseconds()
			if nt.Delay < time.Second {
				r.due++
			}
		}
		r.maxAtt[j] = int32(nt.MaxAttempts)
		r.tmo[j] = nt.Timeout.Milliseconds()
		if nt.Target.Headers != nil {
			b, err := json.Marshal(nt.Target.Headers)
			if err != nil {
				return nil, fmt.Errorf("enqueue: task %s: headers: %w", nt.ID, err)
			}
			h := string(b)
			r.headers[j] = &h
		}
		r.payloads[j] = nt.Payload // nil stays NULL, empty stays empty
		if nt.IdempotencyKey != "" {
			k := nt.IdempotencyKey
			r.keys[j] = &k
			r.fingerprints[j] = nt.Fingerprint // nil stays NULL: unknown
		}
		if nt.TraceParent != "" {
			tp := nt.TraceParent
			r.traceparents[j] = &tp
		}
		if nt.Schedule != "" {
			sc, sf := nt.Schedule, nt.ScheduledFor
			r.schedules[j], r.scheduledFor[j] = &sc, &sf
		}
	}
	return r, nil
}

// args are the statement's arguments for rows [a, b); keyed adds the
// fingerprints insertKeyedTasksSQL reserves keys with.
func (r *insertRows) args(a, b int, keyed bool) []any {
	args := []any{r.ids[a:b], r.qs[a:b], r.prios[a:b], r.runAts[a:b], r.maxAtt[a:b], r.tmo[a:b], r.urls[a:b], r.methods[a:b],
		r.headers[a:b], r.payloads[a:b], r.ctypes[a:b], r.keys[a:b], r.traceparents[a:b],
		r.queues, task.DefaultMaxAttempts, task.DefaultTimeout.Milliseconds(), r.schedules[a:b], r.scheduledFor[a:b], r.delays[a:b]}
	if keyed {
		args = append(args, r.fingerprints[a:b])
	}
	return args
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
