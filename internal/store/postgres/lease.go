package postgres

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// recheck wraps the condition an UPDATE re-checks on rows it finds by ctid
// so that the planner can neither use it to match a partial index nor turn
// it into an index condition: a TID scan is then the only way to the rows,
// whatever the statistics say. (COALESCE changes nothing: the condition is
// never NULL on these NOT NULL columns.)
func recheck(cond string) string { return "COALESCE(" + cond + ", false)" }

// genericPlansSQL, sent just before the dispatcher's hot statements (the
// free lease, the completion and the lease extension) in their round
// trip, makes PostgreSQL run them on the generic plans of their prepared
// statements until the implicit transaction ends. Left to plan_cache_mode = auto, a connection
// kept planning them afresh at almost every execution: the custom plan's
// cost, estimated for the actual LIMIT or array length, looked cheaper
// than the generic one's, whose guess is a hundred rows. At 1,000 tasks/s
// that planning was a sixth of PostgreSQL's CPU (perf: pg_plan_queries 15%
// of the backends' samples; pg_stat_statements: a lease planned in 0.5 ms,
// executed in 0.1).
//
// A generic plan is made once per connection and kept until the table's
// statistics change, and one made while the table was empty found the
// leased rows by ctid with a sequential scan (as cheap as a TID scan on an
// empty table): 6.5 ms a lease once 30,000 finished tasks had piled up,
// until an ANALYZE (BenchmarkLeaseComplete, which runs no maintainer, fell
// from 20,000 to 9,000 tasks/s). enable_seqscan = off, in the same
// transaction, keeps sequential scans out of these plans whenever any
// other path exists, so they stay the ones the statements are written
// for: TestLeaseReadsOnlyWhatItLeases, TestLeasePlanMadeOnAnEmptyTable and
// TestCompleteReadsOnlyWhatItCompletes hold them to reading about what
// they change. The penalty enable_seqscan adds to a plan's cost (10^10 for
// the sequential scans of spool_queues, which has no other path) would put
// it far above jit_above_cost, and JIT-compiling the lease took 250 ms at
// every execution: jit is off for these statements (they run in well under
// a millisecond, where JIT never pays). The settings are local to the
// transaction: every other statement on the connection keeps auto (the
// custom plans of the optional filters of ListTasks matter) and sequential
// scans.
//
// The same statement commits the lease and the completion asynchronously
// (synchronous_commit off, for that transaction only): their commit does
// not wait for its WAL to reach the disk. A database crash can then forget
// the last of them (at most about three wal_writer_delay, 0.6 s by
// default), and that costs a delivery again, never a task: a forgotten
// lease leaves its task due, to be leased anew; a forgotten completion
// leaves its task running under a lease that expires and is rescued. Spool
// delivers at least once in any case (a crash between the receiver's answer
// and the completion has the same effect). Everything a client is answered
// for (enqueue, cancel, retry, settings) still commits durably, and a
// durable commit flushes every earlier asynchronous one with it. On this
// 2-core machine a durable commit costs PostgreSQL about 0.4 ms of CPU at
// 100 commits/s (pgbench, one-row inserts): two of the three commits of a
// task were most of its cost at low rates.
const genericPlansSQL = `SELECT ` + planSettings + `,
	set_config('synchronous_commit', 'off', true)`

// planSettings are genericPlansSQL's settings of the plans.
const planSettings = `set_config('plan_cache_mode', 'force_generic_plan', true),
	set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)`

