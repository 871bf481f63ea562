package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func testRescue(t *testing.T, newStore NewStoreFunc) {
	t.Run("ExpiredLeaseRetries", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		old := leaseOne(t, ctx, s, tk.ID, time.Millisecond)
		time.Sleep(30 * time.Millisecond)
		before := time.Now()
		n, err := s.RescueExpired(ctx)
		after := time.Now()
		if err != nil || n != 1 {
			t.Fatalf("RescueExpired = %d, %v; want 1, nil", n, err)
		}
		got := checkState(t, ctx, s, tk.ID, task.Retrying)
		if got.Attempt != 1 || got.FinishedAt != nil {
			t.Errorf("attempt, finished = %d, %v; want 1, nil", got.Attempt, got.FinishedAt)
		}
		checkBetween(t, "RunAt after rescue", got.RunAt, before, after)
		// The crashed holder wakes up late: its word no longer counts.
		completeOne(t, ctx, s, done(old, store.Succeeded), false)
		checkState(t, ctx, s, tk.ID, task.Retrying)
		if n, err := s.RescueExpired(ctx); err != nil || n != 0 {
			t.Errorf("second RescueExpired = %d, %v; want 0", n, err)
		}
		if _, err := s.PromoteDue(ctx); err != nil {
			t.Fatalf("PromoteDue: %v", err)
		}
		again := leaseOne(t, ctx, s, tk.ID, time.Minute)
		if again.Token == old.Token || again.Task.Attempt != 2 {
			t.Errorf("re-lease: token %d (old %d), attempt %d; want a new token and attempt 2", again.Token, old.Token, again.Task.Attempt)
		}
		completeOne(t, ctx, s, done(old, store.Fail), false)
		completeOne(t, ctx, s, done(again, store.Succeeded), true)
		checkState(t, ctx, s, tk.ID, task.Succeeded)
	})

	t.Run("AttemptsSpentFails", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.MaxAttempts = 1
		enqueueOne(t, ctx, s, nt)
		old := leaseOne(t, ctx, s, nt.ID, time.Millisecond)
		time.Sleep(30 * time.Millisecond)
		if n, err := s.RescueExpired(ctx); err != nil || n != 1 {
			t.Fatalf("RescueExpired = %d, %v; want 1, nil", n, err)
		}
		got := checkState(t, ctx, s, nt.ID, task.Failed)
		if got.FinishedAt == nil {
			t.Error("FinishedAt nil on a task failed by rescue")
		}
		if !strings.Contains(got.LastError, "lease expired") {
			t.Errorf("LastError = %q, want it to say lease expired", got.LastError)
		}
		completeOne(t, ctx, s, done(old, store.Succeeded), false)
		checkState(t, ctx, s, nt.ID, task.Failed)
	})

	t.Run("LiveLeasesUntouched", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 3)...)
		ls := leaseN(t, ctx, s, 3, time.Minute)
		if n, err := s.RescueExpired(ctx); err != nil || n != 0 {
			t.Errorf("RescueExpired = %d, %v; want 0 with only live leases", n, err)
		}
		for _, l := range ls {
			checkState(t, ctx, s, l.Task.ID, task.Running)
		}
	})
}

func testPromote(t *testing.T, newStore NewStoreFunc) {
	t.Run("MovesDueOnly", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// Two retrying tasks: one due, one an hour out.
		mustEnqueue(t, ctx, s, newTasks("q", 2)...)
		ls := leaseN(t, ctx, s, 2, time.Minute)
		due, later := done(ls[0], store.Retry), done(ls[1], store.Retry)
		due.RetryAt, later.RetryAt = time.Now().Add(-time.Second), time.Now().Add(time.Hour)
		mustComplete(t, ctx, s, due, later)
		near, far := newTask("q"), newTask("q")
		near.RunAt, far.RunAt = time.Now().Add(300*time.Millisecond), time.Now().Add(time.Hour)
		start := time.Now()
		mustEnqueue(t, ctx, s, near, far)
		if time.Since(start) < 200*time.Millisecond {
			checkState(t, ctx, s, near.ID, task.Scheduled)
		}
		time.Sleep(time.Until(near.RunAt) + 50*time.Millisecond)
		n, err := s.PromoteDue(ctx)
		if err != nil || n != 2 {
			t.Errorf("PromoteDue = %d, %v; want 2 (one scheduled, one retrying)", n, err)
		}
		checkState(t, ctx, s, near.ID, task.Available)
		checkState(t, ctx, s, due.TaskID, task.Available)
		checkState(t, ctx, s, far.ID, task.Scheduled)
		checkState(t, ctx, s, later.TaskID, task.Retrying)
		if n, err := s.PromoteDue(ctx); err != nil || n != 0 {
			t.Errorf("second PromoteDue = %d, %v; want 0", n, err)
		}
	})

	t.Run("LeavesOtherStates", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{task.Running: 1, task.Succeeded: 1, task.Failed: 1, task.Cancelled: 1, task.Available: 1})
		if n, err := s.PromoteDue(ctx); err != nil || n != 0 {
			t.Errorf("PromoteDue = %d, %v; want 0", n, err)
		}
		for st, list := range ids {
			checkState(t, ctx, s, list[0], st)
		}
	})
}

