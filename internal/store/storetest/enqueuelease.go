package storetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// testLeaser is a store.EnqueueLeaser that offers leases of up to limit
// tasks (0: declines) and records what it is asked and given.
type testLeaser struct {
	mu     sync.Mutex
	limit  int
	asked  []int           // EnqueueLease's due, each call
	open   int             // leases offered and not handed over yet
	leased [][]store.Lease // Leased's ls, each call
}

func (l *testLeaser) EnqueueLease(due int) (store.LeaseRequest, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked = append(l.asked, due)
	if l.limit == 0 {
		return store.LeaseRequest{}, false
	}
	l.open++
	return store.LeaseRequest{Limit: l.limit, Shared: l.limit, LeaseFor: time.Minute, AvailableOnly: true}, true
}

func (l *testLeaser) Leased(req store.LeaseRequest, ls []store.Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	l.leased = append(l.leased, ls)
}

// all returns every lease handed over, and checks that each lease offered
// was handed over exactly once and kept to its limit.
func (l *testLeaser) all(t *testing.T) []store.Lease {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open != 0 {
		t.Errorf("%d offered leases were not handed over (Leased)", l.open)
	}
	var out []store.Lease
	for _, ls := range l.leased {
		if len(ls) > l.limit {
			t.Errorf("a lease took %d tasks, limit %d", len(ls), l.limit)
		}
		out = append(out, ls...)
	}
	return out
}

// leasingStore is the store under test with leaser installed, or a skip
// when the driver cannot lease in its enqueues.
func leasingStore(t *testing.T, s store.Store, l *testLeaser) {
	t.Helper()
	le, ok := s.(store.LeasesOnEnqueue)
	if !ok {
		t.Skip("this driver does not lease in its enqueues (store.LeasesOnEnqueue)")
	}
	le.SetEnqueueLeaser(l)
	t.Cleanup(func() { le.SetEnqueueLeaser(nil) })
}

// expectNoSignal fails if ch delivers a signal within d.
func expectNoSignal(t *testing.T, ch <-chan struct{}, d time.Duration, after string) {
	t.Helper()
	select {
	case <-ch:
		t.Errorf("woken after %s, which left nothing to lease", after)
	case <-time.After(d):
	}
}