// leaseFreeSQL leases up to $1 available tasks for $2 milliseconds, in one
// statement, from the queues that are neither paused nor limited, in the
// fair order of store.LeaseRequest: $3 and $4 are the caller's running
// counts (queue names and counts, as two arrays), $5 how many of the $1
// positions are shared (the rest is the reserve). It stands back when a
// limited queue has due work it may start (then leaseMixed orders both
// kinds together); that test is an InitPlan (an uncorrelated subquery
// PostgreSQL evaluates once).
//
// It reads only about what it leases, whatever waits in the queues: it
// takes the first $5 (at least one) available tasks of each free queue
// from spool_tasks_queue_available_idx, each with its rank r in its
// queue (row_number over the index order, so no sort), gives each the key
// (running + r) / weight, orders that union (queues × $5 rows at most,
// usually tens of queues) and keeps the first $5, then up to $1 - $5 of
// the reserve: queues with nothing running and nothing taken yet, one
// task each (their first task, rank 1). Only then are those rows locked (a
// row leased meanwhile by another caller is skipped, or fails the
// re-check on its new version). Walking spool_tasks_available_idx in
// global order instead, as this statement did before queues were served
// fairly, could not give a quiet queue its turn, and read every task a
// paused or rate-limited queue had piled up (a paused queue of 20,000
// tasks cost 4 ms a lease, 0 leased).
//
// SKIP LOCKED lets concurrent callers take disjoint rows; a row another
// transaction changed meanwhile is re-checked against the WHERE once
// locked, so a task is never leased twice. Tokens come from a sequence and
// are never reused. The update finds the picked rows by their physical
// address (a TID scan): the locking locked them, so no other transaction
// can have moved them since. A join on id instead left the plan to the
// planner's estimates, and the generic plan of the prepared statement
// guessed that LIMIT $1 picks a tenth of the table and hash-joined it with
// a scan of the whole table (40 ms instead of 4 at 65,000 rows), or, with
// the statistics of a table that was small when the plan was made, scanned
// the whole table for the array of ids. The state re-check after the TID
// list goes through recheck, so that it cannot become an index condition
// either: as ` + "`t.state = 'available'`" + ` the planner, trusting statistics taken
// when the table was nearly empty, answered it with a bitmap scan of
// spool_tasks_available_idx and filtered every available task against the
// array (8,000 rows read to lease 26, 4 ms a lease: a draining backlog
// paid for its whole length at every lease).
var leaseFreeSQL = `
WITH ranked AS (
	SELECT h.ctid, h.rank, COALESCE(r.n, 0) AS running,
		row_number() OVER (ORDER BY (COALESCE(r.n, 0) + h.rank)::float8 / q.weight, h.priority, h.run_at, h.id) AS pos
	FROM spool_queues q
	LEFT JOIN unnest($3::text[], $4::int[]) AS r(name, n) ON r.name = q.name
	CROSS JOIN LATERAL (
		SELECT t.ctid, t.priority, t.run_at, t.id,
			row_number() OVER (ORDER BY t.priority, t.run_at, t.id) AS rank
		FROM spool_tasks t
		WHERE t.queue = q.name AND t.state = 'available'
		ORDER BY t.priority, t.run_at, t.id
		LIMIT greatest($5::int, 1)) h
	WHERE NOT ` + heldQueueSQL + ` AND NOT ` + limitedWorkSQL + `
), picked AS (
	SELECT ctid FROM ranked WHERE pos <= $5::int
	UNION ALL
	(SELECT ctid FROM ranked WHERE pos > $5::int AND rank = 1 AND running = 0
		ORDER BY pos LIMIT $1::int - $5::int)
), locked AS (
	SELECT t.ctid FROM spool_tasks t
	WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM picked)) AND ` + recheck(`t.state = 'available'`) + `
	FOR UPDATE SKIP LOCKED
)
UPDATE spool_tasks t SET ` + leaseSet + `
WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM locked))
	AND ` + recheck(`t.state = 'available'`) + `
RETURNING ` + taskColsT + `, t.lease_token, t.lease_expires_at`

// heldQueueSQL holds for a queue row q whose tasks a free lease leaves
// out: paused, or with a concurrency or rate limit.
const heldQueueSQL = `(q.paused OR q.concurrency > 0 OR q.rate_limit > 0)`

// freeHeadsSQL selects, without locking them, the first $1 available
// tasks of each free queue (neither paused nor limited) through
// spool_tasks_queue_available_idx, with the queue's weight: leaseMixed's
// candidates from the free queues.
const freeHeadsSQL = `SELECT h.id::text, q.name, h.priority, h.run_at, q.weight FROM spool_queues q CROSS JOIN LATERAL (
		SELECT t.id, t.priority, t.run_at FROM spool_tasks t
		WHERE t.queue = q.name AND t.state = 'available'
		ORDER BY t.priority, t.run_at, t.id
		LIMIT $1) h
	WHERE NOT ` + heldQueueSQL