func testPrune(t *testing.T, newStore NewStoreFunc) {
	t.Run("OnlyOldFinal", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{
			task.Succeeded: 1, task.Failed: 1, task.Cancelled: 1,
			task.Scheduled: 1, task.Available: 1, task.Running: 1, task.Retrying: 1,
		})
		if n, err := s.Prune(ctx, time.Hour, 100); err != nil || n != 0 {
			t.Fatalf("Prune(1h) = %d, %v; want 0 (nothing that old)", n, err)
		}
		const retention = 600 * time.Millisecond
		time.Sleep(2 * retention)
		fresh := enqueueOne(t, ctx, s, newTask("q"))
		if _, err := s.CancelTask(ctx, fresh.ID); err != nil {
			t.Fatalf("CancelTask: %v", err)
		}
		freshAt := time.Now()
		n1, err1 := s.Prune(ctx, retention, 2)
		n2, err2 := s.Prune(ctx, retention, 100)
		n3, err3 := s.Prune(ctx, retention, 100)
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		if time.Since(freshAt) > retention-100*time.Millisecond {
			t.Skip("machine too slow: the fresh task may have aged past retention")
		}
		if n1 != 2 || n2 != 1 || n3 != 0 {
			t.Errorf("Prune(limit 2), Prune, Prune = %d, %d, %d; want 2, 1, 0", n1, n2, n3)
		}
		for _, st := range []task.State{task.Succeeded, task.Failed, task.Cancelled} {
			_, err := s.GetTask(ctx, ids[st][0])
			checkIs(t, "GetTask of a pruned "+string(st)+" task", err, store.ErrNotFound)
		}
		for _, st := range []task.State{task.Scheduled, task.Available, task.Running, task.Retrying} {
			checkState(t, ctx, s, ids[st][0], st)
		}
		checkState(t, ctx, s, fresh.ID, task.Cancelled)

		// Retention 0: every final task goes, and still no pending one.
		if n, err := s.Prune(ctx, 0, 100); err != nil || n != 1 {
			t.Errorf("Prune(0) = %d, %v; want 1 (the fresh cancelled task)", n, err)
		}
		checkCounts(t, "q", mustQueue(t, ctx, s, "q").Counts, map[task.State]int64{
			task.Scheduled: 1, task.Available: 1, task.Running: 1, task.Retrying: 1,
		})
	})
}

func testLeadership(t *testing.T, newStore NewStoreFunc) {
	acquire := func(t *testing.T, s store.Store, owner string, ttl time.Duration) bool {
		t.Helper()
		ok, err := s.AcquireLeadership(t.Context(), owner, ttl)
		if err != nil {
			t.Fatalf("AcquireLeadership(%s): %v", owner, err)
		}
		return ok
	}

	t.Run("OneLeader", func(t *testing.T) {
		_, s := setup(t, newStore)
		if !acquire(t, s, "a", time.Minute) {
			t.Fatal("first owner did not become leader")
		}
		if acquire(t, s, "b", time.Minute) {
			t.Fatal("second owner became leader while the first leads")
		}
		if !acquire(t, s, "a", time.Minute) {
			t.Error("leader could not renew")
		}
		if acquire(t, s, "b", time.Minute) {
			t.Error("second owner became leader after the first renewed")
		}
	})

	t.Run("ExpiryHandsOver", func(t *testing.T) {
		_, s := setup(t, newStore)
		const ttl = 300 * time.Millisecond
		start := time.Now()
		if !acquire(t, s, "a", ttl) {
			t.Fatal("first owner did not become leader")
		}
		if b := acquire(t, s, "b", time.Minute); b && time.Since(start) < ttl {
			t.Fatal("second owner took leadership before the ttl expired")
		}
		time.Sleep(ttl + 200*time.Millisecond)
		if !acquire(t, s, "b", time.Minute) {
			t.Fatal("second owner could not take an expired leadership")
		}
		if acquire(t, s, "a", time.Minute) {
			t.Error("the old leader renewed a leadership it had lost")
		}
	})

	t.Run("RenewExtends", func(t *testing.T) {
		_, s := setup(t, newStore)
		const ttl = 800 * time.Millisecond
		if !acquire(t, s, "a", ttl) {
			t.Fatal("first owner did not become leader")
		}
		time.Sleep(ttl / 2)
		renewed := time.Now()
		if !acquire(t, s, "a", ttl) {
			t.Fatal("leader could not renew")
		}
		time.Sleep(ttl*3/4 - time.Since(renewed)) // past the first term, inside the second
		b := acquire(t, s, "b", time.Minute)
		if time.Since(renewed) < ttl-100*time.Millisecond && b {
			t.Error("second owner took leadership that the leader had renewed")
		}
	})

	t.Run("Resign", func(t *testing.T) {
		_, s := setup(t, newStore)
		if !acquire(t, s, "a", time.Minute) {
			t.Fatal("first owner did not become leader")
		}
		// Resigning what one does not hold changes nothing.
		if err := s.ResignLeadership(t.Context(), "b"); err != nil {
			t.Fatalf("ResignLeadership(non-leader): %v", err)
		}
		if acquire(t, s, "b", time.Minute) {
			t.Fatal("a non-leader's resignation freed the leadership")
		}
		if err := s.ResignLeadership(t.Context(), "a"); err != nil {
			t.Fatalf("ResignLeadership: %v", err)
		}
		if !acquire(t, s, "b", time.Minute) {
			t.Fatal("leadership not free after the leader resigned")
		}
		if acquire(t, s, "a", time.Minute) {
			t.Error("the resigned leader took leadership back from the new one")
		}
	})
}
