package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// limitedQueue is a queue Lease cannot take tasks from freely: paused, or
// with a concurrency or rate limit.
type limitedQueue struct {
	name        string
	concurrency int
	rate        float64
	paused      bool
	weight      int
	tokens      float64 // after refill to now
	capacity    int     // how many tasks this Lease may start
}

// candidate is a due task Lease may take, with its sort keys.
type candidate struct {
	rowid    int64
	id       string
	queue    string
	priority int
	runAt    int64
	weight   int
}

// Lease claims up to limit due tasks (see store.Store). It runs in one
// BEGIN IMMEDIATE transaction: with the write lock held nobody else can
// claim the same rows, which is what FOR UPDATE SKIP LOCKED buys on
// PostgreSQL, and the limits are computed against the state it changes.
//
// Before taking the write lock it asks a read snapshot whether anything is
// leasable at all (sqlLeasable), so that the Lease a dispatcher runs on
// every wake-up and poll does not queue behind enqueues for the one write
// connection, nor hold them up, when there is nothing for it. The write
// transaction still decides: the snapshot only ever errs towards trying.
func (s *Store) Lease(ctx context.Context, req store.LeaseRequest) ([]store.Lease, error) {
	if req.Limit <= 0 {
		return nil, nil
	}
	st, err := s.statements(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", classify(err))
	}
	// On an error of the read pool the write transaction answers: it is the
	// one that counts, and it reports its own errors.
	if ok, err := leasable(ctx, st, s.now()); err == nil && !ok {
		return nil, nil
	}
	out, err := s.lease(ctx, st, req)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", classify(err))
	}
	return out, nil
}

// leasable runs sqlLeasable on the read pool, as of now.
func leasable(ctx context.Context, st *statements, now time.Time) (bool, error) {
	var ok bool
	err := st.leasable.QueryRowContext(ctx, micros(now)).Scan(&ok)
	return ok, err
}

