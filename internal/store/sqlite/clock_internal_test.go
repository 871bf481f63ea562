package sqlite

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestLeaseExpiryIgnoresWallClockSteps steps the store's wall clock an hour
// forward, then an hour back: a running task whose lease is fresh is not
// rescued by the forward step, and a task whose lease really lapsed (by
// the monotonic clock) is rescued, whichever way the wall clock went.
func TestLeaseExpiryIgnoresWallClockSteps(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := freshStore(t)
	var step atomic.Int64 // the wall clock's offset, ns
	s.clock.wall = func() time.Time { return time.Now().Add(time.Duration(step.Load())) }

	leaseOne := func(leaseFor time.Duration) store.Lease {
		t.Helper()
		if _, err := s.Enqueue(ctx, []store.NewTask{newTask("q")}); err != nil {
			t.Fatal(err)
		}
		ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: leaseFor})
		if err != nil || len(ls) != 1 {
			t.Fatalf("lease: %d, %v", len(ls), err)
		}
		return ls[0]
	}
	state := func(l store.Lease) task.Task {
		t.Helper()
		tk, err := s.GetTask(ctx, l.Task.ID)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	rescue := func(want int) {
		t.Helper()
		n, err := s.RescueExpired(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("rescued %d, want %d", n, want)
		}
	}

	fresh := leaseOne(time.Minute)
	lapsed := leaseOne(time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	step.Store(int64(time.Hour))
	rescue(1)
	if tk := state(fresh); tk.State != task.Running {
		t.Errorf("after a forward step of the wall clock, the task with a fresh lease is %s (%s)", tk.State, tk.LastError)
	}
	if tk := state(lapsed); tk.State != task.Retrying || tk.LastError != "lease expired" {
		t.Errorf("the task whose lease lapsed is %s (%q), want retrying, lease expired", tk.State, tk.LastError)
	}
	if lost, err := s.ExtendLeases(ctx, []store.LeaseRef{{TaskID: fresh.Task.ID, Token: fresh.Token}}, time.Minute); err != nil || len(lost) != 0 {
		t.Errorf("extending the fresh lease after the step: lost %v, %v", lost, err)
	}
	rescue(0)

	// Leased before the wall clock steps back: it lapses all the same.
	back := leaseOne(50 * time.Millisecond)
	step.Store(int64(-time.Hour))
	time.Sleep(100 * time.Millisecond)
	rescue(1)
	if tk := state(back); tk.State != task.Retrying {
		t.Errorf("after a backward step of the wall clock, the task whose lease lapsed is %s, want retrying", tk.State)
	}
	if tk := state(fresh); tk.State != task.Running {
		t.Errorf("the fresh lease was rescued after the backward step: %s", tk.State)
	}
}
