package storetest

import (
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
)

// testFinishedPerMinute: succeeded and failed tasks are counted by queue
// and minute; pending, running and cancelled ones are not; the window cuts
// off older minutes.
func testFinishedPerMinute(t *testing.T, newStore NewStoreFunc) {
	ctx, s := setup(t, newStore)
	got, err := s.FinishedPerMinute(ctx, time.Hour)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v %v", got, err)
	}
	mustEnqueue(t, ctx, s, newTask("a"), newTask("a"), newTask("a"), newTask("b"), newTask("b"), newTask("c"))
	ls := mustLease(t, ctx, s, 5, time.Minute) // one task of the six stays pending
	if len(ls) != 5 {
		t.Fatalf("leased %d", len(ls))
	}
	byQueue := map[string][]store.Lease{}
	for _, l := range ls {
		byQueue[l.Task.Queue] = append(byQueue[l.Task.Queue], l)
	}
	done := func(l store.Lease, o store.Outcome) {
		mustComplete(t, ctx, s, store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: o, LastError: "x"})
	}
	want := map[string][2]int64{}
	for q, qs := range byQueue {
		for i, l := range qs {
			switch {
			case q == "c":
				if _, err := s.CancelTask(ctx, l.Task.ID); err != nil {
					t.Fatal(err)
				}
			case i == 0:
				done(l, store.Fail)
				w := want[q]
				w[1]++
				want[q] = w
			default:
				done(l, store.Succeeded)
				w := want[q]
				w[0]++
				want[q] = w
			}
		}
	}
	before := time.Now().Add(-clockSlack - time.Minute).Truncate(time.Minute)
	got, err = s.FinishedPerMinute(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := map[string][2]int64{}
	for i, m := range got {
		if m.Queue == "c" {
			t.Errorf("cancelled tasks counted: %+v", m)
		}
		if m.Minute.Before(before) || m.Minute.After(time.Now().Add(clockSlack)) || m.Minute.Second() != 0 || m.Minute.Location() != time.UTC {
			t.Errorf("minute %v is not a recent UTC minute", m.Minute)
		}
		if i > 0 && (got[i-1].Queue > m.Queue || got[i-1].Queue == m.Queue && !got[i-1].Minute.Before(m.Minute)) {
			t.Errorf("not ordered by queue then minute: %+v", got)
		}
		w := sum[m.Queue]
		w[0] += m.Succeeded
		w[1] += m.Failed
		sum[m.Queue] = w
	}
	for q, w := range want {
		if sum[q] != w {
			t.Errorf("queue %s: %v succeeded/failed, want %v", q, sum[q], w)
		}
	}
	if len(sum) != len(want) {
		t.Errorf("queues %v, want %v", sum, want)
	}
	// A window that ends before the tasks finished sees none of them.
	time.Sleep(50 * time.Millisecond)
	if got, err := s.FinishedPerMinute(ctx, time.Millisecond); err != nil || len(got) != 0 {
		t.Errorf("a 1ms window 50ms later: %+v, %v", got, err)
	}
}
