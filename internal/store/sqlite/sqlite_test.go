package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/store/storetest"
	"github.com/spoolhq/spool/internal/task"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// open opens and migrates the database at path, closing it with the test.
func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{Logger: quiet})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

// TestPingNeedsTheSchema: Ping reports ErrNotMigrated until Migrate ran.
func TestPingNeedsTheSchema(t *testing.T) {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.PingNeedsTheSchema(t, s)
}

// fresh is a migrated store on a new file.
func fresh(t *testing.T) *sqlite.Store {
	t.Helper()
	return open(t, filepath.Join(t.TempDir(), "spool.db"))
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newTask(queue string) store.NewTask {
	return store.NewTask{
		ID:          uuid.Must(uuid.NewV7()).String(),
		Queue:       queue,
		Target:      task.Target{URL: "http://127.0.0.1:1/hook", Method: "POST", Headers: map[string]string{"X-A": "b"}},
		Payload:     []byte(`{"n":1}`),
		ContentType: "application/json",
		Priority:    task.DefaultPriority,
	}
}

func enqueue(t *testing.T, s store.Store, ts ...store.NewTask) []store.Enqueued {
	t.Helper()
	res, err := s.Enqueue(ctxFor(t), ts)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return res
}

func TestOpenCreatesPrivateDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a", "b")
	open(t, filepath.Join(dir, "spool.db"))
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("directory mode = %o, want 700", perm)
	}
}

func TestFileIsInWALMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	open(t, path)
	// journal_mode=WAL is a property of the file: a plain connection sees it.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(ctxFor(t), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

func TestOpenRefusesQueryInPath(t *testing.T) {
	t.Parallel()
	if _, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "x.db?mode=memory"), sqlite.Options{Logger: quiet}); err == nil {
		t.Fatal("Open accepted a path with '?'")
	}
}

func TestMigrateTwiceIsNoop(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path)
	res := enqueue(t, s, newTask("q"))
	if err := s.Migrate(ctxFor(t)); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if _, err := s.GetTask(ctxFor(t), res[0].Task.ID); err != nil {
		t.Fatalf("task gone after second Migrate: %v", err)
	}
}

func TestSurvivesReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	nt := newTask("q")
	nt.IdempotencyKey = "k1"
	res := enqueue(t, s, nt)
	conc := 3
	if _, err := s.UpdateQueue(t.Context(), "q", task.QueuePatch{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.GetTask(t.Context(), res[0].Task.ID); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("GetTask after Close: %v, want ErrUnavailable", err)
	}

	s2 := open(t, path)
	got, err := s2.GetTask(ctxFor(t), res[0].Task.ID)
	if err != nil {
		t.Fatalf("GetTask after reopen: %v", err)
	}
	if got.ID != res[0].Task.ID || string(got.Payload) != `{"n":1}` || got.Target.Headers["X-A"] != "b" ||
		!got.RunAt.Equal(res[0].Task.RunAt) || got.IdempotencyKey != "k1" {
		t.Errorf("after reopen got %+v, want %+v", got, res[0].Task)
	}
	q, err := s2.GetQueue(ctxFor(t), "q")
	if err != nil || q.Concurrency != 3 || q.Counts[task.Available] != 1 {
		t.Errorf("queue after reopen: %+v, %v", q, err)
	}
	// The idempotency key survives too.
	again := enqueue(t, s2, nt)
	if !again[0].Existing || again[0].Task.ID != res[0].Task.ID {
		t.Errorf("replay after reopen: %+v", again[0])
	}
}