// limitedWorkSQL holds when a limited queue has due work and room to start
// some.
const limitedWorkSQL = `EXISTS (SELECT 1 FROM spool_queues q ` + limitedQueuesWhere + `)`

// promoteDueSQL moves up to $1 scheduled and retrying tasks whose run_at
// has passed to available (through spool_tasks_due_idx, so it reads only
// due rows), so that the lease that follows sees every due task in one
// ordered index. Rows another lease or the maintainer holds are skipped.
var promoteDueSQL = `WITH due AS (
		SELECT ctid FROM spool_tasks
		WHERE state IN ('scheduled', 'retrying') AND run_at <= now()
		ORDER BY run_at LIMIT $1
		FOR UPDATE SKIP LOCKED
	)
	UPDATE spool_tasks t SET state = 'available', updated_at = now()
	WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM due)) AND ` + recheck(`t.state IN ('scheduled', 'retrying')`)

// leaseSet starts an attempt; $2 is the lease duration in milliseconds.
const leaseSet = `state = 'running', attempt = t.attempt + 1,
	lease_token = nextval('spool_lease_token_seq'),
	lease_expires_at = now() + $2 * interval '1 millisecond',
	updated_at = now()`

// limitedQueuesWhere selects limited, unpaused queues that have available
// tasks (Lease promotes due scheduled and retrying tasks first)
// and, judging by a snapshot, room to start one. The due-work probe is a
// scalar subquery with LIMIT 1 rather than EXISTS so that the planner
// cannot turn it into a join that first reads every due task of every
// queue: it runs once per limited queue, after the cheap tests. The exact check runs under
// the queue rows' locks; this only spares saturated queues the locking.
const limitedQueuesWhere = `
WHERE NOT q.paused AND (q.concurrency > 0 OR q.rate_limit > 0)
	AND (q.concurrency = 0 OR q.concurrency >
		(SELECT count(*) FROM spool_tasks r WHERE r.queue = q.name AND r.state = 'running'))
	AND (q.rate_limit = 0 OR least(greatest(1, q.rate_limit),
		q.tokens + q.rate_limit * extract(epoch FROM clock_timestamp() - q.tokens_at)) >= 1)
	AND (SELECT true FROM spool_tasks t
		WHERE t.queue = q.name AND t.state = 'available' LIMIT 1)`

// Lease takes up to req.Limit due tasks in the fair order across queues
// (see store.LeaseRequest). When no limited queue has work (the common
// case) that is one round trip: due scheduled and retrying tasks become
// available, then one statement leases. Otherwise one transaction locks
// the limited queues' rows (in name order, so replicas cannot deadlock),
// which serializes their leasing across replicas and makes the running
// counts and token buckets read under the locks exact; it then gathers
// candidates from each limited queue (as many as it may start) and from
// the free queues, orders them with store.PickFair, and leases those.
func (s *Store) Lease(ctx context.Context, req store.LeaseRequest) ([]store.Lease, error) {
	if req.Limit <= 0 {
		return nil, nil
	}
	req.Shared = max(min(req.Shared, req.Limit), 0)
	ms := req.LeaseFor.Milliseconds()
	names, counts := runningArrays(req.Running)
	// One round trip, one implicit transaction: promote what became due
	// (unless req.AvailableOnly), check for limited work, lease the free
	// queues' tasks.
	var (
		batch   pgx.Batch
		limited bool
		ls      []store.Lease
	)
	if !req.AvailableOnly {
		batch.Queue(promoteDueSQL, maintChunk)
	}
	batch.Queue(`SELECT ` + limitedWorkSQL).QueryRow(func(row pgx.Row) error { return row.Scan(&limited) })
	queueLeaseFree(&batch, req, ms, names, counts, &ls)
	if err := s.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return nil, wrap("lease", err)
	}
	if limited && len(ls) < req.Limit {
		// Usually the free lease stood back and ls is empty; if the limited
		// work went between the two statements, take the rest from both,
		// counting what was just leased as running.
		rest := remaining(req, ls)
		more, ok, err := s.leaseMixed(ctx, rest, ms)
		if err == nil && !ok {
			// Under the locks no limited queue had work after all: the
			// free lease may have stood back for nothing.
			var again pgx.Batch
			names, counts := runningArrays(rest.Running)
			queueLeaseFree(&again, rest, ms, names, counts, &more)
			err = s.pool.SendBatch(ctx, &again).Close()
		}
		if err != nil {
			if len(ls) > 0 {
				return ls, nil // leased and committed: deliver these
			}
			return nil, wrap("lease", err)
		}
		ls = append(ls, more...)
	}
	store.SortLeases(ls)
	return ls, nil
}

