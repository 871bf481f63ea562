package storetest

import (
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// testDelay: a NewTask with a Delay and no RunAt is due Delay after the
// store's now (the database's clock on PostgreSQL), not the caller's.
func testDelay(t *testing.T, newStore NewStoreFunc) {
	t.Run("ScheduledDelayFromNow", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.Delay = 30 * time.Second
		before := time.Now()
		got := enqueueOne(t, ctx, s, nt)
		after := time.Now()
		if got.State != task.Scheduled {
			t.Errorf("state %s, want scheduled", got.State)
		}
		checkBetween(t, "run_at", got.RunAt, before.Add(30*time.Second), after.Add(30*time.Second))
		checkNear(t, "stored run_at", mustGet(t, ctx, s, nt.ID).RunAt, got.RunAt)
		if n, err := s.PromoteDue(ctx); err != nil || n != 0 {
			t.Errorf("PromoteDue = %d, %v; want 0 (due in 30s)", n, err)
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("leased %d tasks due in 30s", len(ls))
		}
	})
	t.Run("ShortDelayComesDue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.Delay = 50 * time.Millisecond
		enqueueOne(t, ctx, s, nt)
		time.Sleep(100 * time.Millisecond)
		if n, err := s.PromoteDue(ctx); err != nil || n != 1 {
			t.Fatalf("PromoteDue = %d, %v; want 1", n, err)
		}
		leaseOne(t, ctx, s, nt.ID, time.Minute)
	})
	t.Run("RunAtWins", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.RunAt = time.Now().Add(time.Hour).Truncate(time.Millisecond)
		nt.Delay = time.Second
		got := enqueueOne(t, ctx, s, nt)
		checkNear(t, "run_at", got.RunAt, nt.RunAt)
	})
	t.Run("ZeroIsNow", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		before := time.Now()
		got := enqueueOne(t, ctx, s, nt)
		if got.State != task.Available {
			t.Errorf("state %s, want available", got.State)
		}
		checkBetween(t, "run_at", got.RunAt, before, time.Now())
	})
}

// testRetryIn: a Retry or Defer completion with RetryIn and no RetryAt is
// due again RetryIn after the store's now.
func testRetryIn(t *testing.T, newStore NewStoreFunc) {
	for _, o := range []store.Outcome{store.Retry, store.Defer} {
		name := map[store.Outcome]string{store.Retry: "Retry", store.Defer: "Defer"}[o]
		t.Run(name, func(t *testing.T) {
			ctx, s := setup(t, newStore)
			tk := enqueueOne(t, ctx, s, newTask("q"))
			l := leaseOne(t, ctx, s, tk.ID, time.Minute)
			c := done(l, o)
			c.RetryIn = 30 * time.Second
			before := time.Now()
			completeOne(t, ctx, s, c, true)
			after := time.Now()
			got := checkState(t, ctx, s, tk.ID, task.Retrying)
			checkBetween(t, "run_at", got.RunAt, before.Add(30*time.Second), after.Add(30*time.Second))
			if n, err := s.PromoteDue(ctx); err != nil || n != 0 {
				t.Errorf("PromoteDue = %d, %v; want 0 (due in 30s)", n, err)
			}
		})
	}
	t.Run("ZeroIsNow", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		before := time.Now()
		completeOne(t, ctx, s, done(l, store.Retry), true)
		got := checkState(t, ctx, s, tk.ID, task.Retrying)
		checkBetween(t, "run_at", got.RunAt, before, time.Now())
	})
	t.Run("RetryAtWins", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		c := done(l, store.Retry)
		c.RetryAt = time.Now().Add(time.Hour).Truncate(time.Millisecond)
		c.RetryIn = time.Second
		completeOne(t, ctx, s, c, true)
		checkNear(t, "run_at", checkState(t, ctx, s, tk.ID, task.Retrying).RunAt, c.RetryAt)
	})
}
