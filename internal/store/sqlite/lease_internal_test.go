package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func freshStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "spool.db"), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func newTask(queue string) store.NewTask {
	return store.NewTask{
		ID:     uuid.Must(uuid.NewV7()).String(),
		Queue:  queue,
		Target: task.Target{URL: "http://127.0.0.1:1/hook", Method: "POST"},
	}
}

// TestLeasableNeverMissesWork holds sqlLeasable, the read Lease asks before
// it takes the write lock, to the write transaction: wherever the write
// transaction leases a task, sqlLeasable must have said yes; and it must say
// no where there is nothing to lease, or it saves nothing.
func TestLeasableNeverMissesWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	enqueue := func(t *testing.T, s *Store, nts ...store.NewTask) {
		t.Helper()
		if _, err := s.Enqueue(ctx, nts); err != nil {
			t.Fatal(err)
		}
	}
	in := func(queue string, d time.Duration) store.NewTask {
		nt := newTask(queue)
		nt.RunAt = time.Now().Add(d)
		return nt
	}
	patch := func(t *testing.T, s *Store, queue string, p task.QueuePatch) {
		t.Helper()
		if _, err := s.UpdateQueue(ctx, queue, p); err != nil {
			t.Fatal(err)
		}
	}
	lease := func(t *testing.T, s *Store, n int) []store.Lease {
		t.Helper()
		ls, err := s.Lease(ctx, n, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return ls
	}
	retry := func(t *testing.T, s *Store, l store.Lease, at time.Time) {
		t.Helper()
		if _, err := s.Complete(ctx, []store.Completion{{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token},
			Outcome: store.Retry, RetryAt: at}}); err != nil {
			t.Fatal(err)
		}
	}
	exec := func(t *testing.T, s *Store, q string, args ...any) {
		t.Helper()
		if _, err := s.write.ExecContext(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	yes, one, two, slow := true, 1, 2, 0.01

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s *Store)
		want  int // tasks the write transaction leases
	}{
		{"empty", func(*testing.T, *Store) {}, 0},
		{"available", func(t *testing.T, s *Store) { enqueue(t, s, newTask("q")) }, 1},
		{"scheduled later", func(t *testing.T, s *Store) { enqueue(t, s, in("q", time.Hour)) }, 0},
		{"scheduled and due", func(t *testing.T, s *Store) {
			enqueue(t, s, in("q", time.Hour))
			exec(t, s, `UPDATE spool_tasks SET run_at = ?`, micros(now())) // still scheduled
		}, 1},
		{"retrying and due", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("q"))
			retry(t, s, lease(t, s, 1)[0], time.Time{})
		}, 1},
		{"retrying later", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("q"))
			retry(t, s, lease(t, s, 1)[0], time.Now().Add(time.Hour))
		}, 0},
		{"running", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("q"))
			lease(t, s, 1)
		}, 0},
		{"paused", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("p"), newTask("p"))
			patch(t, s, "p", task.QueuePatch{Paused: &yes})
		}, 0},
		{"paused and another due", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("p"), newTask("p"), newTask("q"))
			patch(t, s, "p", task.QueuePatch{Paused: &yes})
		}, 1},
		{"concurrency taken", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("c"), newTask("c"))
			patch(t, s, "c", task.QueuePatch{Concurrency: &one})
			lease(t, s, 1)
		}, 0},
		{"concurrency free", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("c"), newTask("c"))
			patch(t, s, "c", task.QueuePatch{Concurrency: &two})
			lease(t, s, 1)
		}, 1},
		{"rate spent", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("r"), newTask("r"))
			patch(t, s, "r", task.QueuePatch{RateLimit: &slow}) // a burst of 1, then one per 100 s
			if n := len(lease(t, s, 10)); n != 1 {
				t.Fatalf("leased %d, want the burst of 1", n)
			}
		}, 0},
		{"rate refilled", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("r"), newTask("r"))
			patch(t, s, "r", task.QueuePatch{RateLimit: &slow})
			lease(t, s, 10)
			exec(t, s, `UPDATE spool_queues SET tokens_at = tokens_at - 101e6`) // 101 s ago
		}, 1},
		{"rate almost refilled", func(t *testing.T, s *Store) {
			enqueue(t, s, newTask("r"), newTask("r"))
			patch(t, s, "r", task.QueuePatch{RateLimit: &slow})
			lease(t, s, 10)
			exec(t, s, `UPDATE spool_queues SET tokens_at = tokens_at - 90e6`) // 0.9 tokens
		}, 0},
		{"available but run_at ahead", func(t *testing.T, s *Store) {
			// What a clock that stepped back leaves: neither leases it.
			enqueue(t, s, newTask("q"))
			exec(t, s, `UPDATE spool_tasks SET run_at = ?`, micros(now().Add(time.Hour)))
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := freshStore(t)
			tc.setup(t, s)
			st, err := s.statements(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ok, err := leasable(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			ls, err := s.lease(ctx, st, 100, time.Hour) // the write transaction alone
			if err != nil {
				t.Fatal(err)
			}
			if len(ls) != tc.want {
				t.Fatalf("write transaction leased %d, want %d", len(ls), tc.want)
			}
			if ok != (tc.want > 0) {
				t.Errorf("sqlLeasable = %v, want %v", ok, tc.want > 0)
			}
		})
	}
}