func testEnqueueLease(t *testing.T, newStore NewStoreFunc) {
	t.Run("LeasesWhatItEnqueues", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		l := &testLeaser{limit: 10}
		leasingStore(t, s, l)
		ch := subscribe(t, s)
		res := mustEnqueue(t, ctx, s, newTasks("q", 3)...)
		if !slices.Equal(l.asked, []int{3}) {
			t.Errorf("EnqueueLease asked for %v, want [3]", l.asked)
		}
		got := l.all(t)
		if len(got) != 3 {
			t.Fatalf("the enqueue leased %d tasks, want its 3", len(got))
		}
		want := []string{res[0].Task.ID, res[1].Task.ID, res[2].Task.ID}
		slices.Sort(want)
		if ids := leaseIDs(got); !slices.Equal(ids, want) {
			t.Errorf("leased %v, want %v", ids, want)
		}
		for _, le := range got {
			if le.Task.State != task.Running || le.Task.Attempt != 1 || le.Token == 0 {
				t.Errorf("lease of %s: state %s, attempt %d, token %d", le.Task.ID, le.Task.State, le.Task.Attempt, le.Token)
			}
			if st := mustGet(t, ctx, s, le.Task.ID); st.State != task.Running || st.Attempt != 1 {
				t.Errorf("task %s stored %s, attempt %d; want running, attempt 1", le.Task.ID, st.State, st.Attempt)
			}
			completeOne(t, ctx, s, done(le, store.Succeeded), true)
		}
		// It took fewer than it was allowed: nothing is left to wake for.
		expectNoSignal(t, ch, 300*time.Millisecond, "an enqueue whose lease took every due task")
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("a lease after it found %d tasks", len(ls))
		}
	})

	t.Run("FairOrderOverEveryQueue", func(t *testing.T) {
		// The lease is the fair one over every queue's due tasks, not a
		// shortcut for the new ones: the task that waited longer, in
		// another queue, goes first.
		ctx, s := setup(t, newStore)
		old := enqueueOne(t, ctx, s, newTask("old"))
		time.Sleep(5 * time.Millisecond) // a later run_at for the new task
		l := &testLeaser{limit: 1}
		leasingStore(t, s, l)
		ch := subscribe(t, s)
		nu := enqueueOne(t, ctx, s, newTask("new"))
		got := l.all(t)
		if len(got) != 1 || got[0].Task.ID != old.ID {
			t.Fatalf("leased %v, want the older task %s", leaseIDs(got), old.ID)
		}
		// It took all it was allowed: the dispatcher is woken for the rest.
		expectSignal(t, ch, "an enqueue whose lease took all it was allowed")
		if st := mustGet(t, ctx, s, nu.ID).State; st != task.Available {
			t.Errorf("the new task is %s, want available", st)
		}
	})

	t.Run("Declined", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		l := &testLeaser{}
		leasingStore(t, s, l)
		ch := subscribe(t, s)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		if len(l.asked) != 1 || len(l.all(t)) != 0 {
			t.Errorf("asked %v, leased %d", l.asked, len(l.all(t)))
		}
		expectSignal(t, ch, "an enqueue whose leaser declined")
		if st := mustGet(t, ctx, s, tk.ID).State; st != task.Available {
			t.Errorf("task is %s, want available", st)
		}
	})

	t.Run("NothingDue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		l := &testLeaser{limit: 10}
		leasingStore(t, s, l)
		nt := newTask("q")
		nt.Delay = time.Hour
		enqueueOne(t, ctx, s, nt)
		if len(l.asked) != 0 {
			t.Errorf("EnqueueLease asked for %v by an enqueue of a delayed task", l.asked)
		}
	})

	t.Run("PausedQueue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		paused := true
		mustUpdateQueue(t, ctx, s, "held", task.QueuePatch{Paused: &paused})
		l := &testLeaser{limit: 10}
		leasingStore(t, s, l)
		tk := enqueueOne(t, ctx, s, newTask("held"))
		if got := l.all(t); len(got) != 0 {
			t.Errorf("leased %v from a paused queue", leaseIDs(got))
		}
		if st := mustGet(t, ctx, s, tk.ID).State; st != task.Available {
			t.Errorf("task is %s, want available", st)
		}
		// A store may have to run one lease to learn that the queue is
		// paused, not one per enqueue (a benchmark fills a paused queue
		// with single enqueues).
		asked := len(l.asked)
		for range 3 {
			enqueueOne(t, ctx, s, newTask("held"))
		}
		if len(l.asked) != asked {
			t.Errorf("the enqueues into a paused queue asked for %d leases after the first", len(l.asked)-asked)
		}
	})

	t.Run("LimitedQueue", func(t *testing.T) {
		// A queue's concurrency limit holds: the enqueue's lease takes at
		// most what the queue may start, or stands back and wakes the
		// dispatcher, whose lease then decides.
		ctx, s := setup(t, newStore)
		one := 1
		mustUpdateQueue(t, ctx, s, "lim", task.QueuePatch{Concurrency: &one})
		l := &testLeaser{limit: 10}
		leasingStore(t, s, l)
		ch := subscribe(t, s)
		mustEnqueue(t, ctx, s, newTasks("lim", 3)...)
		got := l.all(t)
		if len(got) > 1 {
			t.Fatalf("leased %d tasks of a queue limited to 1", len(got))
		}
		if len(got) == 0 {
			expectSignal(t, ch, "an enqueue whose lease stood back for a limited queue")
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(got)+len(ls) != 1 {
			t.Errorf("the enqueue leased %d and the next lease %d: want 1 in all", len(got), len(ls))
		}
	})

	t.Run("FailedEnqueue", func(t *testing.T) {
		// An enqueue refused as a whole leases nothing, and says so.
		ctx, s := setup(t, newStore)
		first := newTask("q")
		first.IdempotencyKey, first.Fingerprint = "k", []byte("a")
		first.Delay = time.Hour
		enqueueOne(t, ctx, s, first)
		l := &testLeaser{limit: 10}
		leasingStore(t, s, l)
		due := newTask("q")
		clash := newTask("q")
		clash.IdempotencyKey, clash.Fingerprint = "k", []byte("b")
		if _, err := s.Enqueue(ctx, []store.NewTask{due, clash}); err == nil {
			t.Fatal("an enqueue reusing a key for another request was accepted")
		}
		if got := l.all(t); len(got) != 0 {
			t.Errorf("a refused enqueue leased %v", leaseIDs(got))
		}
		if _, err := s.GetTask(ctx, due.ID); err == nil {
			t.Error("the refused enqueue's due task was stored")
		}
	})
}