// lease is Lease's write transaction.
func (s *Store) lease(ctx context.Context, st *statements, req store.LeaseRequest) ([]store.Lease, error) {
	var out []store.Lease
	err := s.inRedoableWrite(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.leaseIn(ctx, tx, st, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	store.SortLeases(out)
	return out, nil
}

// leaseIn leases in the write transaction tx: Lease's, or an enqueue's.
func (s *Store) leaseIn(ctx context.Context, tx *sql.Tx, st *statements, req store.LeaseRequest) ([]store.Lease, error) {
	limit := req.Limit
	var out []store.Lease
	ts := s.now()
	nowUS := micros(ts)
	limited, err := loadLimited(ctx, tx, st, ts)
	if err != nil {
		return nil, err
	}
	cands, err := freeCandidates(ctx, tx, st, nowUS, limit)
	if err != nil {
		return nil, err
	}
	for _, q := range limited {
		if q.paused || q.capacity <= 0 {
			continue
		}
		c, err := queryCandidates(ctx, tx.StmtContext(ctx, st.dueQueue), q.name, nowUS, min(q.capacity, limit), q.weight)
		if err != nil {
			return nil, err
		}
		cands = append(cands, c...)
	}
	// Each queue's candidates are a prefix of its due tasks within its
	// cap, and PickFair keeps a prefix of each queue, so caps hold.
	keys := make([]store.FairKey, len(cands))
	for i, c := range cands {
		keys[i] = store.FairKey{Queue: c.queue, Weight: c.weight, Priority: c.priority, RunAt: c.runAt, ID: c.id}
	}
	picked := store.PickFair(keys, req)
	if len(picked) == 0 {
		return nil, nil
	}
	chosen := make([]candidate, len(picked))
	for i, k := range picked {
		chosen[i] = cands[k]
	}
	cands = chosen

	// Reserve one fresh token per task from the counter.
	var last int64
	if err := tx.StmtContext(ctx, st.leaseSeq).QueryRowContext(ctx, len(cands)).Scan(&last); err != nil {
		return nil, fmt.Errorf("lease tokens: %w", err)
	}
	first := last - int64(len(cands)) + 1
	expires := s.leaseNow().Add(req.LeaseFor)
	pairs := make([]byte, 0, 32*len(cands))
	pairs = append(pairs, '[')
	for i, c := range cands {
		if i > 0 {
			pairs = append(pairs, ',')
		}
		pairs = append(pairs, '[')
		pairs = strconv.AppendInt(pairs, c.rowid, 10)
		pairs = append(pairs, ',')
		pairs = strconv.AppendInt(pairs, first+int64(i), 10)
		pairs = append(pairs, ']')
	}
	pairs = append(pairs, ']')
	rows, err := tx.StmtContext(ctx, st.claim).QueryContext(ctx, micros(expires), nowUS, string(pairs))
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, store.Lease{Task: t.Task, Token: t.leaseToken.Int64, ExpiresAt: expires})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()

	// Draw the rate-limited queues' tokens for what was started.
	started := make(map[string]int)
	for _, l := range out {
		started[l.Task.Queue]++
	}
	for _, q := range limited {
		if q.rate <= 0 || started[q.name] == 0 {
			continue
		}
		if _, err := tx.StmtContext(ctx, st.drawTokens).ExecContext(ctx,
			q.tokens-float64(started[q.name]), nowUS, q.name); err != nil {
			return nil, fmt.Errorf("draw tokens of %q: %w", q.name, err)
		}
	}
	return out, nil
}

// loadLimited reads the paused and limited queues and works out how many
// tasks each may start now: the concurrency limit minus the tasks running
// (on any worker: this file has one process), and the whole tokens in its
// bucket refilled at rate per second up to a burst of max(1, rate).
func loadLimited(ctx context.Context, tx *sql.Tx, st *statements, ts time.Time) ([]limitedQueue, error) {
	rows, err := tx.StmtContext(ctx, st.limitedQueues).QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("limited queues: %w", err)
	}
	var qs []limitedQueue
	for rows.Next() {
		var (
			q        limitedQueue
			paused   int
			tokensAt int64
		)
		if err := rows.Scan(&q.name, &q.concurrency, &q.rate, &paused, &q.tokens, &tokensAt, &q.weight); err != nil {
			rows.Close()
			return nil, fmt.Errorf("limited queues: %w", err)
		}
		q.paused = paused != 0
		q.capacity = math.MaxInt
		if q.rate > 0 {
			burst := math.Max(1, q.rate)
			if tokensAt == 0 {
				q.tokens = burst // never drawn: a full bucket
			} else {
				// max 0: a clock that stepped back refills nothing.
				elapsed := max(ts.Sub(fromMicros(tokensAt)).Seconds(), 0)
				q.tokens = math.Min(burst, q.tokens+elapsed*q.rate)
			}
			// A whole token starts a task; the fraction carries over. The
			// tiny epsilon keeps float error (0.9999999) from losing one.
			q.capacity = int(math.Floor(q.tokens + 1e-9))
		}
		qs = append(qs, q)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("limited queues: %w", err)
	}
	for i := range qs {
		q := &qs[i]
		if q.paused || q.concurrency <= 0 || q.capacity <= 0 {
			continue
		}
		var running int
		if err := tx.StmtContext(ctx, st.runningCount).QueryRowContext(ctx, q.name).Scan(&running); err != nil {
			return nil, fmt.Errorf("running count of %q: %w", q.name, err)
		}
		q.capacity = min(q.capacity, q.concurrency-running)
	}
	return qs, nil
}

// freeCandidates returns the first limit due tasks of each free queue
// (neither paused nor limited): through sqlDueQueue when there is one
// such queue, else through sqlDueFreeHeads.
func freeCandidates(ctx context.Context, tx *sql.Tx, st *statements, nowUS int64, limit int) ([]candidate, error) {
	rows, err := tx.StmtContext(ctx, st.freeQueues).QueryContext(ctx, 2)
	if err != nil {
		return nil, fmt.Errorf("free queues: %w", err)
	}
	var (
		names   []string
		weights []int
	)
	for rows.Next() {
		var (
			name   string
			weight int
		)
		if err := rows.Scan(&name, &weight); err != nil {
			rows.Close()
			return nil, fmt.Errorf("free queues: %w", err)
		}
		names, weights = append(names, name), append(weights, weight)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("free queues: %w", err)
	}
	switch len(names) {
	case 0:
		return nil, nil
	case 1:
		return queryCandidates(ctx, tx.StmtContext(ctx, st.dueQueue), names[0], nowUS, limit, weights[0])
	}
	return queryCandidates(ctx, tx.StmtContext(ctx, st.dueFreeHeads), nowUS, limit)
}

