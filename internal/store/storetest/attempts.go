package storetest

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// record is a full attempt record for lease l, as a dispatcher would make.
func record(l store.Lease, outcome task.AttemptOutcome, status int) *task.Attempt {
	start := time.Now().Add(-150 * time.Millisecond).UTC()
	excerpt := fmt.Sprintf("answer %d to attempt %d\nsecond line: é✓", status, l.Task.Attempt)
	a := &task.Attempt{
		Attempt:         l.Task.Attempt,
		Outcome:         outcome,
		StartedAt:       start,
		FinishedAt:      start.Add(123456 * time.Microsecond),
		Duration:        123456 * time.Microsecond,
		Status:          status,
		ResponseExcerpt: &excerpt,
		ResponseHeaders: map[string]string{"Content-Type": "text/plain; charset=utf-8", "X-Request-Id": "req-" + l.Task.ID[:8]},
		Replica:         "replica-a",
		TraceID:         "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	if outcome != task.AttemptSucceeded {
		a.ErrorClass, a.ErrorMessage = task.ErrorHTTPStatus, fmt.Sprintf("HTTP %d", status)
	}
	return a
}

// attempted is a completion of outcome for lease l carrying attempt a.
func attempted(l store.Lease, o store.Outcome, a *task.Attempt) store.Completion {
	c := done(l, o)
	c.Attempt = a
	c.LastStatus = a.Status
	return c
}

// mustAttempts lists a task's attempts, failing the test on an error.
func mustAttempts(t *testing.T, ctx context.Context, s store.Store, id string) []task.Attempt {
	t.Helper()
	as, err := s.ListAttempts(ctx, id)
	if err != nil {
		t.Fatalf("ListAttempts(%s): %v", id, err)
	}
	return as
}

// diffAttempt lists the fields in which got differs from want; times
// compare to within storedRes.
func diffAttempt(got, want task.Attempt) []string {
	var d []string
	add := func(name string, g, w any) { d = append(d, fmt.Sprintf("%s = %v, want %v", name, g, w)) }
	if got.TaskID != want.TaskID {
		add("TaskID", got.TaskID, want.TaskID)
	}
	if got.Attempt != want.Attempt {
		add("Attempt", got.Attempt, want.Attempt)
	}
	if got.Outcome != want.Outcome {
		add("Outcome", got.Outcome, want.Outcome)
	}
	if !closeTime(got.StartedAt, want.StartedAt) {
		add("StartedAt", got.StartedAt, want.StartedAt)
	}
	if !closeTime(got.FinishedAt, want.FinishedAt) {
		add("FinishedAt", got.FinishedAt, want.FinishedAt)
	}
	if (got.Duration - want.Duration).Abs() > storedRes {
		add("Duration", got.Duration, want.Duration)
	}
	if got.Status != want.Status {
		add("Status", got.Status, want.Status)
	}
	if got.ErrorClass != want.ErrorClass || got.ErrorMessage != want.ErrorMessage {
		add("Error", fmt.Sprintf("%s %q", got.ErrorClass, got.ErrorMessage), fmt.Sprintf("%s %q", want.ErrorClass, want.ErrorMessage))
	}
	switch {
	case (got.ResponseExcerpt == nil) != (want.ResponseExcerpt == nil):
		add("ResponseExcerpt set", got.ResponseExcerpt != nil, want.ResponseExcerpt != nil)
	case got.ResponseExcerpt != nil && *got.ResponseExcerpt != *want.ResponseExcerpt:
		add("ResponseExcerpt", fmt.Sprintf("%.80q (%d bytes)", *got.ResponseExcerpt, len(*got.ResponseExcerpt)),
			fmt.Sprintf("%.80q (%d bytes)", *want.ResponseExcerpt, len(*want.ResponseExcerpt)))
	}
	if !maps.Equal(got.ResponseHeaders, want.ResponseHeaders) {
		add("ResponseHeaders", got.ResponseHeaders, want.ResponseHeaders)
	}
	if got.Replica != want.Replica {
		add("Replica", got.Replica, want.Replica)
	}
	if got.TraceID != want.TraceID {
		add("TraceID", got.TraceID, want.TraceID)
	}
	return d
}

