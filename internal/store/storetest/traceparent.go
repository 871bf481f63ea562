package storetest

import (
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// testTraceParent: a task's traceparent is stored as given and comes back
// from every read (Enqueue, GetTask, ListTasks, Lease, CancelTask,
// RetryTask); a task enqueued without one reads back ""; an idempotent
// replay keeps the original task's traceparent, not the replay's.
func testTraceParent(t *testing.T, newStore NewStoreFunc) {
	ctx, s := setup(t, newStore)
	const (
		tp      = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		replayT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	)
	with := newTask("tp")
	with.TraceParent = tp
	with.IdempotencyKey = "k1"
	without := newTask("tp")
	res := mustEnqueue(t, ctx, s, with, without)
	check := func(what string, tk task.Task) {
		t.Helper()
		want := ""
		if tk.ID == with.ID {
			want = tp
		}
		if tk.TraceParent != want {
			t.Errorf("%s: task %s TraceParent = %q, want %q", what, tk.ID, tk.TraceParent, want)
		}
	}
	check("Enqueue", res[0].Task)
	check("Enqueue", res[1].Task)
	check("GetTask", mustGet(t, ctx, s, with.ID))
	check("GetTask", mustGet(t, ctx, s, without.ID))

	listPage, err := s.ListTasks(ctx, store.ListParams{Queue: "tp", Limit: 10})
	list := listPage.Tasks
	if err != nil {
		t.Fatalf("ListTasks: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("ListTasks: %d tasks, want 2", len(list))
	}
	for _, tk := range list {
		check("ListTasks", tk)
	}

	replay := newTask("tp")
	replay.IdempotencyKey = "k1"
	replay.TraceParent = replayT
	r := mustEnqueue(t, ctx, s, replay)[0]
	if !r.Existing || r.Task.ID != with.ID {
		t.Fatalf("replay: Existing=%v id %s, want the original %s", r.Existing, r.Task.ID, with.ID)
	}
	check("idempotent replay", r.Task)

	leases := mustLease(t, ctx, s, 10, time.Minute)
	if len(leases) != 2 {
		t.Fatalf("Lease: %d tasks, want 2", len(leases))
	}
	for _, l := range leases {
		check("Lease", l.Task)
	}

	cancelled, err := s.CancelTask(ctx, with.ID)
	if err != nil {
		t.Fatalf("CancelTask: %v", err)
	}
	check("CancelTask", cancelled)
	retried, err := s.RetryTask(ctx, with.ID)
	if err != nil {
		t.Fatalf("RetryTask: %v", err)
	}
	check("RetryTask", retried)
}