// queryCandidates runs a due-task query (sqlDueFreeHeads, sqlDueQueue).
func queryCandidates(ctx context.Context, stmt *sql.Stmt, args ...any) ([]candidate, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("due tasks: %w", err)
	}
	defer rows.Close()
	var out []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.rowid, &c.id, &c.queue, &c.priority, &c.runAt, &c.weight); err != nil {
			return nil, fmt.Errorf("due tasks: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("due tasks: %w", err)
	}
	return out, nil
}

// ExtendLeases pushes the held leases' expiry to now+leaseFor and returns
// the refs that are no longer held.
func (s *Store) ExtendLeases(ctx context.Context, refs []store.LeaseRef, leaseFor time.Duration) ([]store.LeaseRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	st, err := s.statements(ctx)
	if err != nil {
		return nil, fmt.Errorf("extend leases: %w", classify(err))
	}
	var lost []store.LeaseRef
	err = s.inRedoableWrite(ctx, func(tx *sql.Tx) error {
		lost = lost[:0]
		expires := micros(s.leaseNow().Add(leaseFor))
		refsJSON := make([]byte, 0, 64*len(refs))
		refsJSON = append(refsJSON, '[')
		for i, r := range refs {
			if i > 0 {
				refsJSON = append(refsJSON, ',')
			}
			refsJSON = append(refsJSON, '[')
			refsJSON = appendJSONString(refsJSON, r.TaskID)
			refsJSON = append(refsJSON, ',')
			refsJSON = strconv.AppendInt(refsJSON, r.Token, 10)
			refsJSON = append(refsJSON, ']')
		}
		refsJSON = append(refsJSON, ']')
		rows, err := tx.StmtContext(ctx, st.extendLeases).QueryContext(ctx, expires, string(refsJSON))
		if err != nil {
			return err
		}
		defer rows.Close()
		held := make(map[store.LeaseRef]bool, len(refs))
		for rows.Next() {
			var r store.LeaseRef
			if err := rows.Scan(&r.TaskID, &r.Token); err != nil {
				return err
			}
			held[r] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range refs {
			if !held[r] {
				lost = append(lost, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("extend leases: %w", classify(err))
	}
	return lost, nil
}

// limitedSlotSQL, in a completion's RETURNING, tells whether the task's
// queue has a concurrency limit: ending its attempt frees a slot that a
// waiting task of that queue may take, so the store signals Wakeups.
const limitedSlotSQL = `(SELECT q.concurrency > 0 FROM spool_queues q WHERE q.name = spool_tasks.queue)`

// Completion statements, one per outcome, each for a batch: ?2 is a JSON
// array of [id, token, last_error, last_status, retry_at] (retry_at for
// Retry and Defer only: RetryAt, or now + RetryIn), ?1 is now. Each is guarded by the lease: it matches only a
// task still running under the presented token, so a rescued, cancelled or
// already completed attempt changes nothing. A batch names a task once:
// should it name one twice, which of the two UPDATE … FROM applies is
// undefined.
const (
	completeSucceeded = `UPDATE spool_tasks SET
			state = 'succeeded', finished_at = ?1, updated_at = ?1,
			lease_token = NULL, lease_expires_at = NULL, last_error = c.value ->> 2, last_status = c.value ->> 3
		FROM json_each(?2) AS c
		WHERE spool_tasks.id = c.value ->> 0 AND spool_tasks.state = 'running' AND spool_tasks.lease_token = c.value ->> 1
		RETURNING id, queue, state, run_at, ` + limitedSlotSQL
	completeFail = `UPDATE spool_tasks SET
			state = 'failed', finished_at = ?1, updated_at = ?1,
			lease_token = NULL, lease_expires_at = NULL, last_error = c.value ->> 2, last_status = c.value ->> 3
		FROM json_each(?2) AS c
		WHERE spool_tasks.id = c.value ->> 0 AND spool_tasks.state = 'running' AND spool_tasks.lease_token = c.value ->> 1
		RETURNING id, queue, state, run_at, ` + limitedSlotSQL
	// The attempt that just ended was the last one allowed: fail instead.
	completeRetry = `UPDATE spool_tasks SET
			state       = CASE WHEN attempt >= max_attempts THEN 'failed' ELSE 'retrying' END,
			run_at      = CASE WHEN attempt >= max_attempts THEN run_at ELSE c.value ->> 4 END,
			finished_at = CASE WHEN attempt >= max_attempts THEN ?1 ELSE NULL END,
			updated_at = ?1, lease_token = NULL, lease_expires_at = NULL,
			last_error = c.value ->> 2, last_status = c.value ->> 3
		FROM json_each(?2) AS c
		WHERE spool_tasks.id = c.value ->> 0 AND spool_tasks.state = 'running' AND spool_tasks.lease_token = c.value ->> 1
		RETURNING id, queue, state, run_at, ` + limitedSlotSQL
	// An abandoned attempt does not count: give the attempt back.
	completeRelease = `UPDATE spool_tasks SET
			state = 'available', run_at = ?1, attempt = max(attempt - 1, 0), updated_at = ?1,
			lease_token = NULL, lease_expires_at = NULL, last_error = c.value ->> 2, last_status = c.value ->> 3
		FROM json_each(?2) AS c
		WHERE spool_tasks.id = c.value ->> 0 AND spool_tasks.state = 'running' AND spool_tasks.lease_token = c.value ->> 1
		RETURNING id, queue, state, run_at, ` + limitedSlotSQL
	// An attempt never sent (its destination is busy, held or open) does not
	// count either; the task waits until retry_at and keeps the status of
	// the last response it really had.
	completeDefer = `UPDATE spool_tasks SET
			state = 'retrying', run_at = c.value ->> 4, attempt = max(attempt - 1, 0), finished_at = NULL, updated_at = ?1,
			lease_token = NULL, lease_expires_at = NULL, last_error = c.value ->> 2
		FROM json_each(?2) AS c
		WHERE spool_tasks.id = c.value ->> 0 AND spool_tasks.state = 'running' AND spool_tasks.lease_token = c.value ->> 1
		RETURNING id, queue, state, run_at, ` + limitedSlotSQL
)

// Complete applies the completions in one transaction.
func (s *Store) Complete(ctx context.Context, cs []store.Completion) ([]bool, error) {
	accepted := make([]bool, len(cs))
	if len(cs) == 0 {
		return accepted, nil
	}
	for i, c := range cs {
		switch c.Outcome {
		case store.Succeeded, store.Retry, store.Fail, store.Release, store.Defer:
		default:
			return nil, fmt.Errorf("complete: completion %d (task %s): unknown outcome %d", i, c.TaskID, c.Outcome)
		}
	}
	st, err := s.statements(ctx)
	if err != nil {
		return nil, fmt.Errorf("complete: %w", classify(err))
	}
	// The n-th completion naming a task goes in round n: a round names each
	// task once, and rounds run in order, so that completions of one task
	// apply in the order given, as one statement each would.
	round := make([]int, len(cs))
	rounds := 1
	if len(cs) > 1 {
		seen := make(map[string]int, len(cs))
		for i, c := range cs {
			round[i] = seen[c.TaskID]
			seen[c.TaskID]++
			rounds = max(rounds, round[i]+1)
		}
	}
	wake := false
	counts := make(finalCounts)
	err = s.inRedoableWrite(ctx, func(tx *sql.Tx) error {
		clear(accepted)
		clear(counts)
		wake = false
		nowUS := micros(s.now())
		var batch []byte
		byID := make(map[string]int, len(cs))
		for r := range rounds {
			for k, stmt := range st.complete {
				outcome := store.Succeeded + store.Outcome(k)
				batch = append(batch[:0], '[')
				clear(byID)
				for i, c := range cs {
					if round[i] != r || c.Outcome != outcome {
						continue
					}
					if len(byID) > 0 {
						batch = append(batch, ',')
					}
					byID[c.TaskID] = i
					batch = appendCompletion(batch, c, nowUS)
				}
				if len(byID) == 0 {
					continue
				}
				batch = append(batch, ']')
				if err := complete(ctx, tx.StmtContext(ctx, stmt), nowUS, batch, byID, accepted, counts, &wake); err != nil {
					return err
				}
			}
		}
		if err := recordAttempts(ctx, tx, st, cs, accepted); err != nil {
			return err
		}
		return storeCounts(ctx, tx, st, counts)
	})
	if err != nil {
		return nil, fmt.Errorf("complete: %w", classify(err))
	}
	if wake {
		s.hub.broadcast()
	}
	return accepted, nil
}

// attemptCols are spool_attempts' columns as recordAttempts binds them.
const (
	attemptCols = `task_id, attempt, outcome, started_at, finished_at, duration_us, status,
		error_class, error_message, response_excerpt, response_headers, replica, trace_id`
	attemptNCols = 13
)

// insertAttemptsSQL is the insert of n attempt rows.
func insertAttemptsSQL(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO spool_attempts (` + attemptCols + `) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?)")
	}
	return b.String()
}

// recordAttempts inserts the attempt records of the accepted completions,
// in the order of cs (the order their attempts ended in, which rowid order
// keeps), by insertShapes rows at a time as insertTasks does: bound
// parameters, where a JSON batch read through json_each cost twice as
// much (each row's array rendered as text again and parsed once per
// column).
func recordAttempts(ctx context.Context, tx *sql.Tx, st *statements, cs []store.Completion, accepted []bool) error {
	idx := make([]int, 0, len(cs))
	for i, c := range cs {
		if accepted[i] && c.Attempt != nil {
			idx = append(idx, i)
		}
	}
	args := make([]any, 0, min(len(idx), insertShapes[0])*attemptNCols)
	for len(idx) > 0 {
		k := 0
		for insertShapes[k] > len(idx) {
			k++
		}
		n := insertShapes[k]
		args = args[:0]
		for _, i := range idx[:n] {
			args = appendAttemptArgs(args, cs[i].TaskID, cs[i].Attempt)
		}
		if _, err := tx.StmtContext(ctx, st.insertAttempts[k]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("record attempts: %w", err)
		}
		idx = idx[n:]
	}
	return nil
}

// appendAttemptArgs appends a's columns in attemptCols order.
func appendAttemptArgs(args []any, taskID string, a *task.Attempt) []any {
	var started, dur, status, excerpt any
	if !a.StartedAt.IsZero() {
		started = micros(a.StartedAt)
	}
	if a.Duration > 0 {
		dur = a.Duration.Microseconds()
	}
	if a.Status != 0 {
		status = int64(a.Status)
	}
	if a.ResponseExcerpt != nil {
		excerpt = task.CleanText(*a.ResponseExcerpt)
	}
	return append(args, taskID, int64(a.Attempt), string(a.Outcome), started, micros(a.FinishedAt), dur, status,
		textOrNull(string(a.ErrorClass)), textOrNull(a.ErrorMessage), excerpt,
		textOrNull(store.EncodeAttemptHeaders(a.ResponseHeaders)), textOrNull(a.Replica), textOrNull(a.TraceID))
}

// textOrNull is s made storable, or nil (NULL) when empty.
func textOrNull(s string) any {
	if s == "" {
		return nil
	}
	return task.CleanText(s)
}

// appendCompletion appends c as complete* statements read it.
func appendCompletion(b []byte, c store.Completion, nowUS int64) []byte {
	b = append(b, '[')
	b = appendJSONString(b, c.TaskID)
	b = append(b, ',')
	b = strconv.AppendInt(b, c.Token, 10)
	b = append(b, ',')
	if c.LastError == "" {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, c.LastError)
	}
	b = append(b, ',')
	if c.LastStatus == 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(c.LastStatus), 10)
	}
	if c.Outcome == store.Retry || c.Outcome == store.Defer {
		retryAt := nowUS + max(c.RetryIn, 0).Microseconds()
		if !c.RetryAt.IsZero() {
			retryAt = micros(c.RetryAt)
		}
		b = append(b, ',')
		b = strconv.AppendInt(b, retryAt, 10)
	}
	return append(b, ']')
}

// complete runs one completion statement over batch and marks the
// completions (byID: task id to index in accepted) it applied, counting
// the tasks it finished in counts; wake is set
// when one made a task due now or freed a slot of a concurrency-limited
// queue.
func complete(ctx context.Context, stmt *sql.Stmt, nowUS int64, batch []byte, byID map[string]int, accepted []bool,
	counts finalCounts, wake *bool) error {
	rows, err := stmt.QueryContext(ctx, nowUS, string(batch))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, queue, state string
			runAt            int64
			limited          sql.NullBool
		)
		if err := rows.Scan(&id, &queue, &state, &runAt, &limited); err != nil {
			return err
		}
		counts.add(queue, state, 1)
		i, ok := byID[id]
		if !ok {
			return fmt.Errorf("completed task %s that was not asked for", id)
		}
		accepted[i] = true
		if (state == string(task.Retrying) || state == string(task.Available)) && runAt <= nowUS || limited.Bool {
			*wake = true
		}
	}
	return rows.Err()
}