func closeTime(a, b time.Time) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	return a.Sub(b).Abs() <= storedRes
}

// checkAttempts fails unless got matches want, in order.
func checkAttempts(t *testing.T, what string, got []task.Attempt, want ...task.Attempt) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d attempts %v, want %d", what, len(got), got, len(want))
	}
	for i := range got {
		if d := diffAttempt(got[i], want[i]); len(d) > 0 {
			t.Errorf("%s: attempt %d:\n\t%s", what, i, strings.Join(d, "\n\t"))
		}
	}
}

// stored is a as ListAttempts should return it for task id.
func stored(id string, a *task.Attempt) task.Attempt {
	out := *a
	out.TaskID = id
	return out
}

func testAttempts(t *testing.T, newStore NewStoreFunc) {
	t.Run("RecordedInComplete", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		if as := mustAttempts(t, ctx, s, tk.ID); len(as) != 0 {
			t.Fatalf("a new task has attempts %v", as)
		}
		l1 := leaseOne(t, ctx, s, tk.ID, time.Minute)
		a1 := record(l1, task.AttemptRetry, 500)
		completeOne(t, ctx, s, attempted(l1, store.Retry, a1), true)
		l2 := leaseOne(t, ctx, s, tk.ID, time.Minute)
		a2 := record(l2, task.AttemptSucceeded, 200)
		a2.ResponseHeaders = nil // none kept stays none
		completeOne(t, ctx, s, attempted(l2, store.Succeeded, a2), true)
		checkAttempts(t, "after a retry and a success", mustAttempts(t, ctx, s, tk.ID), stored(tk.ID, a1), stored(tk.ID, a2))
	})

	t.Run("BatchRecordsOnlyAccepted", func(t *testing.T) {
		// One Complete call: accepted completions with a record get it,
		// refused ones (a wrong token, a cancelled task, a second report
		// of one lease) and Defer (no record) get none.
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 4)...)
		ls := leaseN(t, ctx, s, 4, time.Minute)
		ok, wrong, cancelled, deferred := ls[0], ls[1], ls[2], ls[3]
		if _, err := s.CancelTask(ctx, cancelled.Task.ID); err != nil {
			t.Fatalf("CancelTask: %v", err)
		}
		bogus := attempted(wrong, store.Succeeded, record(wrong, task.AttemptSucceeded, 200))
		bogus.Token++
		def := done(deferred, store.Defer)
		def.RetryIn = time.Hour
		aOK := record(ok, task.AttemptFailed, 404)
		acc := mustComplete(t, ctx, s,
			attempted(ok, store.Fail, aOK),
			bogus,
			attempted(cancelled, store.Succeeded, record(cancelled, task.AttemptSucceeded, 200)),
			def,
			attempted(ok, store.Succeeded, record(ok, task.AttemptSucceeded, 200)), // the same lease again
		)
		if want := []bool{true, false, false, true, false}; fmt.Sprint(acc) != fmt.Sprint(want) {
			t.Fatalf("accepted = %v, want %v", acc, want)
		}
		checkAttempts(t, "the accepted completion", mustAttempts(t, ctx, s, ok.Task.ID), stored(ok.Task.ID, aOK))
		for what, id := range map[string]string{"wrong token": wrong.Task.ID, "cancelled": cancelled.Task.ID, "deferred": deferred.Task.ID} {
			if as := mustAttempts(t, ctx, s, id); len(as) != 0 {
				t.Errorf("%s: attempts %v, want none", what, as)
			}
		}
		// The refused completion's lease is still held: its own record
		// goes in when it completes.
		aWrong := record(wrong, task.AttemptSucceeded, 204)
		completeOne(t, ctx, s, attempted(wrong, store.Succeeded, aWrong), true)
		checkAttempts(t, "the held lease, completed", mustAttempts(t, ctx, s, wrong.Task.ID), stored(wrong.Task.ID, aWrong))
	})

	t.Run("NotForDefer", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		completeOne(t, ctx, s, done(l, store.Defer), true)
		if as := mustAttempts(t, ctx, s, tk.ID); len(as) != 0 {
			t.Errorf("after a Defer: attempts %v, want none", as)
		}
	})

	t.Run("ReleasedThenRetried", func(t *testing.T) {
		// A release gives the attempt number back: the next attempt reuses
		// it, and both stay in the history, in order.
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l1 := leaseOne(t, ctx, s, tk.ID, time.Minute)
		a1 := record(l1, task.AttemptReleased, 0)
		a1.ErrorClass, a1.ErrorMessage, a1.ResponseExcerpt, a1.ResponseHeaders = task.ErrorShutdown, "released at shutdown", nil, nil
		completeOne(t, ctx, s, attempted(l1, store.Release, a1), true)
		l2 := leaseOne(t, ctx, s, tk.ID, time.Minute)
		if l2.Task.Attempt != l1.Task.Attempt {
			t.Fatalf("attempt after a release = %d, want %d again", l2.Task.Attempt, l1.Task.Attempt)
		}
		a2 := record(l2, task.AttemptSucceeded, 200)
		completeOne(t, ctx, s, attempted(l2, store.Succeeded, a2), true)
		checkAttempts(t, "released, then succeeded", mustAttempts(t, ctx, s, tk.ID), stored(tk.ID, a1), stored(tk.ID, a2))
	})

	t.Run("ExpiredByRescue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		plain := newTask("q")
		mustEnqueue(t, ctx, s, nt, plain)
		leasedAt := time.Now()
		ls := leaseN(t, ctx, s, 2, 50*time.Millisecond)
		time.Sleep(200 * time.Millisecond)
		if n, err := s.RescueExpired(ctx); err != nil || n != 2 {
			t.Fatalf("RescueExpired = %d, %v; want 2", n, err)
		}
		rescuedAt := time.Now()
		for _, l := range ls {
			as := mustAttempts(t, ctx, s, l.Task.ID)
			if len(as) != 1 {
				t.Fatalf("task %s after a rescue: attempts %v, want 1", l.Task.ID, as)
			}
			a := as[0]
			if a.Attempt != 1 || a.Outcome != task.AttemptExpired || a.ErrorClass != task.ErrorLeaseExpired || a.ErrorMessage == "" ||
				a.Status != 0 || a.ResponseExcerpt != nil || a.ResponseHeaders != nil || a.Replica != "" {
				t.Errorf("expired attempt = %+v; want attempt 1, expired, lease_expired with a message, nothing of a response", a)
			}
			if a.StartedAt.Before(leasedAt.Add(-clockSlack)) || a.StartedAt.After(leasedAt.Add(clockSlack)) {
				t.Errorf("expired attempt started at %v, want about the lease, %v", a.StartedAt, leasedAt)
			}
			if a.FinishedAt.Before(a.StartedAt) || a.FinishedAt.After(rescuedAt.Add(clockSlack)) {
				t.Errorf("expired attempt finished at %v, want between its start %v and the rescue %v", a.FinishedAt, a.StartedAt, rescuedAt)
			}
			if want := a.FinishedAt.Sub(a.StartedAt); a.Duration < 150*time.Millisecond || (a.Duration-want).Abs() > 10*time.Millisecond {
				t.Errorf("expired attempt duration %v, want its span %v (at least the 200ms slept)", a.Duration, want)
			}
			wantTrace := ""
			if l.Task.ID == nt.ID {
				wantTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
			}
			if a.TraceID != wantTrace {
				t.Errorf("expired attempt trace id = %q, want %q (the task's traceparent's)", a.TraceID, wantTrace)
			}
		}
		// The next attempt follows it.
		again := leaseN(t, ctx, s, 2, time.Minute)
		l := again[0]
		if l.Task.ID != plain.ID {
			l = again[1]
		}
		a2 := record(l, task.AttemptSucceeded, 200)
		completeOne(t, ctx, s, attempted(l, store.Succeeded, a2), true)
		as := mustAttempts(t, ctx, s, plain.ID)
		if len(as) != 2 || as[0].Outcome != task.AttemptExpired || as[1].Attempt != 2 || as[1].Outcome != task.AttemptSucceeded {
			t.Errorf("after the rescue and a success: %+v; want expired 1, succeeded 2", as)
		}
	})

	t.Run("PrunedWithTask", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 2)...)
		ls := leaseN(t, ctx, s, 2, time.Minute)
		gone, kept := ls[0], ls[1]
		completeOne(t, ctx, s, attempted(gone, store.Succeeded, record(gone, task.AttemptSucceeded, 200)), true)
		aKept := record(kept, task.AttemptRetry, 503)
		c := attempted(kept, store.Retry, aKept)
		c.RetryIn = time.Hour
		completeOne(t, ctx, s, c, true)
		if n, err := s.Prune(ctx, 0, 100); err != nil || n != 1 {
			t.Fatalf("Prune = %d, %v; want 1", n, err)
		}
		_, err := s.ListAttempts(ctx, gone.Task.ID)
		checkIs(t, "ListAttempts of a pruned task", err, store.ErrNotFound)
		checkAttempts(t, "the task kept", mustAttempts(t, ctx, s, kept.Task.ID), stored(kept.Task.ID, aKept))
		// A new task that happened to reuse the id would start with an
		// empty history: nothing of the pruned one is left behind.
		nt := newTask("q")
		nt.ID = gone.Task.ID
		enqueueOne(t, ctx, s, nt)
		if as := mustAttempts(t, ctx, s, nt.ID); len(as) != 0 {
			t.Errorf("a task re-enqueued under a pruned id has attempts %v, want none", as)
		}
	})

	t.Run("KeptAcrossRetryTask", func(t *testing.T) {
		// A failed task run again counts from 1; its history stays.
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l1 := leaseOne(t, ctx, s, tk.ID, time.Minute)
		a1 := record(l1, task.AttemptFailed, 400)
		completeOne(t, ctx, s, attempted(l1, store.Fail, a1), true)
		if _, err := s.RetryTask(ctx, tk.ID); err != nil {
			t.Fatalf("RetryTask: %v", err)
		}
		l2 := leaseOne(t, ctx, s, tk.ID, time.Minute)
		a2 := record(l2, task.AttemptSucceeded, 200)
		completeOne(t, ctx, s, attempted(l2, store.Succeeded, a2), true)
		if a1.Attempt != 1 || a2.Attempt != 1 {
			t.Fatalf("attempt numbers %d and %d, want 1 and 1", a1.Attempt, a2.Attempt)
		}
		checkAttempts(t, "failed, retried, succeeded", mustAttempts(t, ctx, s, tk.ID), stored(tk.ID, a1), stored(tk.ID, a2))
	})

	t.Run("UnknownTask", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		for _, id := range []string{newID(), "not-a-uuid"} {
			_, err := s.ListAttempts(ctx, id)
			checkIs(t, "ListAttempts("+id+")", err, store.ErrNotFound)
		}
	})

	t.Run("Excerpt", func(t *testing.T) {
		// The store keeps what it is given, byte for byte, up to the
		// largest excerpt the dispatcher may send; nil stays nil and ""
		// stays ""; text a database could not take (invalid UTF-8, NUL)
		// is made storable instead of failing the completion.
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 4)...)
		ls := leaseN(t, ctx, s, 4, time.Minute)
		big := strings.Repeat("ab\"\\\n\t€", task.MaxAttemptBodyBytes/9)
		big += strings.Repeat("z", task.MaxAttemptBodyBytes-len(big))
		empty := ""
		bad := "ok\xff\x00end"
		want := []*string{&big, nil, &empty, &bad}
		var cs []store.Completion
		for i, l := range ls {
			a := record(l, task.AttemptSucceeded, 200)
			a.ResponseExcerpt = want[i]
			cs = append(cs, attempted(l, store.Succeeded, a))
		}
		for i, ok := range mustComplete(t, ctx, s, cs...) {
			if !ok {
				t.Fatalf("completion %d refused", i)
			}
		}
		clean := "ok\uFFFD\uFFFDend"
		want[3] = &clean
		for i, l := range ls {
			as := mustAttempts(t, ctx, s, l.Task.ID)
			w := stored(l.Task.ID, cs[i].Attempt)
			w.ResponseExcerpt = want[i]
			checkAttempts(t, fmt.Sprintf("excerpt %d", i), as, w)
		}
	})
}
