package storetest

import (
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// testOldestDue: only due pending tasks count; future, running and final
// ones do not; each queue reports its own oldest.
func testOldestDue(t *testing.T, newStore NewStoreFunc) {
	ctx, s := setup(t, newStore)
	got, err := s.OldestDue(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v %v", got, err)
	}
	old := newTask("a")
	mustEnqueue(t, ctx, s, old)
	time.Sleep(300 * time.Millisecond)
	mustEnqueue(t, ctx, s, newTask("a"), newTask("b"))
	future := newTask("c")
	future.RunAt = time.Now().Add(time.Hour)
	mustEnqueue(t, ctx, s, future)

	got, err = s.OldestDue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["c"]; ok || len(got) != 2 {
		t.Fatalf("want queues a and b only, got %v", got)
	}
	if got["a"] < 250*time.Millisecond || got["a"] > clockSlack+300*time.Millisecond {
		t.Errorf("queue a oldest due %s, want about 300ms", got["a"])
	}
	if got["b"] >= got["a"] {
		t.Errorf("queue b (%s) should be younger than a (%s)", got["b"], got["a"])
	}

	// Leased and finished tasks stop counting.
	ls := mustLease(t, ctx, s, 10, time.Minute)
	if len(ls) != 3 {
		t.Fatalf("leased %d, want 3", len(ls))
	}
	if got, err = s.OldestDue(ctx); err != nil || len(got) != 0 {
		t.Errorf("running tasks only: OldestDue = %v, %v; want empty", got, err)
	}
	for _, l := range ls {
		mustComplete(t, ctx, s, store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded})
	}
	if got, err = s.OldestDue(ctx); err != nil || len(got) != 0 {
		t.Errorf("finished tasks only: OldestDue = %v, %v; want empty", got, err)
	}

	// The oldest is found whatever its priority: the last in lease order
	// here. A retrying task that is due counts before it is promoted.
	low := newTask("p")
	low.Priority = task.MaxPriority
	mustEnqueue(t, ctx, s, low)
	time.Sleep(300 * time.Millisecond)
	high := newTask("p")
	high.Priority = task.MinPriority
	mustEnqueue(t, ctx, s, high)
	if got, err = s.OldestDue(ctx); err != nil || got["p"] < 250*time.Millisecond {
		t.Errorf("oldest at the lowest priority: OldestDue = %v, %v; want p about 300ms", got, err)
	}
	for _, l := range mustLease(t, ctx, s, 10, time.Minute) {
		c := store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Retry,
			RetryAt: time.Now().Add(100 * time.Millisecond)}
		mustComplete(t, ctx, s, c)
	}
	time.Sleep(400 * time.Millisecond)
	if got, err = s.OldestDue(ctx); err != nil || got["p"] < 250*time.Millisecond || got["p"] > clockSlack+400*time.Millisecond {
		t.Errorf("retrying tasks due 300ms ago: OldestDue = %v, %v; want p about 300ms", got, err)
	}
}
