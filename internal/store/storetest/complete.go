package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func testExtendLeases(t *testing.T, newStore NewStoreFunc) {
	t.Run("PushesExpiry", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Second)
		lost, err := s.ExtendLeases(ctx, []store.LeaseRef{ref(l)}, time.Minute)
		if err != nil {
			t.Fatalf("ExtendLeases: %v", err)
		}
		if len(lost) != 0 {
			t.Errorf("ExtendLeases of a held lease reported lost %v", lost)
		}
		time.Sleep(1300 * time.Millisecond) // past the original expiry
		if n, err := s.RescueExpired(ctx); err != nil || n != 0 {
			t.Errorf("RescueExpired after extending = %d, %v; want 0, nil", n, err)
		}
		checkState(t, ctx, s, tk.ID, task.Running)
		completeOne(t, ctx, s, done(l, store.Succeeded), true)
	})

	t.Run("SetsExpiryToNowPlusLeaseFor", func(t *testing.T) {
		// Extending sets the expiry to now+leaseFor, even when shorter than
		// what was left: a worker shortens its lease this way.
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Hour)
		if lost, err := s.ExtendLeases(ctx, []store.LeaseRef{ref(l)}, time.Millisecond); err != nil || len(lost) != 0 {
			t.Fatalf("ExtendLeases = %v, %v; want no loss", lost, err)
		}
		time.Sleep(50 * time.Millisecond)
		if n, err := s.RescueExpired(ctx); err != nil || n != 1 {
			t.Errorf("RescueExpired = %d, %v; want 1 (the lease was set to expire in 1ms)", n, err)
		}
	})

	t.Run("ReportsLost", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 4)...)
		ls := leaseN(t, ctx, s, 4, time.Minute)
		held, cancelled, finished, wrongToken := ls[0], ls[1], ls[2], ls[3]
		if _, err := s.CancelTask(ctx, cancelled.Task.ID); err != nil {
			t.Fatalf("CancelTask: %v", err)
		}
		completeOne(t, ctx, s, done(finished, store.Succeeded), true)
		// A lease that expired and was rescued (attempts spent: failed).
		one := newTask("q")
		one.MaxAttempts = 1
		enqueueOne(t, ctx, s, one)
		rescued := leaseOne(t, ctx, s, one.ID, time.Millisecond)
		time.Sleep(30 * time.Millisecond)
		if n, err := s.RescueExpired(ctx); err != nil || n != 1 {
			t.Fatalf("RescueExpired = %d, %v; want 1", n, err)
		}
		bogus := store.LeaseRef{TaskID: wrongToken.Task.ID, Token: wrongToken.Token + 1}
		unknown := store.LeaseRef{TaskID: newID(), Token: held.Token}
		refs := []store.LeaseRef{ref(held), ref(cancelled), ref(finished), ref(rescued), bogus, unknown, ref(wrongToken)}
		lost, err := s.ExtendLeases(ctx, refs, time.Minute)
		if err != nil {
			t.Fatalf("ExtendLeases: %v", err)
		}
		want := []store.LeaseRef{ref(cancelled), ref(finished), ref(rescued), bogus, unknown}
		if !sameRefs(lost, want) {
			t.Errorf("lost = %v\nwant %v\n(held %v and %v must not be lost)", lost, want, ref(held), ref(wrongToken))
		}
		checkState(t, ctx, s, held.Task.ID, task.Running)
		checkState(t, ctx, s, cancelled.Task.ID, task.Cancelled)
		checkState(t, ctx, s, finished.Task.ID, task.Succeeded)
	})
}