// remaining is what is left of req once ls were leased: fewer positions,
// shared ones first, and ls counted as running.
func remaining(req store.LeaseRequest, ls []store.Lease) store.LeaseRequest {
	if len(ls) == 0 {
		return req
	}
	running := maps.Clone(req.Running)
	if running == nil {
		running = make(map[string]int)
	}
	for _, l := range ls {
		running[l.Task.Queue]++
	}
	req.Running = running
	req.Limit -= len(ls)
	req.Shared = max(min(req.Shared-len(ls), req.Limit), 0)
	return req
}

// runningArrays splits running counts into the two arrays leaseFreeSQL
// takes.
func runningArrays(running map[string]int) (names []string, counts []int32) {
	names, counts = make([]string, 0, len(running)), make([]int32, 0, len(running))
	for q, n := range running {
		if n > 0 {
			names, counts = append(names, q), append(counts, int32(min(n, math.MaxInt32)))
		}
	}
	return names, counts
}

// queueLeaseFree queues the free lease for req, for ms milliseconds, on
// its generic plan (genericPlansSQL), collecting into ls.
func queueLeaseFree(b *pgx.Batch, req store.LeaseRequest, ms int64, names []string, counts []int32, ls *[]store.Lease) {
	b.Queue(genericPlansSQL)
	b.Queue(leaseFreeSQL, req.Limit, ms, names, counts, req.Shared).Query(func(rows pgx.Rows) error {
		var err error
		*ls, err = collectLeases(rows)
		return err
	})
}

// candidate is a due task leaseMixed may lease.
type candidate struct {
	id       string
	queue    string
	priority int
	runAt    time.Time
	weight   int
}

// bucket is a limited queue's state read under its lock.
type bucket struct {
	paused               bool
	concurrency, running int
	rate, tokens         float64
	now                  time.Time
}

