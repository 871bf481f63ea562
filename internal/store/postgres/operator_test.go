package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// bulkFinished inserts n finished tasks over queues, finished age ago
// (LoadFinished), and fails t on error.
func bulkFinished(t testing.TB, s *Store, queues []string, n int64, age time.Duration) {
	t.Helper()
	if err := s.LoadFinished(context.Background(), queues, n, age); err != nil {
		t.Fatal(err)
	}
}

// operatorBacklog gives queue q a small backlog in every pending state
// through the store: available, scheduled for later, running, retrying.
func operatorBacklog(t testing.TB, s *Store, q string) {
	t.Helper()
	ctx := context.Background()
	var nts []store.NewTask
	for i := range 40 {
		nt := store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: q, Target: task.Target{URL: "http://127.0.0.1:9/"}, Priority: i % 10}
		if i%4 == 0 {
			nt.RunAt = time.Now().Add(time.Hour)
		}
		nts = append(nts, nt)
	}
	if _, err := s.Enqueue(ctx, nts); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var cs []store.Completion
	for _, l := range ls[:5] {
		cs = append(cs, store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Retry,
			RetryAt: time.Now().Add(time.Hour)})
	}
	if _, err := s.Complete(ctx, cs); err != nil {
		t.Fatal(err)
	}
}

// operatorStatement is one statement of an operator path, with the
// parameter types and values (SQL literals) to run it with.
type operatorStatement struct {
	name, sql, types, args string
	maxRead                float64  // rows of spool_tasks one execution may read
	modes                  []string // the plan_cache_modes it runs under
}

// Plan cache modes: every statement of the operator paths holds under
// both, except the lists, which ListTasks runs on custom plans.
var (
	bothModes  = []string{"force_custom_plan", "force_generic_plan"}
	customOnly = []string{"force_custom_plan"}
)

// operatorStatements are the statements behind GET /v1/queues and
// /v1/queues/{q}, a pause's answer, the depth and oldest-due gauges, the
// task list (every state, one state) and the prune.
func operatorStatements(queue, after string) []operatorStatement {
	return []operatorStatement{
		{"counts, every queue", countsSQL, "(text)", "(NULL)", 500, bothModes},
		{"counts, one queue", countsSQL, "(text)", fmt.Sprintf("('%s')", queue), 500, bothModes},
		{"oldest due", oldestDueSQL, "", "", 500, bothModes},
		{"list, every state", listAllSQL, "(text, text, text, int)", fmt.Sprintf("('%s', '%s', '%s', 100)", queue, after, maxID), 7 * 2 * 100, customOnly},
		{"list, succeeded", listStateSQL, "(text, text, text, text, int)", fmt.Sprintf("('%s', 'succeeded', '%s', '%s', 100)", queue, after, maxID), 4 * 100, customOnly}, // may walk the primary key: half the rows match
		{"list, failed", listStateSQL, "(text, text, text, text, int)", fmt.Sprintf("('%s', 'failed', '%s', '%s', 100)", queue, after, maxID), 2 * 100, customOnly},
		{"list, available", listStateSQL, "(text, text, text, text, int)", fmt.Sprintf("('%s', 'available', '%s', '%s', 100)", queue, after, maxID), 2 * 100, customOnly},
		// A filtered list scans ScanFactor × the page of the range.
		{"filtered list's scan, every state", scanAllSQL, "(text, text, text, int)", fmt.Sprintf("('%s', '%s', '%s', 1000)", queue, after, maxID), 7*2*1000 + 1000, customOnly},
		{"filtered list's scan, succeeded", scanStateSQL, "(text, text, text, text, int)", fmt.Sprintf("('%s', 'succeeded', '%s', '%s', 1000)", queue, after, maxID), 4 * 1000, customOnly},
		{"filtered list's scan, failed", scanStateSQL, "(text, text, text, text, int)", fmt.Sprintf("('%s', 'failed', '%s', '%s', 1000)", queue, after, maxID), 2 * 1000, customOnly},
		{"filtered list's rows", listIDsSQL, "(uuid[])", fmt.Sprintf("(ARRAY['%s']::uuid[])", after), 10, bothModes},
		{"list, idempotency key", listKeySQL, "(text, text)", fmt.Sprintf("('%s', 'k')", queue), 10, bothModes},
		{"bulk cancel, ids", cancelIDsSQL, "(text, uuid[])", fmt.Sprintf("('%s', ARRAY['%s']::uuid[])", queue, after), 10, bothModes},
		{"bulk retry, ids", retryIDsSQL, "(text, uuid[])", fmt.Sprintf("('%s', ARRAY['%s']::uuid[])", queue, after), 10, bothModes},
		{"retry every failed task", retryStateSQL, "(text, text, text, int)", fmt.Sprintf("('%s', 'failed', '%s', 1000)", queue, after), 4 * 1000, customOnly},
		{"cancel every scheduled task", cancelStateSQL, "(text, text, text, int)", fmt.Sprintf("('%s', 'scheduled', '%s', 1000)", queue, after), 4 * 1000, customOnly},
		{"prune", pruneSQL, "(bigint, int)", "(0, 500)", 3 * 500, bothModes},
		{"fold counts", foldCountsSQL, "", "", 0, bothModes},
	}
}