// TestFreeCandidatesStrategiesAgree: picking queue by queue returns, among
// its candidates, the same first tasks in dispatch order as the walk of the
// whole lease index.
func TestFreeCandidatesStrategiesAgree(t *testing.T) {
	t.Parallel()
	s := freshStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	queues := []string{"a", "b", "c", "paused", "conc", "rate"}
	var nts []store.NewTask
	for range 600 {
		nt := newTask(queues[rng.IntN(len(queues))])
		nt.Priority = rng.IntN(4)
		// Due in the last minute, or later (scheduled).
		nt.RunAt = time.Now().Add(time.Duration(rng.IntN(90)-60) * time.Second)
		nts = append(nts, nt)
	}
	if _, err := s.Enqueue(ctx, nts); err != nil {
		t.Fatal(err)
	}
	yes, one, rate := true, 1, 2.0
	for name, p := range map[string]task.QueuePatch{
		"paused": {Paused: &yes}, "conc": {Concurrency: &one}, "rate": {RateLimit: &rate},
	} {
		if _, err := s.UpdateQueue(ctx, name, p); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.statements(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sortCands := func(cs []candidate, limit int) []string {
		slices.SortFunc(cs, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(a.priority, b.priority), cmp.Compare(a.runAt, b.runAt), strings.Compare(a.id, b.id))
		})
		var ids []string
		for _, c := range cs[:min(limit, len(cs))] {
			ids = append(ids, c.id)
		}
		return ids
	}
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		nowUS := micros(now())
		for _, limit := range []int{1, 7, 50, 1000} {
			walk, err := freeCandidates(ctx, tx, st, false, nowUS, limit, perQueueMax)
			if err != nil {
				return err
			}
			perQueue, err := freeCandidates(ctx, tx, st, true, nowUS, limit, perQueueMax)
			if err != nil {
				return err
			}
			// Each of the three free queues has more than 50 due tasks.
			if limit <= 50 && len(perQueue) != 3*limit {
				return fmt.Errorf("limit %d: queue by queue gave %d, want %d from each of 3 queues", limit, len(perQueue), limit)
			}
			w, q := sortCands(walk, limit), sortCands(perQueue, limit)
			if len(w) == 0 || !slices.Equal(w, q) {
				return fmt.Errorf("limit %d: walk %v, queue by queue %v", limit, w, q)
			}
			// Over perQueue free queues, it walks.
			few, err := freeCandidates(ctx, tx, st, true, nowUS, limit, 2)
			if err != nil {
				return err
			}
			if !slices.Equal(sortCands(few, limit), w) || len(few) != len(walk) {
				return fmt.Errorf("limit %d: with 3 free queues and room for 2 it did not walk", limit)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPromoteDueManyTasks: PromoteDue promotes in chunks of promoteChunk
// and must still promote every due task in one call.
func TestPromoteDueManyTasks(t *testing.T) {
	t.Parallel()
	s := freshStore(t)
	ctx := context.Background()
	n := 2*promoteChunk + 345
	later := time.Now().Add(time.Hour)
	for i := 0; i <= n; i += 1000 {
		batch := make([]store.NewTask, min(1000, n+1-i))
		for j := range batch {
			batch[j] = newTask("q")
			batch[j].RunAt = later
		}
		if _, err := s.Enqueue(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	// All but one come due.
	if _, err := s.write.ExecContext(ctx, `UPDATE spool_tasks SET run_at = ?
		WHERE rowid <> (SELECT max(rowid) FROM spool_tasks)`, micros(now())); err != nil {
		t.Fatal(err)
	}
	got, err := s.PromoteDue(ctx)
	if err != nil || got != n {
		t.Fatalf("PromoteDue = %d, %v; want %d", got, err, n)
	}
	q, err := s.GetQueue(ctx, "q")
	if err != nil || q.Counts[task.Available] != int64(n) || q.Counts[task.Scheduled] != 1 {
		t.Errorf("counts after PromoteDue: %v, %v", q.Counts, err)
	}
}

// TestIdleLeaseDoesNotWaitForTheWriter: with nothing to lease, Lease answers
// from the read pool while another transaction holds the write connection.
func TestIdleLeaseDoesNotWaitForTheWriter(t *testing.T) {
	t.Parallel()
	s := freshStore(t)
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, []store.NewTask{newTask("q")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lease(ctx, 10, time.Hour); err != nil {
		t.Fatal(err)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // nothing written
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if ls, err := s.Lease(lctx, 10, time.Hour); err != nil || len(ls) != 0 {
		t.Fatalf("idle Lease with the writer busy: %d, %v", len(ls), err)
	}
}

// TestHotStatementPlans pins the query plans the hot statements were tuned
// for: leases walk an index in dispatch order and stop at LIMIT (no sort of
// the backlog), claims and completions find rows by key, and sqlLeasable
// only seeks.
func TestHotStatementPlans(t *testing.T) {
	t.Parallel()
	s := freshStore(t)
	for _, tc := range []struct {
		name, q string
		args    []any
		want    []string
	}{
		{"due free", sqlDueFree, []any{1, 1}, []string{"SCAN spool_tasks USING INDEX spool_tasks_lease"}},
		{"due queue", sqlDueQueue, []any{"q", 1, 1}, []string{"SEARCH spool_tasks USING INDEX spool_tasks_lease_queue (queue=?)"}},
		{"claim", sqlClaim, []any{1, 1, "[]"}, []string{"SEARCH spool_tasks USING INTEGER PRIMARY KEY (rowid=?)"}},
		{"leasable", sqlLeasable, []any{1}, []string{
			"SEARCH r USING COVERING INDEX spool_tasks_queue_state (queue=? AND state=?)",
			"SEARCH t USING INDEX spool_tasks_queue_state (queue=? AND state=?)",
			"SEARCH t USING INDEX spool_tasks_promote (run_at<?)",
		}},
		{"limited due", sqlLimitedDue, []any{1}, []string{
			"SEARCH t USING INDEX spool_tasks_queue_state (queue=? AND state=?)",
			"SEARCH t USING INDEX spool_tasks_promote (run_at<?)",
		}},
		{"complete", completeRetry, []any{1, "[]"}, []string{"SCAN c VIRTUAL TABLE",
			"SEARCH spool_tasks USING INDEX sqlite_autoindex_spool_tasks_1 (id=?)"}},
		{"extend", sqlExtendLeases, []any{1, "[]"}, []string{"SCAN c VIRTUAL TABLE",
			"SEARCH spool_tasks USING INDEX sqlite_autoindex_spool_tasks_1 (id=?)"}},
	} {
		plan := explain(t, s.read, tc.q, tc.args...)
		for _, w := range tc.want {
			if !strings.Contains(plan, w) {
				t.Errorf("%s: plan lacks %q:\n%s", tc.name, w, plan)
			}
		}
		for _, bad := range []string{"TEMP B-TREE", "SCAN spool_tasks\n"} {
			if strings.Contains(plan+"\n", bad) {
				t.Errorf("%s: plan has %q:\n%s", tc.name, bad, plan)
			}
		}
	}
}

// TestBatchArgumentsKeepEveryByte: ExtendLeases and Complete hand task ids
// and errors to SQLite inside one JSON argument; any string must arrive as
// it was given.
func TestBatchArgumentsKeepEveryByte(t *testing.T) {
	t.Parallel()
	s := freshStore(t)
	ctx := context.Background()
	odd := []string{`a"b\c`, "nul\x00x", "\xff\xfe not utf-8", "é🎉", "\x01\x1f\n\t", "\u2028", "\xed\xa0\x80", "[1,2]", "null"}
	var nts []store.NewTask
	for _, id := range odd {
		nt := newTask("q")
		nt.ID = id
		nts = append(nts, nt)
	}
	if _, err := s.Enqueue(ctx, nts); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Lease(ctx, 100, time.Minute)
	if err != nil || len(ls) != len(odd) {
		t.Fatalf("Lease: %d, %v", len(ls), err)
	}
	var refs []store.LeaseRef
	for _, l := range ls {
		refs = append(refs, store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, store.LeaseRef{TaskID: l.Task.ID, Token: -l.Token})
	}
	lost, err := s.ExtendLeases(ctx, refs, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != len(ls) {
		t.Errorf("lost %d leases, want the %d with a wrong token", len(lost), len(ls))
	}
	for _, r := range lost {
		if r.Token > 0 {
			t.Errorf("lease of %q lost", r.TaskID)
		}
	}
	var cs []store.Completion
	for i, l := range ls {
		c := store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Fail,
			LastError: "error: " + odd[(i+1)%len(odd)], LastStatus: 400 + i}
		if i%2 == 0 {
			c.Outcome, c.RetryAt = store.Retry, time.Now().Add(time.Hour)
		}
		cs = append(cs, c)
	}
	acc, err := s.Complete(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		if !acc[i] {
			t.Errorf("completion of %q refused", c.TaskID)
			continue
		}
		got, err := s.GetTask(ctx, c.TaskID)
		if err != nil {
			t.Fatalf("GetTask(%q): %v", c.TaskID, err)
		}
		want := task.Failed
		if c.Outcome == store.Retry {
			want = task.Retrying
		}
		if got.ID != c.TaskID || got.State != want || got.LastError != c.LastError || got.LastStatus != c.LastStatus {
			t.Errorf("task %q = %q %s %q %d, want %s %q %d", c.TaskID, got.ID, got.State, got.LastError, got.LastStatus,
				want, c.LastError, c.LastStatus)
		}
		if c.Outcome == store.Retry && !got.RunAt.Equal(fromMicros(micros(c.RetryAt))) {
			t.Errorf("task %q runs at %v, want %v", c.TaskID, got.RunAt, c.RetryAt)
		}
	}
}

func explain(t *testing.T, db *sql.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("explain %.60q: %v", q, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&b, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(b.String())
}
