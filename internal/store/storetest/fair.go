package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// testFairLease holds Lease to the fair order and the reserve of
// store.LeaseRequest.
func testFairLease(t *testing.T, newStore NewStoreFunc) {
	t.Run("NewcomerBeforeBacklog", func(t *testing.T) {
		// The backlog's tasks have the better priority and are older, so
		// only the fair key can put the newcomer first.
		for _, limited := range []string{"", "backlog", "newcomer"} {
			t.Run("limited="+limited, func(t *testing.T) {
				ctx, s := setup(t, newStore)
				if limited != "" {
					// A concurrency limit takes the driver's other path
					// (PostgreSQL's leaseMixed); the order must not change.
					ten := 10
					mustUpdateQueue(t, ctx, s, limited, task.QueuePatch{Concurrency: &ten})
				}
				old := time.Now().Add(-time.Minute)
				backlog := make([]store.NewTask, 8)
				for i := range backlog {
					backlog[i] = newTask("backlog")
					backlog[i].Priority, backlog[i].RunAt = 0, old
				}
				mustEnqueue(t, ctx, s, backlog...)
				nt := newTask("newcomer")
				nt.Priority = 9
				newcomer := enqueueOne(t, ctx, s, nt)
				ls := mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Minute,
					Running: map[string]int{"backlog": 3}})
				if ids := leaseIDs(ls); len(ids) != 1 || ids[0] != newcomer.ID {
					t.Fatalf("with 3 of the backlog running, Lease(1) took %v, want the newcomer %s", queuesOf(ls), newcomer.ID)
				}
				// With the newcomer's task running, the backlog's next.
				ls = mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 2, Shared: 2, LeaseFor: time.Minute,
					Running: map[string]int{"backlog": 3, "newcomer": 1}})
				if q := queuesOf(ls); len(q) != 2 || q[0] != "backlog" || q[1] != "backlog" {
					t.Errorf("then Lease(2) took tasks of %v, want two of the backlog", q)
				}
			})
		}
	})

	t.Run("BacklogsAlternate", func(t *testing.T) {
		// Nothing running: one lease of 6 from two backlogs takes 3 of
		// each, although one queue's tasks all have the better priority.
		ctx, s := setup(t, newStore)
		var nts []store.NewTask
		for range 10 {
			a, b := newTask("a"), newTask("b")
			a.Priority, b.Priority = 9, 0
			nts = append(nts, a, b)
		}
		mustEnqueue(t, ctx, s, shuffled(nts)...)
		ls := mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 6, Shared: 6, LeaseFor: time.Minute})
		if got := countQueues(ls); got["a"] != 3 || got["b"] != 3 {
			t.Errorf("Lease(6) over two backlogs took %v, want 3 of each", got)
		}
		// An odd limit: the tie goes to priority, the spare one to b.
		ls = mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 3, Shared: 3, LeaseFor: time.Minute,
			Running: map[string]int{"a": 3, "b": 3}})
		if got := countQueues(ls); got["a"] != 1 || got["b"] != 2 {
			t.Errorf("Lease(3) with 3 of each running took %v, want a:1 b:2", got)
		}
	})

	t.Run("PriorityInsideQueue", func(t *testing.T) {
		// Beside another backlog, each queue's tasks still go in priority,
		// then run_at order.
		ctx, s := setup(t, newStore)
		base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
		var nts []store.NewTask
		want := map[string][]string{}
		for _, q := range []string{"a", "b"} {
			var qs []store.NewTask
			for i, prio := range []int{7, 2, 2, 5} {
				nt := newTask(q)
				nt.Priority, nt.RunAt = prio, base.Add(time.Duration(i)*time.Second)
				qs = append(qs, nt)
			}
			want[q] = []string{qs[1].ID, qs[2].ID, qs[3].ID, qs[0].ID}
			nts = append(nts, qs...)
		}
		mustEnqueue(t, ctx, s, shuffled(nts)...)
		got := map[string][]string{}
		running := map[string]int{}
		for range 4 {
			for _, l := range mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 2, Shared: 2, LeaseFor: time.Minute, Running: running}) {
				got[l.Task.Queue] = append(got[l.Task.Queue], l.Task.ID)
				running[l.Task.Queue]++
			}
		}
		for _, q := range []string{"a", "b"} {
			if len(got[q]) != 4 {
				t.Fatalf("queue %s: leased %d of 4", q, len(got[q]))
			}
			for i := range 4 {
				if got[q][i] != want[q][i] {
					t.Errorf("queue %s: lease order %v, want priority then run_at %v", q, got[q], want[q])
					break
				}
			}
		}
	})

	t.Run("Weights", func(t *testing.T) {
		// Weights 2 and 1: a series of leases that counts what it took as
		// running gives 2:1 after every lease of 3; one lease of 12 with
		// nothing running also splits 8:4.
		for _, limited := range []bool{false, true} {
			name := "free"
			if limited {
				name = "limited"
			}
			t.Run(name, func(t *testing.T) {
				ctx, s := setup(t, newStore)
				two := 2
				mustUpdateQueue(t, ctx, s, "heavy", task.QueuePatch{Weight: &two})
				if limited {
					hundred := 100
					mustUpdateQueue(t, ctx, s, "light", task.QueuePatch{Concurrency: &hundred})
				}
				mustEnqueue(t, ctx, s, append(newTasks("heavy", 30), newTasks("light", 30)...)...)
				running := map[string]int{}
				for i := 1; i <= 4; i++ {
					for _, l := range mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 3, Shared: 3, LeaseFor: time.Minute, Running: running}) {
						running[l.Task.Queue]++
					}
					if running["heavy"] != 2*i || running["light"] != i {
						t.Fatalf("after %d leases of 3: took %v, want heavy:%d light:%d", i, running, 2*i, i)
					}
				}
				ls := mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 12, Shared: 12, LeaseFor: time.Minute})
				if got := countQueues(ls); got["heavy"] != 8 || got["light"] != 4 {
					t.Errorf("Lease(12) with nothing running took %v, want heavy:8 light:4", got)
				}
			})
		}
	})

	t.Run("Reserve", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		old := time.Now().Add(-time.Minute)
		var nts []store.NewTask
		for _, q := range []string{"busy", "idle1", "idle2"} {
			for range 5 {
				nt := newTask(q)
				if q == "busy" {
					nt.Priority, nt.RunAt = 0, old // first in any priority order
				}
				nts = append(nts, nt)
			}
		}
		mustEnqueue(t, ctx, s, nts...)
		// No shared position: one task for each queue with nothing
		// running, none for the queue with some.
		ls := mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 5, Shared: 0, LeaseFor: time.Minute,
			Running: map[string]int{"busy": 2}})
		if got := countQueues(ls); len(ls) != 2 || got["idle1"] != 1 || got["idle2"] != 1 {
			t.Fatalf("Lease(limit 5, shared 0) took %v, want one of idle1 and one of idle2", got)
		}
		// Now every queue has something running: the reserve stays empty.
		ls = mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 5, Shared: 0, LeaseFor: time.Minute,
			Running: map[string]int{"busy": 2, "idle1": 1, "idle2": 1}})
		if len(ls) != 0 {
			t.Fatalf("Lease(limit 5, shared 0) with every queue running took %v, want nothing", countQueues(ls))
		}
		// One shared position goes by the fair order (the busy queue's
		// priority wins the tie of equal keys); the reserve then gives one
		// to each other queue with nothing running, and never a second one.
		ls = mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 5, Shared: 1, LeaseFor: time.Minute})
		if got := countQueues(ls); len(ls) != 3 || got["busy"] != 1 || got["idle1"] != 1 || got["idle2"] != 1 {
			t.Errorf("Lease(limit 5, shared 1) with nothing running took %v, want one of each queue", got)
		}
		// A paused queue is no newcomer.
		paused := true
		mustUpdateQueue(t, ctx, s, "held", task.QueuePatch{Paused: &paused})
		mustEnqueue(t, ctx, s, newTask("held"))
		ls = mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: 5, Shared: 0, LeaseFor: time.Minute,
			Running: map[string]int{"busy": 1, "idle1": 1, "idle2": 1}})
		if len(ls) != 0 {
			t.Errorf("the reserve took %v from a paused queue", countQueues(ls))
		}
	})
}

// mustLeaseReq calls Lease once with req and checks it respects the limit.
func mustLeaseReq(t *testing.T, ctx context.Context, s store.Store, req store.LeaseRequest) []store.Lease {
	t.Helper()
	ls, err := s.Lease(ctx, req)
	if err != nil {
		t.Fatalf("Lease(%+v): %v", req, err)
	}
	if len(ls) > req.Limit {
		t.Fatalf("Lease(limit %d) returned %d leases", req.Limit, len(ls))
	}
	return ls
}

// countQueues counts leases by queue.
func countQueues(ls []store.Lease) map[string]int {
	out := map[string]int{}
	for _, l := range ls {
		out[l.Task.Queue]++
	}
	return out
}

// queuesOf lists the queues of leases, in order.
func queuesOf(ls []store.Lease) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Task.Queue
	}
	return out
}
