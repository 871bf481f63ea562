package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/spoolhq/spool/internal/store"
)

// The hot statements, each with a fixed text so that it is compiled once
// and reused: compiling (sqlite3Prepare) took 7–25% of `spool serve`'s CPU
// when every call compiled its statements afresh.
const (
	// Enqueue.
	sqlQueueDefaults = `SELECT max_attempts, timeout_ms FROM spool_queues WHERE name = ?`
	sqlCreateQueue   = `INSERT INTO spool_queues
		(name, concurrency, rate_limit, max_attempts, timeout_ms, paused, tokens, tokens_at, created_at, updated_at)
		VALUES (?1, 0, 0, ?2, ?3, 0, 0, 0, ?4, ?4)
		ON CONFLICT (name) DO NOTHING`
	sqlTaskByID  = `SELECT ` + taskCols + ` FROM spool_tasks WHERE id = ?`
	sqlTaskByKey = `SELECT ` + taskCols + ` FROM spool_tasks WHERE queue = ? AND idempotency_key = ?`
	sqlKeyLookup = `SELECT fingerprint, task_id, pruned_at IS NOT NULL FROM spool_idempotency_keys WHERE queue = ? AND idempotency_key = ?`
	sqlKeyInsert = `INSERT INTO spool_idempotency_keys (queue, idempotency_key, fingerprint, task_id, created_at) VALUES (?, ?, ?, ?, ?)`

	// Lease.
	sqlLimitedQueues = `SELECT name, concurrency, rate_limit, paused, tokens, tokens_at, weight
		FROM spool_queues WHERE paused <> 0 OR concurrency > 0 OR rate_limit > 0`
	sqlRunningCount = `SELECT count(*) FROM spool_tasks WHERE queue = ? AND state = 'running'`
	// The first ?2 due tasks of each queue that sqlLimitedQueues does not
	// return, with its weight: one seek of spool_tasks_lease_queue per
	// queue, which stops at its LIMIT, so a lease reads at most queues × ?2
	// tasks whatever the backlogs (the fair order needs every queue's
	// heads; a walk of spool_tasks_lease in global order could not give a
	// quiet queue its turn). CROSS JOIN keeps the queues in the outer
	// loop: SQLite may not reorder it, and with a plain JOIN it chose to
	// scan every task and run the subquery for each.
	sqlDueFreeHeads = `SELECT t.rowid, t.id, t.queue, t.priority, t.run_at, q.weight
		FROM spool_queues q CROSS JOIN spool_tasks t
		WHERE q.paused = 0 AND q.concurrency <= 0 AND q.rate_limit <= 0
			AND t.rowid IN (
				SELECT x.rowid FROM spool_tasks x
				WHERE x.queue = q.name AND x.state IN ` + pendingStates + ` AND x.run_at <= ?1
				ORDER BY x.priority, x.run_at, x.id LIMIT ?2)`
	// Up to ?1 names of the queues sqlLimitedQueues does not return: with
	// only one, Lease reads its due tasks with sqlDueQueue alone, which
	// skips sqlDueFreeHeads' list of rowids (a lone draining queue is the
	// common case, and the hottest).
	sqlFreeQueues = `SELECT name, weight FROM spool_queues
		WHERE paused = 0 AND concurrency <= 0 AND rate_limit <= 0 LIMIT ?1`
	// Due tasks of one queue, through spool_tasks_lease_queue.
	sqlDueQueue = `SELECT rowid, id, queue, priority, run_at, ?4 FROM spool_tasks
		WHERE queue = ?1 AND state IN ` + pendingStates + ` AND run_at <= ?2
		ORDER BY priority, run_at, id LIMIT ?3`
	sqlLeaseSeq = `UPDATE spool_lease_seq SET last = last + ? WHERE id = 1 RETURNING last`
	// ?3 is a JSON array of [rowid, token] pairs: one statement claims the
	// whole batch, and integers need no escaping.
	sqlClaim = `UPDATE spool_tasks SET
			state = 'running', attempt = attempt + 1,
			lease_token = c.value ->> 1, lease_expires_at = ?1, updated_at = ?2
		FROM json_each(?3) AS c
		WHERE spool_tasks.rowid = c.value ->> 0 AND spool_tasks.state IN ` + pendingStates + `
		RETURNING ` + taskCols
	sqlDrawTokens = `UPDATE spool_queues SET tokens = ?, tokens_at = ? WHERE name = ?`

	// sqlLeasable tells whether a Lease could take anything at ?1: whether a
	// queue that is not paused, and has room under its concurrency and rate
	// limits, holds a due task. It is what Lease's write transaction works
	// out, asked of a read snapshot, with every test loose rather than tight
	// (a whole token is 0.999), so that it never says no where the write
	// transaction, run at the same instant, would find a task.
	sqlLeasable = `SELECT EXISTS (
		SELECT 1 FROM spool_queues q
		WHERE q.paused = 0
			AND (q.concurrency <= 0 OR q.concurrency >
				(SELECT count(*) FROM spool_tasks r WHERE r.queue = q.name AND r.state = 'running'))
			AND (q.rate_limit <= 0 OR q.tokens_at = 0 OR
				q.tokens + max(?1 - q.tokens_at, 0) / 1e6 * q.rate_limit >= 0.999)
			AND ` + queueHasDue + `)`

	// queueHasDue is true when queue q holds a task due at ?1, for a few
	// index seeks: available tasks through spool_tasks_queue_state,
	// scheduled and retrying ones through spool_tasks_promote, which holds
	// few due ones (the + keeps the planner off the queue's own index, which
	// would read every task scheduled for later).
	queueHasDue = `(EXISTS (SELECT 1 FROM spool_tasks t
				WHERE t.queue = q.name AND t.state = 'available' AND t.run_at <= ?1)
			OR EXISTS (SELECT 1 FROM spool_tasks t
				WHERE t.state IN ('scheduled', 'retrying') AND t.run_at <= ?1 AND +t.queue = q.name))`

	// ExtendLeases: ?2 is a JSON array of [id, token] pairs; the leases
	// still held come back.
	sqlExtendLeases = `UPDATE spool_tasks SET lease_expires_at = ?1
		FROM json_each(?2) AS c
		WHERE spool_tasks.id = c.value ->> 0 AND spool_tasks.state = 'running' AND spool_tasks.lease_token = c.value ->> 1
		RETURNING id, lease_token`

	// GetTask.
	sqlGetTask = `SELECT ` + taskCols + ` FROM spool_tasks WHERE id = ?`

	// The counts of finished tasks (migration 00007).
	sqlCountAdd = `INSERT INTO spool_task_counts (queue, state, n) VALUES (?, ?, ?)
		ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n`
)

