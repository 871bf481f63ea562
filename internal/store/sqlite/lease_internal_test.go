package sqlite

import (
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
		ls, err := s.Lease(ctx, store.LeaseRequest{Limit: n, Shared: n, LeaseFor: time.Hour})
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
			exec(t, s, `UPDATE spool_tasks SET run_at = ?`, micros(s.now())) // still scheduled
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
			exec(t, s, `UPDATE spool_tasks SET run_at = ?`, micros(s.now().Add(time.Hour)))
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
			ok, err := leasable(ctx, st, s.now())
			if err != nil {
				t.Fatal(err)
			}
			ls, err := s.lease(ctx, st, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Hour}) // the write transaction alone
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

// TestFreeHeadsAreEachQueuesFirst: sqlDueFreeHeads returns, for each
// queue that is neither paused nor limited, exactly its first limit due
// tasks in (priority, run_at, id) order (what sqlDueQueue returns for that
// queue alone), with the queue's weight, and nothing of the other queues.
func TestFreeHeadsAreEachQueuesFirst(t *testing.T) {
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
	yes, one, rate, three := true, 1, 2.0, 3
	for name, p := range map[string]task.QueuePatch{
		"paused": {Paused: &yes}, "conc": {Concurrency: &one}, "rate": {RateLimit: &rate}, "b": {Weight: &three},
	} {
		if _, err := s.UpdateQueue(ctx, name, p); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.statements(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		nowUS := micros(s.now())
		for _, limit := range []int{1, 7, 50, 1000} {
			heads, err := queryCandidates(ctx, tx.StmtContext(ctx, st.dueFreeHeads), nowUS, limit)
			if err != nil {
				return err
			}
			byQueue := map[string][]string{}
			for _, c := range heads {
				if want := map[string]int{"b": 3}[c.queue]; c.weight != max(want, 1) {
					return fmt.Errorf("limit %d: candidate of %s has weight %d", limit, c.queue, c.weight)
				}
				byQueue[c.queue] = append(byQueue[c.queue], c.id)
			}
			for _, q := range queues {
				var want []string
				if q == "a" || q == "b" || q == "c" {
					one, err := queryCandidates(ctx, tx.StmtContext(ctx, st.dueQueue), q, nowUS, limit, 1)
					if err != nil {
						return err
					}
					for _, c := range one {
						want = append(want, c.id)
					}
				}
				got := byQueue[q]
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					return fmt.Errorf("limit %d, queue %s: heads %v, want %v", limit, q, got, want)
				}
				// Each of the three free queues has more than 50 due tasks.
				if want != nil && limit <= 50 && len(got) != limit {
					return fmt.Errorf("limit %d, queue %s: %d heads", limit, q, len(got))
				}
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
		WHERE rowid <> (SELECT max(rowid) FROM spool_tasks)`, micros(s.now())); err != nil {
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
	if _, err := s.Lease(ctx, store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // nothing written
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if ls, err := s.Lease(lctx, store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Hour}); err != nil || len(ls) != 0 {
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
		{"due free heads", sqlDueFreeHeads, []any{1, 1}, []string{
			"SEARCH x USING INDEX spool_tasks_lease_queue (queue=?)",
			"SEARCH t USING INTEGER PRIMARY KEY (rowid=?)",
		}},
		{"due queue", sqlDueQueue, []any{"q", 1, 1, 1}, []string{"SEARCH spool_tasks USING INDEX spool_tasks_lease_queue (queue=?)"}},
		{"claim", sqlClaim, []any{1, 1, "[]"}, []string{"SEARCH spool_tasks USING INTEGER PRIMARY KEY (rowid=?)"}},
		{"leasable", sqlLeasable, []any{1}, []string{
			"SEARCH r USING COVERING INDEX spool_tasks_queue_state (queue=? AND state=?)",
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
		for _, bad := range []string{"TEMP B-TREE", "SCAN spool_tasks\n", "SCAN t\n", "SCAN x\n"} {
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
	ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
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