// leaseMixed is Lease when limited queues have due work. ok is false when,
// under the locks, none had (the caller then takes the one-statement path).
func (s *Store) leaseMixed(ctx context.Context, req store.LeaseRequest, ms int64) (_ []store.Lease, ok bool, _ error) {
	limit := req.Limit
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, false, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	// 1. Lock the limited queues with work, in name order.
	rows, err := tx.Query(ctx, `SELECT q.name FROM spool_queues q `+limitedQueuesWhere+`
		ORDER BY q.name FOR UPDATE OF q`)
	if err != nil {
		return nil, false, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, false, err
	}
	if len(names) == 0 {
		return nil, false, tx.Commit(ctx)
	}

	// 2. Read them again in a new statement: in READ COMMITTED each
	// statement has a fresh snapshot, so these counts include what the
	// previous lock holder leased and committed while we waited. (The
	// locking statement's own snapshot predates the wait.)
	buckets := make(map[string]*bucket, len(names))
	rows, err = tx.Query(ctx, `SELECT q.name, q.paused, q.concurrency, q.rate_limit, q.tokens, q.tokens_at, clock_timestamp(),
			(SELECT count(*) FROM spool_tasks r WHERE r.queue = q.name AND r.state = 'running')
		FROM spool_queues q WHERE q.name = ANY($1::text[])`, names)
	if err != nil {
		return nil, false, err
	}
	var (
		name     string
		b        bucket
		tokensAt time.Time
	)
	if _, err := pgx.ForEachRow(rows, []any{&name, &b.paused, &b.concurrency, &b.rate, &b.tokens, &tokensAt, &b.now, &b.running}, func() error {
		if b.rate > 0 {
			b.tokens = refill(b.tokens, b.rate, b.now.Sub(tokensAt))
		}
		bb := b
		buckets[name] = &bb
		return nil
	}); err != nil {
		return nil, false, err
	}

	// 3. Gather candidates: from each limited queue as many as it may start
	// now (locked until commit: the queue's lock serializes its leasing
	// anyway), from each free queue up to limit (not locked: the update
	// skips those another caller holds).
	var batch pgx.Batch
	var cands []candidate
	collect := func(rows pgx.Rows) error {
		var c candidate
		_, err := pgx.ForEachRow(rows, []any{&c.id, &c.queue, &c.priority, &c.runAt, &c.weight}, func() error {
			cands = append(cands, c)
			return nil
		})
		return err
	}
	for _, name := range names {
		b := buckets[name]
		if b == nil || b.paused || (b.concurrency == 0 && b.rate == 0) {
			continue // changed since the lock statement's snapshot
		}
		allowed := limit
		if b.concurrency > 0 {
			allowed = min(allowed, b.concurrency-b.running)
		}
		if b.rate > 0 {
			// The epsilon absorbs float error, e.g. ten 0.1s summing to 0.999….
			allowed = min(allowed, int(math.Floor(b.tokens+1e-9)))
		}
		if allowed > 0 {
			batch.Queue(`SELECT t.id::text, t.queue, t.priority, t.run_at,
					(SELECT q.weight FROM spool_queues q WHERE q.name = t.queue)
				FROM spool_tasks t WHERE t.queue = $2 AND t.state = 'available'
				ORDER BY t.priority, t.run_at, t.id LIMIT $1 FOR UPDATE OF t SKIP LOCKED`, allowed, name).Query(collect)
		}
	}
	batch.Queue(freeHeadsSQL, limit).Query(collect)
	if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
		return nil, false, err
	}

	// 4. Lease the candidates the fair order picks; the others' row locks
	// end with the transaction.
	keys := make([]store.FairKey, len(cands))
	for i, c := range cands {
		keys[i] = store.FairKey{Queue: c.queue, Weight: c.weight, Priority: c.priority, RunAt: c.runAt.UnixMicro(), ID: c.id}
	}
	picked := store.PickFair(keys, req)
	if len(picked) == 0 {
		return nil, true, tx.Commit(ctx)
	}
	ids := make([]string, len(picked))
	for i, k := range picked {
		ids[i] = cands[k].id
	}
	var out []store.Lease
	batch = pgx.Batch{}
	batch.Queue(`WITH locked AS (
			SELECT t.ctid FROM spool_tasks t WHERE t.id = ANY($1::uuid[]) AND t.state = 'available'
			FOR UPDATE SKIP LOCKED
		)
		UPDATE spool_tasks t SET `+leaseSet+`
		WHERE t.ctid = ANY (ARRAY(SELECT ctid FROM locked)) AND `+recheck(`t.state = 'available'`)+`
		RETURNING `+taskColsT+`, t.lease_token, t.lease_expires_at`, ids, ms).
		Query(func(rows pgx.Rows) error {
			var err error
			out, err = collectLeases(rows)
			return err
		})
	if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
		return nil, false, err
	}
	// Draw the rate-limited queues' tokens for what started. (Their
	// candidates were locked, so every one picked was leased.)
	spent := make(map[string]int)
	for _, l := range out {
		if b := buckets[l.Task.Queue]; b != nil && b.rate > 0 {
			spent[l.Task.Queue]++
		}
	}
	batch = pgx.Batch{}
	for q, n := range spent {
		b := buckets[q]
		batch.Queue(`UPDATE spool_queues SET tokens = $2, tokens_at = $3 WHERE name = $1`, q, b.tokens-float64(n), b.now)
	}
	if batch.Len() > 0 {
		if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
			return nil, false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, false, err
	}
	store.SortLeases(out)
	return out, true, nil
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

// leaseRefArrays splits refs into parallel arrays in task id order (see
// byTaskID), leaving out ids that cannot exist.
func leaseRefArrays(refs []store.LeaseRef) (ids []string, tokens []int64) {
	for _, i := range byTaskID(len(refs), func(i int) string { return refs[i].TaskID }) {
		if r := refs[i]; validID(r.TaskID) {
			ids, tokens = append(ids, r.TaskID), append(tokens, r.Token)
		}
	}
	return ids, tokens
}

