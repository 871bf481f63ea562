package storetest

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func testLease(t *testing.T, newStore NewStoreFunc) {
	t.Run("Basics", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Fatalf("empty store leased %d tasks", len(ls))
		}
		a := enqueueOne(t, ctx, s, newTask("a"))
		b := enqueueOne(t, ctx, s, newTask("b"))
		before := time.Now()
		ls := leaseN(t, ctx, s, 2, 45*time.Second)
		after := time.Now()
		seen := map[string]bool{}
		tokens := map[int64]bool{}
		for _, l := range ls {
			seen[l.Task.ID] = true
			tokens[l.Token] = true
			if l.Task.State != task.Running || l.Task.Attempt != 1 {
				t.Errorf("lease of %s: state %s attempt %d, want running 1", l.Task.ID, l.Task.State, l.Task.Attempt)
			}
			checkBetween(t, "ExpiresAt", l.ExpiresAt, before.Add(45*time.Second), after.Add(45*time.Second))
			stored := mustGet(t, ctx, s, l.Task.ID)
			if stored.State != task.Running || stored.Attempt != 1 {
				t.Errorf("stored %s: state %s attempt %d, want running 1", l.Task.ID, stored.State, stored.Attempt)
			}
			checkSameTask(t, "Lease.Task vs GetTask", l.Task, stored)
		}
		if !seen[a.ID] || !seen[b.ID] {
			t.Errorf("leased %v, want both queues' tasks %s and %s", seen, a.ID, b.ID)
		}
		if len(tokens) != 2 {
			t.Errorf("two leases share a token: %v", ls)
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("running tasks leased again: %d", len(ls))
		}
	})

	t.Run("Order", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		now := time.Now().Truncate(time.Millisecond)
		mk := func(prio int, ago time.Duration) store.NewTask {
			nt := newTask("q")
			nt.Priority, nt.RunAt = prio, now.Add(-ago)
			return nt
		}
		p5 := mk(5, 3*time.Second)
		p1new := mk(1, 1*time.Second)
		p1old := mk(1, 2*time.Second)
		p9 := mk(9, 10*time.Second)
		p0 := mk(0, time.Second)
		// Same priority and run_at: the lower id goes first; the higher id
		// is inserted first so insertion order cannot pass for id order.
		tieLo, tieHi := mk(3, 5*time.Second), mk(3, 5*time.Second)
		if tieLo.ID > tieHi.ID {
			tieLo.ID, tieHi.ID = tieHi.ID, tieLo.ID
		}
		// Same priority, the older run_at has the higher id.
		p7new := mk(7, time.Second)
		p7old := mk(7, 4*time.Second)
		if p7old.ID < p7new.ID {
			p7old.ID, p7new.ID = p7new.ID, p7old.ID
		}
		mustEnqueue(t, ctx, s, p5, tieHi, p1new, p9, p7new)
		mustEnqueue(t, ctx, s, p0, tieLo, p1old, p7old)

		first := leaseN(t, ctx, s, 3, time.Minute)
		var got []string
		for _, l := range first {
			got = append(got, l.Task.ID)
		}
		if want := []string{p0.ID, p1old.ID, p1new.ID}; !sameSet(got, want) {
			t.Errorf("Lease(3) took %v, want the three of highest priority %v", got, want)
		}
		want := []store.NewTask{tieLo, tieHi, p5, p7old, p7new, p9}
		names := []string{"priority 3 lower id", "priority 3 higher id", "priority 5", "priority 7 older run_at", "priority 7 newer run_at", "priority 9"}
		for i, w := range want {
			l := leaseN(t, ctx, s, 1, time.Minute)[0]
			if l.Task.ID != w.ID {
				t.Errorf("lease %d took %s (priority %d), want %s (%s)", i, l.Task.ID, l.Task.Priority, w.ID, names[i])
			}
		}
	})

	t.Run("PriorityBreaksFairTies", func(t *testing.T) {
		// Priority orders tasks inside a queue; across queues it only
		// breaks ties of the fair key (here equal: nothing running, one
		// task each). testFairLease shows it losing to the key.
		ctx, s := setup(t, newStore)
		low := newTask("a")
		low.Priority = 7
		low.RunAt = time.Now().Add(-time.Minute)
		high := newTask("b")
		high.Priority = 2
		mustEnqueue(t, ctx, s, low, high)
		leaseOne(t, ctx, s, high.ID, time.Minute)
		leaseOne(t, ctx, s, low.ID, time.Minute)
	})

	t.Run("TiesAcrossLimitedQueues", func(t *testing.T) {
		// Leasing one at a time with nothing running, every queue's first
		// task has the same fair key, so priority, run_at and id decide,
		// the same way whether queues have limits or not (a driver may
		// gather their candidates apart).
		ctx, s := setup(t, newStore)
		ten, rate := 10, 1000.0
		mustUpdateQueue(t, ctx, s, "conc", task.QueuePatch{Concurrency: &ten})
		mustUpdateQueue(t, ctx, s, "rate", task.QueuePatch{RateLimit: &rate})
		base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
		var want []string
		var nts []store.NewTask
		for i, q := range []string{"free", "conc", "rate", "free", "rate", "conc"} {
			nt := newTask(q)
			nt.Priority = 4 + i%2 // 4, 5, 4, 5, 4, 5
			// Later ids run earlier, so id order cannot pass for run_at order.
			nt.RunAt = base.Add(-time.Duration(i) * time.Second)
			nts = append(nts, nt)
		}
		for _, i := range []int{4, 2, 0, 5, 3, 1} { // priority 4 by run_at, then 5
			want = append(want, nts[i].ID)
		}
		mustEnqueue(t, ctx, s, shuffled(nts)...)
		for i, id := range want {
			l := leaseN(t, ctx, s, 1, time.Minute)[0]
			if l.Task.ID != id {
				t.Errorf("lease %d took %s (queue %s, priority %d), want %s", i, l.Task.ID, l.Task.Queue, l.Task.Priority, id)
			}
		}
	})

	t.Run("FutureNotLeased", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		future := newTask("q")
		future.RunAt = time.Now().Add(time.Hour)
		due := newTask("q")
		mustEnqueue(t, ctx, s, future, due)
		ls := mustLease(t, ctx, s, 10, time.Minute)
		if len(ls) != 1 || ls[0].Task.ID != due.ID {
			t.Fatalf("leased %v, want only the due task %s", leaseIDs(ls), due.ID)
		}
		checkState(t, ctx, s, future.ID, task.Scheduled)
		// A retrying task waiting for its backoff is not leased either.
		completeOne(t, ctx, s, store.Completion{LeaseRef: ref(ls[0]), Outcome: store.Retry, RetryAt: time.Now().Add(time.Hour)}, true)
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("leased %v, want nothing before run_at", leaseIDs(ls))
		}
	})

	t.Run("DuePendingLeasedWithoutPromotion", func(t *testing.T) {
		// The contract leases any pending task with run_at <= now, so a
		// scheduled or retrying task whose time came runs even if the
		// leader's PromoteDue has not passed yet.
		ctx, s := setup(t, newStore)
		retry := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, retry.ID, time.Minute)
		completeOne(t, ctx, s, store.Completion{LeaseRef: ref(l), Outcome: store.Retry, RetryAt: time.Now().Add(-time.Millisecond)}, true)
		sched := newTask("q")
		sched.RunAt = time.Now().Add(300 * time.Millisecond)
		if tk := enqueueOne(t, ctx, s, sched); tk.State != task.Scheduled {
			t.Logf("scheduled task stored as %s (slow machine?)", tk.State)
		}
		time.Sleep(time.Until(sched.RunAt) + 50*time.Millisecond)
		got := leaseN(t, ctx, s, 2, time.Minute)
		if ids := leaseIDs(got); !sameSet(ids, []string{retry.ID, sched.ID}) {
			t.Errorf("leased %v, want the due retrying and scheduled tasks", ids)
		}
	})

	t.Run("PausedQueue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		paused, unpaused := true, false
		mustUpdateQueue(t, ctx, s, "p", task.QueuePatch{Paused: &paused})
		held := enqueueOne(t, ctx, s, newTask("p"))
		free := enqueueOne(t, ctx, s, newTask("free"))
		ls := mustLease(t, ctx, s, 10, time.Minute)
		if ids := leaseIDs(ls); !slices.Equal(ids, []string{free.ID}) {
			t.Fatalf("leased %v, want only %s of the unpaused queue", ids, free.ID)
		}
		// Pausing a queue that already holds due tasks stops them too.
		mustUpdateQueue(t, ctx, s, "free", task.QueuePatch{Paused: &paused})
		late := enqueueOne(t, ctx, s, newTask("free"))
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Fatalf("leased %v from paused queues", leaseIDs(ls))
		}
		mustUpdateQueue(t, ctx, s, "p", task.QueuePatch{Paused: &unpaused})
		leaseOne(t, ctx, s, held.ID, time.Minute)
		mustUpdateQueue(t, ctx, s, "free", task.QueuePatch{Paused: &unpaused})
		leaseOne(t, ctx, s, late.ID, time.Minute)
	})

	t.Run("LimitAndTokens", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTasks("q", 10)...)
		if ls := mustLease(t, ctx, s, 3, time.Minute); len(ls) != 3 {
			t.Errorf("Lease(3) with 10 due returned %d", len(ls))
		}
		rest := leaseN(t, ctx, s, 7, time.Minute)
		tokens := map[int64]string{}
		for _, l := range rest {
			if prev, dup := tokens[l.Token]; dup {
				t.Errorf("tasks %s and %s got the same token %d", prev, l.Task.ID, l.Token)
			}
			tokens[l.Token] = l.Task.ID
		}
		// A task leased again gets a token unlike its previous one.
		l := rest[0]
		completeOne(t, ctx, s, done(l, store.Release), true)
		again := leaseOne(t, ctx, s, l.Task.ID, time.Minute)
		if again.Token == l.Token {
			t.Errorf("re-lease of %s reused token %d", l.Task.ID, l.Token)
		}
	})

	t.Run("ConcurrentCallersNeverShare", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		const n, workers = 500, 8
		nts := newTasks("q", n)
		for i := 0; i < n; i += 100 {
			mustEnqueue(t, ctx, s, nts[i:i+100]...)
		}
		var (
			mu    sync.Mutex
			seen  = make(map[string]int, n)
			total atomic.Int64
			wg    sync.WaitGroup
		)
		deadline := time.Now().Add(60 * time.Second)
		for range workers {
			wg.Go(func() {
				for total.Load() < n && time.Now().Before(deadline) {
					ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 7, Shared: 7, LeaseFor: time.Minute})
					if err != nil {
						t.Errorf("concurrent Lease: %v", err)
						return
					}
					if len(ls) == 0 {
						time.Sleep(time.Millisecond)
						continue
					}
					mu.Lock()
					for _, l := range ls {
						seen[l.Task.ID]++
					}
					mu.Unlock()
					total.Add(int64(len(ls)))
				}
			})
		}
		wg.Wait()
		if total.Load() != n || len(seen) != n {
			t.Errorf("leased %d times, %d distinct tasks; want %d and %d", total.Load(), len(seen), n, n)
		}
		for id, k := range seen {
			if k > 1 {
				t.Errorf("task %s leased %d times", id, k)
			}
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("leased %d more after all ran", len(ls))
		}
		checkCounts(t, "q", mustQueue(t, ctx, s, "q").Counts, map[task.State]int64{task.Running: n})
	})

	t.Run("ConcurrencyLimit", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		two := 2
		mustUpdateQueue(t, ctx, s, "c", task.QueuePatch{Concurrency: &two})
		mustEnqueue(t, ctx, s, newTasks("c", 6)...)
		free := enqueueOne(t, ctx, s, newTask("free"))
		ls := mustLease(t, ctx, s, 10, time.Minute)
		var running []store.Lease
		gotFree := false
		for _, l := range ls {
			if l.Task.ID == free.ID {
				gotFree = true
			} else {
				running = append(running, l)
			}
		}
		if len(running) != 2 || !gotFree {
			t.Fatalf("Lease(10) took %d of queue c (concurrency 2) and free=%v; want 2 and true", len(running), gotFree)
		}
		for range 3 {
			if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
				t.Fatalf("leased %d more while 2 run under concurrency 2", len(ls))
			}
		}
		completeOne(t, ctx, s, done(running[0], store.Succeeded), true)
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 1 {
			t.Fatalf("after one finished, leased %d; want 1", len(ls))
		} else {
			running[0] = ls[0]
		}
		// A retry, a cancel and a release free a slot as well.
		c := done(running[0], store.Retry)
		c.RetryAt = time.Now().Add(time.Hour)
		completeOne(t, ctx, s, c, true)
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 1 {
			t.Fatalf("after a retry, leased %d; want 1", len(ls))
		}
		if _, err := s.CancelTask(ctx, running[1].Task.ID); err != nil {
			t.Fatalf("CancelTask: %v", err)
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 1 {
			t.Fatalf("after a cancel, leased %d; want 1", len(ls))
		}
		checkCounts(t, "c", mustQueue(t, ctx, s, "c").Counts, map[task.State]int64{
			task.Running: 2, task.Available: 1, task.Succeeded: 1, task.Retrying: 1, task.Cancelled: 1,
		})
	})

	t.Run("ConcurrencyLimitUnderContention", func(t *testing.T) {
		// Waves of 8 callers released at once, each asking for 2, against a
		// queue of concurrency 3: the check and the lease must be atomic
		// across callers. Each wave's leases finish before the next.
		ctx, s := setup(t, newStore)
		three := 3
		mustUpdateQueue(t, ctx, s, "c", task.QueuePatch{Concurrency: &three})
		mustEnqueue(t, ctx, s, newTasks("c", 100)...)
		for wave := range 10 {
			var (
				mu  sync.Mutex
				got []store.Lease
				wg  sync.WaitGroup
			)
			start := make(chan struct{})
			for range 8 {
				wg.Go(func() {
					<-start
					ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 2, Shared: 2, LeaseFor: time.Minute})
					if err != nil {
						t.Errorf("Lease: %v", err)
						return
					}
					mu.Lock()
					got = append(got, ls...)
					mu.Unlock()
				})
			}
			close(start)
			wg.Wait()
			running := mustQueue(t, ctx, s, "c").Counts[task.Running]
			if len(got) > 3 || running > 3 {
				t.Fatalf("wave %d: 8 concurrent callers leased %d tasks (running %d) from a queue of concurrency 3", wave, len(got), running)
			}
			if len(got) == 0 {
				t.Fatalf("wave %d: nothing leased from a queue with room", wave)
			}
			var cs []store.Completion
			for _, l := range got {
				cs = append(cs, done(l, store.Succeeded))
			}
			mustComplete(t, ctx, s, cs...)
		}
	})

	t.Run("RateLimit", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		rate := 5.0
		mustUpdateQueue(t, ctx, s, "r", task.QueuePatch{RateLimit: &rate})
		mustEnqueue(t, ctx, s, newTasks("r", 80)...)
		started, elapsed := leaseFor(t, s, time.Second)
		// Token bucket: a burst of max(1, rate) plus rate per second. Allow
		// two starts of slack; a missing limit starts all 80.
		maxStarts := int(5+rate*elapsed.Seconds()) + 2
		t.Logf("rate 5/s: %d starts in %v (allowed at most %d)", started, elapsed, maxStarts)
		if started > maxStarts {
			t.Errorf("%d tasks started in %v under rate_limit 5/s; want at most %d", started, elapsed, maxStarts)
		}
		if started < 3 {
			t.Errorf("only %d tasks started in %v under rate_limit 5/s; want about 5 to 10", started, elapsed)
		}
	})

	t.Run("RateLimitBelowOne", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		rate := 0.5
		mustUpdateQueue(t, ctx, s, "r", task.QueuePatch{RateLimit: &rate})
		mustEnqueue(t, ctx, s, newTasks("r", 20)...)
		// The burst is max(1, rate) = 1, so a slow queue still starts: one
		// at once (a full bucket) and one 2s later, or one after 2s if a
		// driver starts its bucket empty; never none, never a burst.
		started, elapsed := leaseFor(t, s, 2200*time.Millisecond)
		if started < 1 || started > 3 {
			t.Errorf("%d tasks started in %v under rate_limit 0.5/s; want 1 to 3", started, elapsed)
		}
	})
}

// leaseFor calls Lease in a tight loop for about d and returns how many
// tasks it started and how long it really took.
func leaseFor(t *testing.T, s store.Store, d time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	started := 0
	for time.Since(start) < d {
		started += len(mustLease(t, t.Context(), s, 10, time.Minute))
		time.Sleep(5 * time.Millisecond)
	}
	return started, time.Since(start)
}

// leaseIDs lists the task ids of leases.
func leaseIDs(ls []store.Lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Task.ID
	}
	return out
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	return slices.Equal(sortedIDs(a), sortedIDs(b))
}