// statements are the hot statements, prepared on the pool they run on.
// A *sql.Stmt is prepared once per connection (database/sql prepares it
// lazily on a connection that has not seen it, such as a replaced one), and
// tx.StmtContext hands a transaction the one of its connection.
type statements struct {
	// write pool (one connection)
	queueDefaults, createQueue                          *sql.Stmt
	taskByID, taskByKey, keyLookup, keyInsert           *sql.Stmt
	insertTasks                                         []*sql.Stmt // by insertShapes
	limitedQueues, runningCount, dueFreeHeads, dueQueue *sql.Stmt
	freeQueues                                          *sql.Stmt
	leaseSeq, claim, drawTokens                         *sql.Stmt
	extendLeases, countAdd                              *sql.Stmt
	insertAttempts                                      []*sql.Stmt  // by insertShapes
	complete                                            [5]*sql.Stmt // by store.Outcome - 1
	// read pool
	leasable, getTask *sql.Stmt

	all []*sql.Stmt
}

// prepareStatements prepares every statement of st. It must not run inside a
// write transaction: preparing on the write pool needs its one connection.
func prepareStatements(ctx context.Context, write, read *sql.DB) (*statements, error) {
	st := &statements{}
	for _, p := range []struct {
		db  *sql.DB
		dst **sql.Stmt
		q   string
	}{
		{write, &st.queueDefaults, sqlQueueDefaults},
		{write, &st.createQueue, sqlCreateQueue},
		{write, &st.taskByID, sqlTaskByID},
		{write, &st.taskByKey, sqlTaskByKey}, // a schedule run's existing task
		{write, &st.keyLookup, sqlKeyLookup},
		{write, &st.keyInsert, sqlKeyInsert},
		{write, &st.limitedQueues, sqlLimitedQueues},
		{write, &st.runningCount, sqlRunningCount},
		{write, &st.dueFreeHeads, sqlDueFreeHeads},
		{write, &st.dueQueue, sqlDueQueue},
		{write, &st.freeQueues, sqlFreeQueues},
		{write, &st.leaseSeq, sqlLeaseSeq},
		{write, &st.claim, sqlClaim},
		{write, &st.drawTokens, sqlDrawTokens},
		{write, &st.extendLeases, sqlExtendLeases},
		{write, &st.countAdd, sqlCountAdd},
		{write, &st.complete[0], completeSucceeded},
		{write, &st.complete[1], completeRetry},
		{write, &st.complete[2], completeFail},
		{write, &st.complete[3], completeRelease},
		{write, &st.complete[4], completeDefer},
		{read, &st.leasable, sqlLeasable},
		{read, &st.getTask, sqlGetTask},
	} {
		s, err := p.db.PrepareContext(ctx, p.q)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("prepare %.40q…: %w", p.q, err)
		}
		*p.dst = s
		st.all = append(st.all, s)
	}
	st.insertTasks = make([]*sql.Stmt, len(insertShapes))
	for k, n := range insertShapes {
		s, err := write.PrepareContext(ctx, insertSQL(n))
		if err != nil {
			st.close()
			return nil, fmt.Errorf("prepare insert of %d: %w", n, err)
		}
		st.insertTasks[k] = s
		st.all = append(st.all, s)
	}
	st.insertAttempts = make([]*sql.Stmt, len(insertShapes))
	for k, n := range insertShapes {
		s, err := write.PrepareContext(ctx, insertAttemptsSQL(n))
		if err != nil {
			st.close()
			return nil, fmt.Errorf("prepare attempts insert of %d: %w", n, err)
		}
		st.insertAttempts[k] = s
		st.all = append(st.all, s)
	}
	return st, nil
}

func (st *statements) close() error {
	var errs []error
	for _, s := range st.all {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// statements returns the prepared statements, preparing them on first use:
// not in Open, because the schema they name exists only once Migrate ran.
// A failure is returned and the next call tries again.
func (s *Store) statements(ctx context.Context) (*statements, error) {
	if st := s.stmts.Load(); st != nil {
		return st, nil
	}
	s.stmtsMu.Lock()
	defer s.stmtsMu.Unlock()
	if st := s.stmts.Load(); st != nil {
		return st, nil
	}
	if s.closed {
		return nil, fmt.Errorf("%w: store closed", store.ErrUnavailable)
	}
	st, err := prepareStatements(ctx, s.write, s.read)
	if err != nil {
		return nil, err
	}
	s.stmts.Store(st)
	return st, nil
}

// appendJSONString appends s as a JSON string that SQLite's JSON functions
// read back byte for byte: only '"', '\\' and control characters are
// escaped, and bytes that are not UTF-8 pass through as they are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