// explainStatement runs st once under EXPLAIN ANALYZE as a prepared
// statement with plan_cache_mode mode, in a transaction that is rolled
// back, and returns its plan.
func explainStatement(t *testing.T, s *Store, st operatorStatement, mode string) explained {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
		t.Fatal(err)
	}
	// Prepared statements belong to the session, not the transaction.
	if _, err := tx.Exec(ctx, "PREPARE operator_stmt"+st.types+" AS "+st.sql); err != nil {
		t.Fatalf("%s: %v", st.name, err)
	}
	defer tx.Exec(context.WithoutCancel(ctx), "DEALLOCATE operator_stmt")
	return explainJSON(t, tx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE operator_stmt"+st.args)
}

// TestOperatorStatementsUseIndexes: beside 20,000 finished tasks (and
// their attempts, which the prune reads through their primary key), every
// statement of the operator paths (queue counts, oldest due, task lists,
// prune, the fold) reads spool_tasks through its indexes only, never a
// sequential scan, and reads about its backlog or page (a few hundred
// rows), not the history, with the custom and the generic plan. The
// statements these replace (a GROUP BY over the table, a list filtered
// on (queue, id)) read every finished task. None is JIT-compiled (the
// pool turns jit off).
func TestOperatorStatementsUseIndexes(t *testing.T) {
	t.Parallel()
	s := migrated(t)
	queues := []string{"a", "b"}
	bulkFinished(t, s, queues, 20_000, 8*24*time.Hour)
	for _, q := range queues {
		operatorBacklog(t, s, q)
	}
	// Two attempts per finished task, as a history would hold.
	mustExec(t, s, `INSERT INTO spool_attempts (task_id, attempt, outcome, finished_at)
		SELECT id, n, 'retry', finished_at FROM spool_tasks, generate_series(1, 2) AS n WHERE finished_at IS NOT NULL`)
	mustExec(t, s, `VACUUM ANALYZE spool_tasks`)
	mustExec(t, s, `VACUUM ANALYZE spool_attempts`)
	// Deltas not folded yet, as between two of the leader's folds.
	ls, err := s.Lease(t.Context(), store.LeaseRequest{Limit: 4, Shared: 4, LeaseFor: time.Hour})
	if err != nil || len(ls) == 0 {
		t.Fatalf("Lease = %d, %v", len(ls), err)
	}
	for _, l := range ls {
		if _, err := s.Complete(t.Context(), []store.Completion{{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded}}); err != nil {
			t.Fatal(err)
		}
	}

	for _, st := range operatorStatements("a", "00000000-0000-0000-0000-000000000000") {
		for _, mode := range st.modes {
			res := explainStatement(t, s, st, mode)
			if res.JIT != nil {
				// spool_queues, never analyzed, is guessed at 530 rows: the
				// counts' custom plan cost enough to be compiled (300 ms).
				t.Errorf("%s, %s: JIT-compiled: %s", st.name, mode, res.JIT)
			}
			plan := res.Plan
			read := plan.tasksRead()
			t.Logf("%s, %s: read %.0f rows of spool_tasks", st.name, mode, read)
			seq := plan.find(func(n planNode) bool {
				return n.NodeType == "Seq Scan" && (n.Relation == "spool_tasks" || n.Relation == "spool_attempts")
			})
			if seq || read > st.maxRead {
				out, _ := json.MarshalIndent(plan, "", " ")
				t.Errorf("%s, %s: read %.0f rows of spool_tasks (sequential scan: %v); want an index path reading at most %.0f\n%s",
					st.name, mode, read, seq, st.maxRead, out)
			}
		}
	}
}
