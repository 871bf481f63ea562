package store_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/store/storetest"
	"github.com/spoolhq/spool/internal/task"
)

func openSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
		ID:       uuid.Must(uuid.NewV7()).String(),
		Queue:    queue,
		Target:   task.Target{URL: "http://127.0.0.1:1/hook", Method: "POST"},
		Payload:  []byte(`{}`),
		Priority: task.DefaultPriority,
	}
}

// TestGroupCommitConformance: the wrapped store still keeps the whole
// Store contract.
func TestGroupCommitConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return store.GroupCommit(openSQLite(t), store.GroupCommitOptions{})
	})
}

// gated holds every Enqueue of the real store until the test opens the
// gate, so that calls pile up behind the committers as under load.
type gated struct {
	store.Store
	gate  chan struct{}
	calls atomic.Int64
}

func (g *gated) Enqueue(ctx context.Context, ts []store.NewTask) ([]store.Enqueued, error) {
	g.calls.Add(1)
	<-g.gate
	return g.Store.Enqueue(ctx, ts)
}

type observed struct {
	mu     sync.Mutex
	groups [][2]int // calls, tasks
}

func (o *observed) observe(calls, tasks int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.groups = append(o.groups, [2]int{calls, tasks})
}

// waitPending waits until n calls have reached the inner store or wait for
// a committer: the gate holds the first committers inside.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitCombines: 100 single-task calls arriving while the one
// committer is busy are stored in one further transaction, and each caller
// gets its own task back.
func TestGroupCommitCombines(t *testing.T) {
	inner := &gated{Store: openSQLite(t), gate: make(chan struct{})}
	var obs observed
	s := store.GroupCommit(inner, store.GroupCommitOptions{Committers: 1, Observe: obs.observe})

	first := newTask("q")
	firstDone := make(chan error, 1)
	go func() {
		_, err := s.Enqueue(t.Context(), []store.NewTask{first})
		firstDone <- err
	}()
	waitFor(t, func() bool { return inner.calls.Load() == 1 }) // the committer is inside

	const n = 100
	var wg sync.WaitGroup
	in := make([]store.NewTask, n)
	out := make([][]store.Enqueued, n)
	errs := make([]error, n)
	for i := range n {
		in[i] = newTask("q")
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = s.Enqueue(t.Context(), []store.NewTask{in[i]})
		}()
	}
	time.Sleep(100 * time.Millisecond) // let all 100 queue up
	close(inner.gate)
	wg.Wait()
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if len(out[i]) != 1 || out[i][0].Task.ID != in[i].ID || out[i][0].Existing {
			t.Fatalf("call %d got %+v, want its own task %s", i, out[i], in[i].ID)
		}
		got, err := inner.GetTask(t.Context(), in[i].ID)
		if err != nil || got.State != task.Available {
			t.Fatalf("task %d: %v %v", i, got.State, err)
		}
	}
	if c := inner.calls.Load(); c != 2 {
		t.Errorf("inner Enqueue calls = %d, want 2 (the first, then the 100 combined)", c)
	}
	if len(obs.groups) != 2 || obs.groups[1] != [2]int{n, n} {
		t.Errorf("groups = %v, want [[1 1] [%d %d]]", obs.groups, n, n)
	}
}

// TestGroupCommitIdempotencyAcrossCalls: two calls with the same key in
// one combined transaction behave as if run one after the other.
func TestGroupCommitIdempotencyAcrossCalls(t *testing.T) {
	inner := &gated{Store: openSQLite(t), gate: make(chan struct{})}
	s := store.GroupCommit(inner, store.GroupCommitOptions{Committers: 1})
	go s.Enqueue(t.Context(), []store.NewTask{newTask("warm")})
	waitFor(t, func() bool { return inner.calls.Load() == 1 })

	a, b := newTask("q"), newTask("q")
	a.IdempotencyKey, b.IdempotencyKey = "k", "k"
	ra, rb := make(chan []store.Enqueued, 1), make(chan []store.Enqueued, 1)
	go func() { r, _ := s.Enqueue(t.Context(), []store.NewTask{a}); ra <- r }()
	time.Sleep(20 * time.Millisecond) // a arrives first
	go func() { r, _ := s.Enqueue(t.Context(), []store.NewTask{b}); rb <- r }()
	time.Sleep(50 * time.Millisecond)
	close(inner.gate)
	gotA, gotB := <-ra, <-rb
	if len(gotA) != 1 || gotA[0].Existing || gotA[0].Task.ID != a.ID {
		t.Fatalf("first call: %+v, want its task inserted", gotA)
	}
	if len(gotB) != 1 || !gotB[0].Existing || gotB[0].Task.ID != a.ID {
		t.Fatalf("second call: %+v, want the first's task as existing", gotB)
	}
	if c := inner.calls.Load(); c != 2 {
		t.Errorf("inner calls = %d, want 2 (both keys in one transaction)", c)
	}
}

// TestGroupCommitIsolatesFailure: a call the store refuses (a task id that
// exists) fails alone; the calls combined with it are stored.
func TestGroupCommitIsolatesFailure(t *testing.T) {
	inner := &gated{Store: openSQLite(t), gate: make(chan struct{})}
	s := store.GroupCommit(inner, store.GroupCommitOptions{Committers: 1})
	dup := newTask("q")
	close(inner.gate)
	if _, err := s.Enqueue(t.Context(), []store.NewTask{dup}); err != nil {
		t.Fatal(err)
	}
	inner.gate = make(chan struct{})
	go s.Enqueue(t.Context(), []store.NewTask{newTask("warm")})
	waitFor(t, func() bool { return inner.calls.Load() == 2 })

	good := []store.NewTask{newTask("q"), newTask("q"), newTask("q")}
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i, nt := range append(good, dup) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Enqueue(t.Context(), []store.NewTask{nt})
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(inner.gate)
	wg.Wait()
	for i := range good {
		if errs[i] != nil {
			t.Errorf("good call %d failed: %v", i, errs[i])
		}
		if _, err := inner.GetTask(t.Context(), good[i].ID); err != nil {
			t.Errorf("good task %d not stored: %v", i, err)
		}
	}
	if errs[3] == nil {
		t.Error("duplicate id call succeeded, want an error")
	}
}

// TestGroupCommitCancelledWhileWaiting: a caller that gives up before a
// committer takes its call gets its context's error, and its task is
// never stored.
func TestGroupCommitCancelledWhileWaiting(t *testing.T) {
	inner := &gated{Store: openSQLite(t), gate: make(chan struct{})}
	s := store.GroupCommit(inner, store.GroupCommitOptions{Committers: 1})
	go s.Enqueue(t.Context(), []store.NewTask{newTask("warm")})
	waitFor(t, func() bool { return inner.calls.Load() == 1 })

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	nt := newTask("q")
	if _, err := s.Enqueue(ctx, []store.NewTask{nt}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	close(inner.gate)
	other := newTask("q")
	if _, err := s.Enqueue(t.Context(), []store.NewTask{other}); err != nil {
		t.Fatal(err)
	}
	if _, err := inner.GetTask(t.Context(), nt.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("abandoned task: %v, want not found", err)
	}
}
