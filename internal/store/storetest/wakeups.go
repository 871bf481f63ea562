package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// subscribe opens a Wakeups channel for the rest of the test and drains
// what arrives in the first moments (a driver may still be setting up its
// listener, or signal once on start), so later reads see fresh signals.
func subscribe(t *testing.T, s store.Store) <-chan struct{} {
	t.Helper()
	ch, err := s.Wakeups(t.Context())
	if err != nil {
		t.Fatalf("Wakeups: %v", err)
	}
	drain(ch, 200*time.Millisecond)
	return ch
}

// drain discards signals arriving on ch for d.
func drain(ch <-chan struct{}, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ch:
		case <-timer.C:
			return
		}
	}
}

// expectSignal fails unless ch delivers a signal within signalWait.
func expectSignal(t *testing.T, ch <-chan struct{}, after string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Errorf("Wakeups channel closed instead of signalling after %s", after)
		}
	case <-time.After(signalWait):
		t.Errorf("no wake-up within %v after %s", signalWait, after)
	}
}

func testWakeups(t *testing.T, newStore NewStoreFunc) {
	t.Run("Enqueue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ch := subscribe(t, s)
		start := time.Now()
		enqueueOne(t, ctx, s, newTask("q"))
		expectSignal(t, ch, "Enqueue of a due task")
		t.Logf("signal %v after Enqueue", time.Since(start))
	})

	t.Run("PausedQueue", func(t *testing.T) {
		// A task due in a paused queue wakes nobody (no lease could take
		// it); resuming the queue does.
		ctx, s := setup(t, newStore)
		paused := true
		mustUpdateQueue(t, ctx, s, "held", task.QueuePatch{Paused: &paused})
		ch := subscribe(t, s)
		enqueueOne(t, ctx, s, newTask("held"))
		select {
		case <-ch:
			t.Error("woken by an enqueue into a paused queue")
		case <-time.After(300 * time.Millisecond):
		}
		enqueueOne(t, ctx, s, newTask("open"))
		expectSignal(t, ch, "Enqueue into a paused queue and an open one")
		paused = false
		mustUpdateQueue(t, ctx, s, "held", task.QueuePatch{Paused: &paused})
		expectSignal(t, ch, "resuming the paused queue")
	})

	t.Run("EverySubscriber", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ch1, ch2 := subscribe(t, s), subscribe(t, s)
		enqueueOne(t, ctx, s, newTask("q"))
		expectSignal(t, ch1, "Enqueue (first subscriber)")
		expectSignal(t, ch2, "Enqueue (second subscriber)")
	})

	t.Run("RetryTask", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		if _, err := s.CancelTask(ctx, tk.ID); err != nil {
			t.Fatalf("CancelTask: %v", err)
		}
		ch := subscribe(t, s)
		if _, err := s.RetryTask(ctx, tk.ID); err != nil {
			t.Fatalf("RetryTask: %v", err)
		}
		expectSignal(t, ch, "RetryTask")
	})

	t.Run("CompleteReleaseAndRetry", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 2)...)
		ls := leaseN(t, ctx, s, 2, time.Minute)
		ch := subscribe(t, s)
		completeOne(t, ctx, s, done(ls[0], store.Release), true)
		expectSignal(t, ch, "Complete(Release)")
		drain(ch, 50*time.Millisecond)
		c := done(ls[1], store.Retry)
		c.RetryAt = time.Now()
		completeOne(t, ctx, s, c, true)
		expectSignal(t, ch, "Complete(Retry) due now")
	})

	t.Run("CompleteDeferDueNow", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		ch := subscribe(t, s)
		completeOne(t, ctx, s, done(l, store.Defer), true) // no RetryAt: due now
		expectSignal(t, ch, "Complete(Defer) due now")
	})

	t.Run("CompleteInLimitedQueue", func(t *testing.T) {
		// Ending an attempt in a queue with a concurrency limit frees a
		// slot: a waiting task may start, on any replica, so it signals.
		// In a queue without limits a finished attempt frees nothing, and
		// a signal would only cost every replica a lease that finds
		// nothing.
		ctx, s := setup(t, newStore)
		one := 1
		mustEnqueue(t, ctx, s, newTasks("free", 1)...)
		mustEnqueue(t, ctx, s, newTasks("limited", 2)...)
		mustUpdateQueue(t, ctx, s, "limited", task.QueuePatch{Concurrency: &one})
		ls := leaseN(t, ctx, s, 2, time.Minute) // one of each: the limit holds the second back
		ch := subscribe(t, s)
		for _, l := range ls {
			if l.Task.Queue == "free" {
				completeOne(t, ctx, s, done(l, store.Succeeded), true)
			}
		}
		select {
		case <-ch:
			t.Errorf("a finished attempt in a queue without limits signalled a wake-up")
		case <-time.After(300 * time.Millisecond):
		}
		for _, l := range ls {
			if l.Task.Queue == "limited" {
				completeOne(t, ctx, s, done(l, store.Succeeded), true)
			}
		}
		expectSignal(t, ch, "Complete in a concurrency-limited queue")
	})

	t.Run("PromoteDue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nt := newTask("q")
		nt.RunAt = time.Now().Add(100 * time.Millisecond)
		enqueueOne(t, ctx, s, nt)
		time.Sleep(time.Until(nt.RunAt) + 20*time.Millisecond)
		ch := subscribe(t, s)
		if n, err := s.PromoteDue(ctx); err != nil || n != 1 {
			t.Fatalf("PromoteDue = %d, %v; want 1", n, err)
		}
		expectSignal(t, ch, "PromoteDue")
	})

	t.Run("RescueExpired", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		leaseOne(t, ctx, s, tk.ID, time.Millisecond)
		ch := subscribe(t, s) // drains for longer than the lease
		if n, err := s.RescueExpired(ctx); err != nil || n != 1 {
			t.Fatalf("RescueExpired = %d, %v; want 1", n, err)
		}
		expectSignal(t, ch, "RescueExpired")
		checkState(t, ctx, s, tk.ID, task.Retrying)
	})

	t.Run("ClosesWithContext", func(t *testing.T) {
		_, s := setup(t, newStore)
		ctx, cancel := context.WithCancel(t.Context())
		ch, err := s.Wakeups(ctx)
		if err != nil {
			t.Fatalf("Wakeups: %v", err)
		}
		cancel()
		deadline := time.After(signalWait)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-deadline:
				t.Fatalf("Wakeups channel still open %v after its context ended", signalWait)
			}
		}
	})
}