func TestConcurrentLeaseNeverDoubleLeases(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	const n = 600
	batch := make([]store.NewTask, n)
	for i := range batch {
		batch[i] = newTask(fmt.Sprintf("q%d", i%3))
	}
	enqueue(t, s, batch...)

	var (
		mu   sync.Mutex
		seen = make(map[string]int)
		wg   sync.WaitGroup
		errs = make(chan error, 8)
	)
	for range 8 {
		wg.Go(func() {
			for {
				ls, err := s.Lease(ctxFor(t), store.LeaseRequest{Limit: 7, Shared: 7, LeaseFor: time.Minute})
				if err != nil {
					errs <- err
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					seen[l.Task.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Lease: %v", err)
	}
	if len(seen) != n {
		t.Errorf("leased %d distinct tasks, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("task %s leased %d times", id, c)
		}
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	a, b, c := newTask("q"), newTask("q"), newTask("other")
	a.IdempotencyKey, b.IdempotencyKey, c.IdempotencyKey = "k", "k", "k"
	res := enqueue(t, s, a, b, c)
	if res[0].Existing || !res[1].Existing || res[2].Existing {
		t.Fatalf("Existing flags = %v %v %v, want false true false", res[0].Existing, res[1].Existing, res[2].Existing)
	}
	if res[1].Task.ID != a.ID || res[2].Task.ID != c.ID {
		t.Errorf("ids = %s %s, want %s %s", res[1].Task.ID, res[2].Task.ID, a.ID, c.ID)
	}
	// A later call with the key, in a batch with a new task: the new one is
	// inserted, the replay answers the original, in input order.
	d, e := newTask("q"), newTask("q")
	d.IdempotencyKey = "k"
	res = enqueue(t, s, e, d)
	if res[0].Existing || res[0].Task.ID != e.ID || !res[1].Existing || res[1].Task.ID != a.ID {
		t.Errorf("second call = %+v", res)
	}
	tsPage, err := s.ListTasks(ctxFor(t), store.ListParams{Queue: "q", Limit: 100})
	ts := tsPage.Tasks
	if err != nil || len(ts) != 2 {
		t.Errorf("queue q holds %d tasks (%v), want 2", len(ts), err)
	}
}

func TestBatchIsAtomic(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	ok := newTask("atomic")
	dup := newTask("atomic")
	dup.ID = ok.ID // a second row with the same primary key fails the insert
	if _, err := s.Enqueue(ctxFor(t), []store.NewTask{newTask("atomic"), ok, dup}); err == nil {
		t.Fatal("Enqueue of a batch with a duplicate id succeeded")
	}
	tsPage, err := s.ListTasks(ctxFor(t), store.ListParams{Queue: "atomic", Limit: 100})
	ts := tsPage.Tasks
	if err != nil || len(ts) != 0 {
		t.Errorf("after failed batch: %d tasks (%v), want 0", len(ts), err)
	}
	if _, err := s.GetQueue(ctxFor(t), "atomic"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("queue created by a failed batch: %v", err)
	}
}

func TestLargeBatch(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	batch := make([]store.NewTask, 1000)
	for i := range batch {
		batch[i] = newTask("big")
		if i%2 == 0 {
			batch[i].IdempotencyKey = fmt.Sprint("key-", i)
		}
	}
	start := time.Now()
	res := enqueue(t, s, batch...)
	t.Logf("1000-task batch in %v", time.Since(start))
	for i, r := range res {
		if r.Task.ID != batch[i].ID || r.Existing {
			t.Fatalf("result %d = %s existing=%v, want %s", i, r.Task.ID, r.Existing, batch[i].ID)
		}
	}
	q, err := s.GetQueue(ctxFor(t), "big")
	if err != nil || q.Counts[task.Available] != 1000 {
		t.Fatalf("queue: %+v %v", q.Counts, err)
	}
	// Replaying the whole batch inserts nothing and answers every keyed task.
	for i := range batch {
		batch[i].ID = uuid.Must(uuid.NewV7()).String()
	}
	res = enqueue(t, s, batch...)
	for i, r := range res {
		if r.Existing != (i%2 == 0) {
			t.Fatalf("replay result %d existing=%v", i, r.Existing)
		}
	}
}

func TestCompleteNeedsTheLease(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	enqueue(t, s, newTask("q"))
	ls, err := s.Lease(ctxFor(t), store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Minute})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease: %v %v", ls, err)
	}
	l := ls[0]
	if l.Task.State != task.Running || l.Task.Attempt != 1 {
		t.Errorf("leased task %+v", l.Task)
	}
	acc, err := s.Complete(ctxFor(t), []store.Completion{
		{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token + 1}, Outcome: store.Succeeded},
		{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Release},
		{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded},
	})
	if err != nil {
		t.Fatal(err)
	}
	if acc[0] || !acc[1] || acc[2] {
		t.Errorf("accepted = %v, want [false true false]", acc)
	}
	got, err := s.GetTask(ctxFor(t), l.Task.ID)
	if err != nil || got.State != task.Available || got.Attempt != 0 {
		t.Errorf("after release: %+v %v", got, err)
	}
	// The next lease has a different token; the old one stays refused.
	ls2, err := s.Lease(ctxFor(t), store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Minute})
	if err != nil || len(ls2) != 1 || ls2[0].Token == l.Token {
		t.Fatalf("second Lease: %+v %v", ls2, err)
	}
	acc, err = s.Complete(ctxFor(t), []store.Completion{
		{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Fail},
		{LeaseRef: store.LeaseRef{TaskID: ls2[0].Task.ID, Token: ls2[0].Token}, Outcome: store.Succeeded, LastStatus: 204},
	})
	if err != nil || acc[0] || !acc[1] {
		t.Errorf("accepted = %v (%v), want [false true]", acc, err)
	}
}

func TestLeaseLimits(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	ctx := ctxFor(t)
	var batch []store.NewTask
	for range 10 {
		batch = append(batch, newTask("conc"), newTask("rate"), newTask("paused"))
	}
	enqueue(t, s, batch...)
	two, three, yes := 2, 3.0, true
	for name, p := range map[string]task.QueuePatch{
		"conc": {Concurrency: &two}, "rate": {RateLimit: &three}, "paused": {Paused: &yes},
	} {
		if _, err := s.UpdateQueue(ctx, name, p); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, l := range ls {
		per[l.Task.Queue]++
	}
	if per["conc"] != 2 || per["rate"] != 3 || per["paused"] != 0 {
		t.Errorf("leased per queue = %v, want conc 2, rate 3 (burst), paused 0", per)
	}
	// Nothing more right away: conc is full, rate's bucket is empty.
	ls, err = s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
	if err != nil || len(ls) != 0 {
		t.Errorf("second Lease = %d tasks (%v), want 0", len(ls), err)
	}
	// The bucket refills at 3/s.
	time.Sleep(400 * time.Millisecond)
	ls, err = s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
	if err != nil || len(ls) != 1 || ls[0].Task.Queue != "rate" {
		t.Errorf("after 400ms: %d tasks (%v), want 1 of rate", len(ls), err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	ctx := ctxFor(t)
	if _, err := s.GetTask(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetTask missing: %v", err)
	}
	if _, err := s.CancelTask(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CancelTask missing: %v", err)
	}
	if _, err := s.GetQueue(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetQueue missing: %v", err)
	}
	res := enqueue(t, s, newTask("q"))
	if _, err := s.RetryTask(ctx, res[0].Task.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("RetryTask of an available task: %v", err)
	}
	if _, err := s.CancelTask(ctx, res[0].Task.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CancelTask(ctx, res[0].Task.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CancelTask of a cancelled task: %v", err)
	}
}

func TestWakeups(t *testing.T) {
	t.Parallel()
	s := fresh(t)
	ctx, cancel := context.WithCancel(ctxFor(t))
	ch, err := s.Wakeups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	later := newTask("q")
	later.RunAt = time.Now().Add(time.Hour)
	enqueue(t, s, later)
	select {
	case <-ch:
		t.Error("signal for a task due in an hour")
	case <-time.After(50 * time.Millisecond):
	}
	enqueue(t, s, newTask("q"))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no signal after enqueueing a due task")
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			// a leftover signal is allowed; the close must follow
			if _, ok := <-ch; ok {
				t.Error("channel still open after ctx ended")
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed after ctx ended")
	}
}

// TestConformance holds the driver to the Store contract.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return fresh(t) })
}

// BenchmarkEnqueueBatch1000 measures one 1000-task Enqueue call.
func BenchmarkEnqueueBatch1000(b *testing.B) {
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "spool.db"), sqlite.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(b.Context()); err != nil {
		b.Fatal(err)
	}
	batch := make([]store.NewTask, 1000)
	for b.Loop() {
		for i := range batch {
			batch[i] = newTask("bench")
		}
		if _, err := s.Enqueue(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkLeaseComplete measures the worker's round trip: lease 100 tasks,
// complete them in one call.
func BenchmarkLeaseComplete(b *testing.B) { benchLeaseComplete(b, false) }

// BenchmarkLeaseCompleteWithAttempts is BenchmarkLeaseComplete with an
// attempt record on every completion, as the dispatcher sends them: the
// cost of the attempt history.
func BenchmarkLeaseCompleteWithAttempts(b *testing.B) { benchLeaseComplete(b, true) }

// benchAttempt is a successful attempt's record as the dispatcher makes it.
func benchAttempt(l store.Lease) *task.Attempt {
	now := time.Now()
	excerpt := `{"ok":true,"id":"` + l.Task.ID + `"}`
	return &task.Attempt{Attempt: l.Task.Attempt, Outcome: task.AttemptSucceeded, StartedAt: now.Add(-3 * time.Millisecond), FinishedAt: now,
		Duration: 3 * time.Millisecond, Status: 200, ResponseExcerpt: &excerpt, ResponseHeaders: map[string]string{"Content-Type": "application/json"},
		Replica: "bench-replica-1234-abcd", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
}

func benchLeaseComplete(b *testing.B, attempts bool) {
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "spool.db"), sqlite.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(b.Context()); err != nil {
		b.Fatal(err)
	}
	batch := make([]store.NewTask, 100)
	for b.Loop() {
		b.StopTimer()
		for i := range batch {
			batch[i] = newTask("bench")
		}
		if _, err := s.Enqueue(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		ls, err := s.Lease(b.Context(), store.LeaseRequest{Limit: len(batch), Shared: len(batch), LeaseFor: time.Minute})
		if err != nil || len(ls) != len(batch) {
			b.Fatalf("Lease: %d, %v", len(ls), err)
		}
		cs := make([]store.Completion, len(ls))
		for i, l := range ls {
			cs[i] = store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded, LastStatus: 200}
			if attempts {
				cs[i].Attempt = benchAttempt(l)
			}
		}
		if _, err := s.Complete(b.Context(), cs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "tasks/s")
}