// sameRefs reports whether a and b hold the same refs, in any order.
func sameRefs(a, b []store.LeaseRef) bool {
	cmp := func(x, y store.LeaseRef) int {
		if x.TaskID != y.TaskID {
			if x.TaskID < y.TaskID {
				return -1
			}
			return 1
		}
		return int(min(max(x.Token-y.Token, -1), 1))
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

func testComplete(t *testing.T, newStore NewStoreFunc) {
	t.Run("Succeeded", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		c := done(l, store.Succeeded)
		c.LastStatus = 204
		before := time.Now()
		completeOne(t, ctx, s, c, true)
		after := time.Now()
		got := checkState(t, ctx, s, tk.ID, task.Succeeded)
		if got.FinishedAt == nil {
			t.Fatal("FinishedAt nil after success")
		}
		checkBetween(t, "FinishedAt", *got.FinishedAt, before, after)
		checkBetween(t, "UpdatedAt", got.UpdatedAt, before, after)
		if got.Attempt != 1 || got.LastStatus != 204 || got.LastError != "" {
			t.Errorf("attempt, last_status, last_error = %d, %d, %q; want 1, 204, \"\"", got.Attempt, got.LastStatus, got.LastError)
		}
		checkCounts(t, "q", mustQueue(t, ctx, s, "q").Counts, map[task.State]int64{task.Succeeded: 1})
	})

	t.Run("Retry", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		c := done(l, store.Retry)
		c.RetryAt = time.Now().Add(90 * time.Second).Truncate(time.Microsecond)
		c.LastError, c.LastStatus = "503 Service Unavailable", 503
		completeOne(t, ctx, s, c, true)
		got := checkState(t, ctx, s, tk.ID, task.Retrying)
		checkNear(t, "RunAt", got.RunAt, c.RetryAt)
		if got.FinishedAt != nil || got.Attempt != 1 || got.LastError != c.LastError || got.LastStatus != 503 {
			t.Errorf("finished, attempt, last_error, last_status = %v, %d, %q, %d; want nil, 1, %q, 503", got.FinishedAt, got.Attempt, got.LastError, got.LastStatus, c.LastError)
		}
	})

	t.Run("RetryOnLastAttemptFails", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.MaxAttempts = 2
		enqueueOne(t, ctx, s, nt)
		for attempt := 1; attempt <= 2; attempt++ {
			if _, err := s.PromoteDue(ctx); err != nil {
				t.Fatalf("PromoteDue: %v", err)
			}
			l := leaseOne(t, ctx, s, nt.ID, time.Minute)
			if l.Task.Attempt != attempt {
				t.Fatalf("lease %d has attempt %d", attempt, l.Task.Attempt)
			}
			c := done(l, store.Retry)
			c.RetryAt = time.Now().Add(-time.Millisecond)
			c.LastError, c.LastStatus = "boom", 500+attempt
			before := time.Now()
			completeOne(t, ctx, s, c, true)
			after := time.Now()
			if attempt == 1 {
				checkState(t, ctx, s, nt.ID, task.Retrying)
				continue
			}
			got := checkState(t, ctx, s, nt.ID, task.Failed)
			if got.FinishedAt == nil {
				t.Fatal("FinishedAt nil after the last attempt failed")
			}
			checkBetween(t, "FinishedAt", *got.FinishedAt, before, after)
			if got.LastError != "boom" || got.LastStatus != 502 || got.Attempt != 2 {
				t.Errorf("last_error, last_status, attempt = %q, %d, %d; want boom, 502, 2", got.LastError, got.LastStatus, got.Attempt)
			}
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("a failed task was leased again")
		}
	})

	t.Run("Fail", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		c := done(l, store.Fail)
		c.LastError, c.LastStatus = "404 Not Found", 404
		completeOne(t, ctx, s, c, true)
		got := checkState(t, ctx, s, tk.ID, task.Failed)
		if got.FinishedAt == nil || got.LastError != c.LastError || got.LastStatus != 404 {
			t.Errorf("finished, last_error, last_status = %v, %q, %d; want set, %q, 404", got.FinishedAt, got.LastError, got.LastStatus, c.LastError)
		}
	})

	t.Run("Release", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.RunAt = time.Now().Add(-time.Hour)
		enqueueOne(t, ctx, s, nt)
		l := leaseOne(t, ctx, s, nt.ID, time.Minute)
		before := time.Now()
		completeOne(t, ctx, s, done(l, store.Release), true)
		after := time.Now()
		got := checkState(t, ctx, s, nt.ID, task.Available)
		if got.Attempt != 0 || got.FinishedAt != nil {
			t.Errorf("attempt, finished = %d, %v; want 0 (not counted), nil", got.Attempt, got.FinishedAt)
		}
		checkBetween(t, "RunAt after release", got.RunAt, before, after)
		again := leaseOne(t, ctx, s, nt.ID, time.Minute)
		if again.Task.Attempt != 1 || again.Token == l.Token {
			t.Errorf("re-lease: attempt %d token %d (old %d); want attempt 1 and a new token", again.Task.Attempt, again.Token, l.Token)
		}
	})

	t.Run("Defer", func(t *testing.T) {
		// The first attempt got a 503; the second is deferred before it is
		// sent (its destination's breaker is open): the attempt is given
		// back, the task waits until RetryAt, and the 503 stays the last
		// response it really had.
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		c := done(l, store.Retry)
		c.RetryAt, c.LastError, c.LastStatus = time.Now().Add(-time.Millisecond), "503 Service Unavailable", 503
		completeOne(t, ctx, s, c, true)
		if _, err := s.PromoteDue(ctx); err != nil {
			t.Fatalf("PromoteDue: %v", err)
		}
		l = leaseOne(t, ctx, s, tk.ID, time.Minute)
		if l.Task.Attempt != 2 {
			t.Fatalf("second lease has attempt %d, want 2", l.Task.Attempt)
		}
		d := done(l, store.Defer)
		d.RetryAt = time.Now().Add(90 * time.Second).Truncate(time.Microsecond)
		d.LastError, d.LastStatus = "destination circuit open", 0
		completeOne(t, ctx, s, d, true)
		got := checkState(t, ctx, s, tk.ID, task.Retrying)
		checkNear(t, "RunAt after Defer", got.RunAt, d.RetryAt)
		if got.Attempt != 1 || got.FinishedAt != nil || got.LastError != d.LastError || got.LastStatus != 503 {
			t.Errorf("attempt, finished, last_error, last_status = %d, %v, %q, %d; want 1 (not counted), nil, %q, 503 (kept)",
				got.Attempt, got.FinishedAt, got.LastError, got.LastStatus, d.LastError)
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("a task deferred for 90s was leased at once")
		}
		// The deferring holder's word counts once; a second word, of any
		// outcome, is refused.
		for _, o := range []store.Outcome{store.Defer, store.Succeeded} {
			late := done(l, o)
			late.LastError = "late"
			completeOne(t, ctx, s, late, false)
		}
		if got := checkState(t, ctx, s, tk.ID, task.Retrying); got.LastError != d.LastError {
			t.Errorf("refused completions wrote last_error %q", got.LastError)
		}
	})

	t.Run("DeferOnLastAttemptDoesNotFail", func(t *testing.T) {
		// Retry on the last attempt fails the task; Defer does not, because
		// the attempt was never made. With no RetryAt it is due at once.
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.MaxAttempts = 1
		enqueueOne(t, ctx, s, nt)
		l := leaseOne(t, ctx, s, nt.ID, time.Minute)
		before := time.Now()
		completeOne(t, ctx, s, done(l, store.Defer), true)
		after := time.Now()
		got := checkState(t, ctx, s, nt.ID, task.Retrying)
		if got.Attempt != 0 || got.FinishedAt != nil || got.LastStatus != 0 {
			t.Errorf("attempt, finished, last_status = %d, %v, %d; want 0, nil, 0", got.Attempt, got.FinishedAt, got.LastStatus)
		}
		checkBetween(t, "RunAt after Defer without RetryAt", got.RunAt, before, after)
		if _, err := s.PromoteDue(ctx); err != nil {
			t.Fatalf("PromoteDue: %v", err)
		}
		if again := leaseOne(t, ctx, s, nt.ID, time.Minute); again.Task.Attempt != 1 {
			t.Errorf("re-lease after Defer has attempt %d, want 1", again.Task.Attempt)
		}
	})

	t.Run("DeferWithStaleTokenRefused", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		old := leaseOne(t, ctx, s, tk.ID, time.Millisecond)
		time.Sleep(30 * time.Millisecond)
		if n, err := s.RescueExpired(ctx); err != nil || n != 1 {
			t.Fatalf("RescueExpired = %d, %v; want 1", n, err)
		}
		if _, err := s.PromoteDue(ctx); err != nil {
			t.Fatalf("PromoteDue: %v", err)
		}
		cur := leaseOne(t, ctx, s, tk.ID, time.Minute)
		d := done(old, store.Defer)
		d.RetryAt, d.LastError = time.Now().Add(time.Hour), "stale"
		completeOne(t, ctx, s, d, false)
		got := checkState(t, ctx, s, tk.ID, task.Running)
		if got.Attempt != 2 || got.LastError == "stale" {
			t.Errorf("attempt, last_error = %d, %q after a stale Defer; want 2 and untouched", got.Attempt, got.LastError)
		}
		completeOne(t, ctx, s, done(cur, store.Succeeded), true)
	})

	t.Run("LastErrorCleared", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		c := done(l, store.Retry)
		c.RetryAt, c.LastError, c.LastStatus = time.Now(), "timeout", 0
		completeOne(t, ctx, s, c, true)
		if _, err := s.PromoteDue(ctx); err != nil {
			t.Fatalf("PromoteDue: %v", err)
		}
		l = leaseOne(t, ctx, s, tk.ID, time.Minute)
		c = done(l, store.Succeeded)
		c.LastStatus = 200
		completeOne(t, ctx, s, c, true)
		got := checkState(t, ctx, s, tk.ID, task.Succeeded)
		if got.LastError != "" || got.LastStatus != 200 {
			t.Errorf("last_error, last_status = %q, %d; want cleared and 200", got.LastError, got.LastStatus)
		}
	})

	t.Run("SecondCompletionRefused", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		completeOne(t, ctx, s, done(l, store.Succeeded), true)
		for _, o := range []store.Outcome{store.Succeeded, store.Fail, store.Retry, store.Release, store.Defer} {
			c := done(l, o)
			c.RetryAt, c.LastError = time.Now(), "late"
			completeOne(t, ctx, s, c, false)
		}
		got := checkState(t, ctx, s, tk.ID, task.Succeeded)
		if got.LastError != "" {
			t.Errorf("refused completions wrote last_error %q", got.LastError)
		}
	})

	t.Run("SameLeaseTwiceInOneBatch", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		acc := mustComplete(t, ctx, s, done(l, store.Succeeded), done(l, store.Fail))
		if !slices.Equal(acc, []bool{true, false}) {
			t.Errorf("accepted = %v, want [true false]", acc)
		}
		checkState(t, ctx, s, tk.ID, task.Succeeded)
	})

	t.Run("WrongTokenRefused", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 2)...)
		ls := leaseN(t, ctx, s, 2, time.Minute)
		a, b := ls[0], ls[1]
		// a's task with b's token, a's token plus one, an unknown task.
		swapped := store.Completion{LeaseRef: store.LeaseRef{TaskID: a.Task.ID, Token: b.Token}, Outcome: store.Succeeded}
		plusOne := store.Completion{LeaseRef: store.LeaseRef{TaskID: a.Task.ID, Token: a.Token + 1}, Outcome: store.Fail}
		unknown := store.Completion{LeaseRef: store.LeaseRef{TaskID: newID(), Token: a.Token}, Outcome: store.Succeeded}
		acc := mustComplete(t, ctx, s, swapped, plusOne, unknown)
		if !slices.Equal(acc, []bool{false, false, false}) {
			t.Errorf("accepted = %v, want all refused", acc)
		}
		checkState(t, ctx, s, a.Task.ID, task.Running)
		checkState(t, ctx, s, b.Task.ID, task.Running)
		completeOne(t, ctx, s, done(a, store.Succeeded), true)
	})

	t.Run("MixedBatch", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 4)...)
		ls := leaseN(t, ctx, s, 4, time.Minute)
		retry := done(ls[2], store.Retry)
		retry.RetryAt = time.Now().Add(time.Hour)
		cs := []store.Completion{
			done(ls[0], store.Succeeded),
			{LeaseRef: store.LeaseRef{TaskID: ls[1].Task.ID, Token: ls[1].Token + 7}, Outcome: store.Succeeded},
			retry,
			{LeaseRef: store.LeaseRef{TaskID: newID(), Token: 1}, Outcome: store.Fail},
			done(ls[3], store.Fail),
		}
		acc := mustComplete(t, ctx, s, cs...)
		if want := []bool{true, false, true, false, true}; !slices.Equal(acc, want) {
			t.Errorf("accepted = %v, want %v", acc, want)
		}
		checkState(t, ctx, s, ls[0].Task.ID, task.Succeeded)
		checkState(t, ctx, s, ls[1].Task.ID, task.Running)
		checkState(t, ctx, s, ls[2].Task.ID, task.Retrying)
		checkState(t, ctx, s, ls[3].Task.ID, task.Failed)
	})
}