// byTaskID returns the indexes 0..n-1 ordered by the task id id(i) gives.
// The statements that update running tasks by a batch of ids (the
// completion, the lease extension) lock the rows in the order of their id
// arrays (a nested loop over the array, one index lookup each): sent in
// one global order, a heartbeat's extension and a completion batch that
// share tasks wait for each other instead of deadlocking. In array order
// as they came (the heartbeat's from a map), they deadlocked: PostgreSQL
// detected it only after deadlock_timeout (1 s), the completion was
// retried, and the worker slots held until it was stored stopped every
// lease meanwhile: 1.7 s of delivery latency in about one run in eight
// at 1,000 tasks/s (TestCompleteAndExtendDoNotDeadlock).
func byTaskID(n int, id func(int) string) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	// Stable: of two reports of one lease in a batch, the first is sent.
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(id(a), id(b)) })
	return order
}

// extendSQL moves the lease expiry of the running tasks of a batch ($1
// ids, $2 tokens) to $3 milliseconds from now and returns the leases it
// still found held. The state test is written as in completeSQL, for the
// same reason: a lookup by id, never a walk of the running tasks against
// the batch. It runs with genericPlansSQL's settings too: left to
// plan_cache_mode auto and sequential scans, it read the whole table to
// extend a batch, on a plan made with the statistics of an empty table and
// on a custom plan with current ones (3,000 rows read for 50 leases in
// TestExtendLeasesReadsOnlyWhatItExtends), every heartbeat of every
// replica. Committed asynchronously, as the lease is: a lost extension
// can only let a lease expire early and its task be delivered again.
const extendSQL = `UPDATE spool_tasks t
	SET lease_expires_at = now() + $3 * interval '1 millisecond'
	FROM unnest($1::uuid[], $2::bigint[]) AS c(id, token)
	WHERE t.id = c.id AND (t.state = 'running') IS TRUE AND t.lease_token = c.token
	RETURNING t.id::text, t.lease_token`

