package sqlite

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
)

// bulkFinishedSQL inserts finished tasks ?2..?3 (numbers) spread over the
// queues of the JSON array ?1, finished ?4 microseconds before now (?5)
// and one millisecond apart: ids in time order (UUIDv7 layout, from the
// number), one in a thousand failed and one in a thousand cancelled, the
// rest succeeded. It is how tests and the 10-million-task benchmark build
// a long history without the API; it recounts the totals after.
const bulkFinishedSQL = `WITH RECURSIVE n(i) AS (SELECT ?2 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
	INSERT INTO spool_tasks (id, queue, state, priority, run_at, attempt, max_attempts, timeout_ms,
		target_url, target_method, payload, content_type, created_at, updated_at, finished_at)
	SELECT printf('%012x-7000-8000-%012x', at / 1000, i) AS id,
		json_extract(?1, '$[' || (i % json_array_length(?1)) || ']'),
		CASE i % 1000 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'succeeded' END,
		5, at, 1, 25, 30000, 'http://127.0.0.1:9/hook', 'POST', CAST('{"n":1}' AS BLOB), 'application/json', at, at, at
	FROM (SELECT i, ?5 - ?4 - (?3 - i) * 1000 AS at FROM n)`

// bulkFinished inserts n finished tasks over queues (their rows must
// exist) in transactions of a million, finished age ago.
func bulkFinished(t testing.TB, s *Store, queues []string, n int64, age time.Duration) {
	t.Helper()
	ctx := context.Background()
	qs := `["` + strings.Join(queues, `","`) + `"]`
	const step = 1_000_000
	for from := int64(1); from <= n; from += step {
		to := min(from+step-1, n)
		err := s.inWrite(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, bulkFinishedSQL, qs, from, to, age.Microseconds(), micros(s.now()))
			return err
		})
		if err != nil {
			t.Fatalf("bulk insert %d-%d: %v", from, to, err)
		}
	}
	if _, err := s.write.ExecContext(ctx, recountSQL); err != nil {
		t.Fatalf("recount: %v", err)
	}
}

// recountSQL sets the totals of finished tasks from the table itself, as
// migration 00007 does, for tasks inserted around the code that keeps them.
const recountSQL = `DELETE FROM spool_task_counts;
	INSERT INTO spool_task_counts (queue, state, n)
		SELECT queue, state, count(*) FROM spool_tasks
		WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY queue, state`

// operatorBacklog gives queue q a small backlog in every pending state
// through the store: available, scheduled for later, running, retrying.
func operatorBacklog(t testing.TB, s *Store, q string) {
	t.Helper()
	ctx := context.Background()
	var nts []store.NewTask
	for i := range 40 {
		nt := newTask(q)
		nt.Priority = i % 10
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

// TestOperatorStatementPlans: beside 20,000 finished tasks, every
// statement of the operator paths (queue counts, oldest due, task lists,
// prune) searches spool_tasks through an index range, never a scan of the
// table or of a whole index, and sorts nothing: the finished tasks cost
// them nothing (the counts of those come from spool_task_counts).
func TestOperatorStatementPlans(t *testing.T) {
	t.Parallel()
	s := freshStore(t)
	for _, q := range []string{"a", "b"} {
		operatorBacklog(t, s, q)
	}
	bulkFinished(t, s, []string{"a", "b"}, 20_000, 8*24*time.Hour)
	if _, err := s.write.ExecContext(t.Context(), `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	nowUS := micros(s.now())
	for _, tc := range []struct {
		name, q string
		args    []any
		want    []string
	}{
		{"counts, every queue", countsSQL, []any{nil}, []string{
			"SEARCH t USING COVERING INDEX spool_tasks_queue_state (queue=? AND state=?)",
			"spool_task_counts",
		}},
		{"counts, one queue", countsSQL, []any{"a"}, []string{
			"SEARCH t USING COVERING INDEX spool_tasks_queue_state (queue=? AND state=?)",
			"spool_task_counts", // three rows a queue
		}},
		{"oldest due", oldestDueSQL, []any{nowUS}, []string{
			"SEARCH t USING INDEX spool_tasks_lease_queue (queue=? AND priority=? AND run_at<?)",
		}},
		{"list, every state", listAllSQL, []any{"a", "", maxID, 100}, []string{
			"SEARCH spool_tasks USING INDEX spool_tasks_queue_id (queue=? AND id>? AND id<?)",
		}},
		{"list, one state", listStateSQL, []any{"a", "failed", "", maxID, 100}, []string{
			"SEARCH spool_tasks USING INDEX spool_tasks_queue_state (queue=? AND state=? AND id>? AND id<?)",
		}},
		{"filtered list's scan, every state", scanAllSQL, []any{"a", "", maxID, 1000}, []string{
			"SEARCH spool_tasks USING INDEX spool_tasks_queue_id (queue=? AND id>? AND id<?)",
		}},
		{"filtered list's scan, one state", scanStateSQL, []any{"a", "failed", "", maxID, 1000}, []string{
			"SEARCH spool_tasks USING INDEX spool_tasks_queue_state (queue=? AND state=? AND id>? AND id<?)",
		}},
		{"filtered list's rows", listIDsSQL, []any{`["0190a0a0-0000-7000-8000-000000000001"]`}, []string{
			"SEARCH spool_tasks USING INDEX sqlite_autoindex_spool_tasks_1 (id=?)",
		}},
		{"list, idempotency key", listKeySQL, []any{"a", "k"}, []string{
			"SEARCH spool_tasks USING INDEX spool_tasks_idempotency (queue=? AND idempotency_key=?)",
		}},
		{"bulk, states of ids", bulkStatesSQL, []any{"a", `["0190a0a0-0000-7000-8000-000000000001"]`}, []string{
			"SEARCH spool_tasks USING INDEX sqlite_autoindex_spool_tasks_1 (id=?)",
		}},
		{"bulk, update by ids", retryIDsSQL, []any{nowUS, nowUS, `["0190a0a0-0000-7000-8000-000000000001"]`}, []string{
			"SEARCH spool_tasks USING INDEX sqlite_autoindex_spool_tasks_1 (id=?)",
		}},
		{"sweep, states", sweepStatesSQL, []any{"a", "failed", "", 1000}, []string{
			"SEARCH spool_tasks USING COVERING INDEX spool_tasks_queue_state (queue=? AND state=? AND id>?)",
		}},
		{"sweep, more", sweepMoreSQL, []any{"a", "failed", ""}, []string{
			"SEARCH spool_tasks USING COVERING INDEX spool_tasks_queue_state (queue=? AND state=? AND id>?)",
		}},
		{"prune", pruneSQL, []any{nowUS, 500}, []string{
			"SEARCH spool_tasks USING INDEX spool_tasks_prune (finished_at<?)",
		}},
		{"prune attempts", pruneAttemptsSQL, []any{`["01890a5d-ac96-774b-bcce-b302099a8057"]`}, []string{
			"INDEX spool_attempts_task (task_id=?)",
		}},
	} {
		plan := explain(t, s.read, tc.q, tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(plan, w) {
				t.Errorf("%s: plan lacks %q:\n%s", tc.name, w, plan)
			}
		}
		for _, line := range strings.Split(plan, "\n") {
			line = strings.TrimSpace(line)
			scan := strings.HasPrefix(line, "SCAN spool_tasks") || strings.HasPrefix(line, "SCAN spool_attempts") || strings.HasPrefix(line, "SCAN t ") || line == "SCAN t"
			if scan || strings.Contains(line, "TEMP B-TREE") {
				t.Errorf("%s: plan has %q:\n%s", tc.name, line, plan)
			}
		}
	}
}