// ExtendLeases pushes the expiry of held leases and reports the lost ones.
func (s *Store) ExtendLeases(ctx context.Context, refs []store.LeaseRef, leaseFor time.Duration) ([]store.LeaseRef, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	ids, tokens := leaseRefArrays(refs)
	held := make(map[store.LeaseRef]bool, len(refs))
	var (
		batch pgx.Batch
		ref   store.LeaseRef
	)
	batch.Queue(genericPlansSQL)
	batch.Queue(extendSQL, ids, tokens, leaseFor.Milliseconds()).Query(func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&ref.TaskID, &ref.Token}, func() error {
			held[ref] = true
			return nil
		})
		return err
	})
	if err := s.pool.SendBatch(ctx, &batch).Close(); err != nil {
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
// changes: a rescued, cancelled or finished task does not. The last column
// asks for a wake-up: the task is due again now, or its queue has a
// concurrency limit and the slot it freed may let a waiting task start
// (on any replica: the NOTIFY reaches them all). Outcomes are store.Outcome
// values: 1 succeeded, 2 retry, 3 fail, 4 release, 5 defer. A retry or a
// deferral is due at retry_at if given, else retry_in_us after the
// database's now(), so the dispatcher's clock never decides. Release and
// Defer give the attempt back (it was abandoned or never sent); a deferred
// task keeps the status of the last response it really had. The tasks it
// finishes are counted in spool_task_count_deltas by the same statement
// (one row per queue and final state of the batch), and the attempt
// records of the accepted completions ($8 to $19, NULL outcome where a
// completion has none) go into spool_attempts by it too: the history costs
// no round trip and no commit of its own.
//
// The state test is written (t.state = 'running') IS TRUE, which means the
// same (state is never NULL), so that the planner cannot prove the
// predicate of spool_tasks_running_queue_idx from it: a generic plan made
// while few tasks were running (statistics of an empty table, or of an idle
// hour) otherwise walked every running task and matched each against the
// batch (a hash or nested-loop join, running × batch), instead of looking
// each completed task up by its id. With 100 workers and batches of a few
// hundred, that doubled the completion's cost in a drain.
// TestCompleteReadsOnlyWhatItCompletes holds the plan to its lookups.
const completeSQL = `
WITH done AS (
UPDATE spool_tasks t SET
	state = CASE c.outcome
		WHEN 1 THEN 'succeeded'
		WHEN 3 THEN 'failed'
		WHEN 4 THEN 'available'
		WHEN 5 THEN 'retrying'
		ELSE CASE WHEN t.attempt >= t.max_attempts THEN 'failed' ELSE 'retrying' END
	END,
	run_at = CASE
		WHEN c.outcome = 4 THEN now()
		WHEN c.outcome = 5 THEN COALESCE(c.retry_at, now() + c.retry_in_us * interval '1 microsecond')
		WHEN c.outcome = 2 AND t.attempt < t.max_attempts THEN COALESCE(c.retry_at, now() + c.retry_in_us * interval '1 microsecond')
		ELSE t.run_at
	END,
	attempt = CASE WHEN c.outcome IN (4, 5) THEN greatest(t.attempt - 1, 0) ELSE t.attempt END,
	finished_at = CASE
		WHEN c.outcome IN (1, 3) OR (c.outcome = 2 AND t.attempt >= t.max_attempts) THEN now()
	END,
	lease_token = NULL,
	lease_expires_at = NULL,
	last_error = c.last_error,
	last_status = CASE WHEN c.outcome = 5 THEN t.last_status ELSE c.last_status END,
	updated_at = now()
FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::timestamptz[], $5::text[], $6::int[], $7::bigint[],
		$8::int[], $9::text[], $10::timestamptz[], $11::timestamptz[], $12::bigint[], $13::int[],
		$14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[])
	AS c(id, token, outcome, retry_at, last_error, last_status, retry_in_us,
		a_attempt, a_outcome, a_started, a_finished, a_duration_us, a_status,
		a_class, a_message, a_excerpt, a_headers, a_replica, a_trace)
WHERE t.id = c.id AND (t.state = 'running') IS TRUE AND t.lease_token = c.token
RETURNING t.id::text AS id, c.token, t.queue, t.state, t.state IN ('available', 'retrying') AND t.run_at <= now()
	OR EXISTS (SELECT 1 FROM spool_queues q WHERE q.name = t.queue AND q.concurrency > 0) AS wake,
	t.id AS task_id, c.a_attempt, c.a_outcome, c.a_started, c.a_finished, c.a_duration_us, c.a_status,
	c.a_class, c.a_message, c.a_excerpt, c.a_headers, c.a_replica, c.a_trace
), counted AS (
	INSERT INTO spool_task_count_deltas (queue, state, n)
	SELECT queue, state, count(*) FROM done WHERE state IN ('succeeded', 'failed') GROUP BY queue, state
), recorded AS (
	INSERT INTO spool_attempts (task_id, attempt, outcome, started_at, finished_at, duration_us, status,
		error_class, error_message, response_excerpt, response_headers, replica, trace_id)
	SELECT task_id, a_attempt, a_outcome, a_started, a_finished, a_duration_us, a_status,
		a_class, a_message, a_excerpt, a_headers::jsonb, a_replica, a_trace
	FROM done WHERE a_outcome IS NOT NULL
)
SELECT id, token, wake FROM done`

// Complete applies completions in one statement, in one round trip and one
// implicit transaction with genericPlansSQL.
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
		retryIn          []int64                                 // µs
		sent             = make(map[store.LeaseRef]int, len(cs)) // lease -> index in cs
		rec              attemptArrays
	)
	for _, i := range byTaskID(len(cs), func(i int) string { return cs[i].TaskID }) {
		c := cs[i]
		switch c.Outcome {
		case store.Succeeded, store.Retry, store.Fail, store.Release, store.Defer:
		default:
			return nil, fmt.Errorf("complete: task %s: unknown outcome %d", c.TaskID, c.Outcome)
		}
		if !validID(c.TaskID) {
			continue // cannot be a held lease
		}
		if _, dup := sent[c.LeaseRef]; dup {
			// One attempt ends once: a second report of the same lease in
			// the batch is refused. (Other tokens for the same task may be
			// sent: at most one matches the row.)
			continue
		}
		sent[c.LeaseRef] = i
		var ra *time.Time
		if (c.Outcome == store.Retry || c.Outcome == store.Defer) && !c.RetryAt.IsZero() {
			t := c.RetryAt
			ra = &t
		}
		ids, tokens, outcomes = append(ids, c.TaskID), append(tokens, c.Token), append(outcomes, int32(c.Outcome))
		retryAt, errs, status = append(retryAt, ra), append(errs, c.LastError), append(status, int32(c.LastStatus))
		retryIn = append(retryIn, max(c.RetryIn, 0).Microseconds())
		rec.add(c.Attempt)
	}
	if len(ids) == 0 {
		return accepted, nil
	}
	var (
		batch  pgx.Batch
		ref    store.LeaseRef
		dueNow bool
		anyDue bool
	)
	batch.Queue(genericPlansSQL)
	batch.Queue(completeSQL, append([]any{ids, tokens, outcomes, retryAt, errs, status, retryIn}, rec.args()...)...).Query(func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&ref.TaskID, &ref.Token, &dueNow}, func() error {
			if i, ok := sent[ref]; ok {
				accepted[i] = true
			}
			anyDue = anyDue || dueNow
			return nil
		})
		return err
	})
	if err := s.pool.SendBatch(ctx, &batch).Close(); err != nil {
		return nil, wrap("complete", err)
	}
	if anyDue {
		// A released task or an immediate retry can run now, or a limited
		// queue has a free slot. The update is committed; a lost signal only
		// costs a poll interval.
		s.notify(ctx)
	}
	return accepted, nil
}

// attemptArrays are the attempt columns of a completion batch ($8 to $19
// of completeSQL), one element per completion sent; a completion without
// an attempt record has a NULL outcome and records nothing.
type attemptArrays struct {
	attempt           []*int32
	outcome           []*string
	started, finished []*time.Time
	durationUS        []*int64
	status            []*int32
	class, message    []*string
	excerpt, headers  []*string
	replica, traceID  []*string
}

func (r *attemptArrays) add(a *task.Attempt) {
	if a == nil {
		r.attempt, r.outcome = append(r.attempt, nil), append(r.outcome, nil)
		r.started, r.finished = append(r.started, nil), append(r.finished, nil)
		r.durationUS, r.status = append(r.durationUS, nil), append(r.status, nil)
		r.class, r.message = append(r.class, nil), append(r.message, nil)
		r.excerpt, r.headers = append(r.excerpt, nil), append(r.headers, nil)
		r.replica, r.traceID = append(r.replica, nil), append(r.traceID, nil)
		return
	}
	n := int32(a.Attempt)
	outcome := string(a.Outcome)
	finished := a.FinishedAt
	r.attempt, r.outcome = append(r.attempt, &n), append(r.outcome, &outcome)
	r.started, r.finished = append(r.started, timeOrNil(a.StartedAt)), append(r.finished, &finished)
	var dur *int64
	if a.Duration > 0 {
		us := a.Duration.Microseconds()
		dur = &us
	}
	var status *int32
	if a.Status != 0 {
		st := int32(a.Status)
		status = &st
	}
	r.durationUS, r.status = append(r.durationUS, dur), append(r.status, status)
	r.class, r.message = append(r.class, textOrNil(string(a.ErrorClass))), append(r.message, textOrNil(a.ErrorMessage))
	var excerpt *string
	if a.ResponseExcerpt != nil {
		e := task.CleanText(*a.ResponseExcerpt)
		excerpt = &e
	}
	r.excerpt, r.headers = append(r.excerpt, excerpt), append(r.headers, textOrNil(store.EncodeAttemptHeaders(a.ResponseHeaders)))
	r.replica, r.traceID = append(r.replica, textOrNil(a.Replica)), append(r.traceID, textOrNil(a.TraceID))
}

func (r *attemptArrays) args() []any {
	return []any{r.attempt, r.outcome, r.started, r.finished, r.durationUS, r.status,
		r.class, r.message, r.excerpt, r.headers, r.replica, r.traceID}
}

// textOrNil is s made storable, or nil (NULL) when empty.
func textOrNil(s string) *string {
	if s == "" {
		return nil
	}
	s = task.CleanText(s)
	return &s
}

// timeOrNil is &t, or nil (NULL) for the zero time.
func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// notify signals spool_wakeup outside any transaction, to the other
// replicas, and this Store's own Wakeups at once; failures are logged
// because callers poll anyway.
func (s *Store) notify(ctx context.Context) {
	s.wakeLocal()
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, wakeupChannel, s.origin); err != nil {
		s.log.Debug("notify failed", "error", err)
	}
}
