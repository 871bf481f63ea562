package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// idAt returns a random UUIDv7 whose timestamp is at's millisecond.
func idAt(at time.Time) string {
	var u uuid.UUID
	_, _ = rand.Read(u[6:])
	ms := at.UnixMilli()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	return u.String()
}

// listAll pages through p (whatever its Limit) following TaskPage.Next and
// returns every task listed; it fails on a page over the limit, a page
// out of order, or paging that does not end.
func listAll(t *testing.T, ctx context.Context, s store.Store, p store.ListParams) (ts []task.Task, pages int) {
	t.Helper()
	for pages = 1; ; pages++ {
		if pages > 10_000 {
			t.Fatalf("ListTasks(%+v): paging did not end", p)
		}
		page, err := s.ListTasks(ctx, p)
		if err != nil {
			t.Fatalf("ListTasks(%+v): %v", p, err)
		}
		if len(page.Tasks) > p.Limit {
			t.Fatalf("ListTasks(limit %d) returned %d tasks", p.Limit, len(page.Tasks))
		}
		for _, tk := range page.Tasks {
			if len(ts) > 0 && tk.ID <= ts[len(ts)-1].ID {
				t.Fatalf("ListTasks(%+v): %s listed after %s", p, tk.ID, ts[len(ts)-1].ID)
			}
			ts = append(ts, tk)
		}
		if page.Next == "" {
			return ts, pages
		}
		if page.Next <= p.After {
			t.Fatalf("ListTasks(%+v): Next %q does not move past After", p, page.Next)
		}
		p.After = page.Next
	}
}

func idsOf(ts []task.Task) []string {
	out := make([]string, len(ts))
	for i, tk := range ts {
		out[i] = tk.ID
	}
	return out
}

func testListFilters(t *testing.T, newStore NewStoreFunc) {
	ctx, s := setup(t, newStore)
	// 60 tasks of q created a second apart (by their ids), over three
	// hosts, the ten priorities, run_at an hour apart from an hour ago,
	// every fifth with a key; and a neighbour queue that must never show.
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	hosts := []string{"http://a.example:8080/x", "https://B.Example/y", "http://[::1]:9/z"}
	var nts []store.NewTask
	for i := range 60 {
		nt := newTask("q")
		nt.ID = idAt(base.Add(time.Duration(i) * time.Second))
		nt.Target.URL = hosts[i%3]
		nt.Priority = i % 10
		nt.RunAt = base.Add(time.Duration(i%4) * time.Hour)
		if i%5 == 0 {
			nt.IdempotencyKey = fmt.Sprintf("key-%d", i)
		}
		nts = append(nts, nt)
	}
	for range 5 {
		other := newTask("other")
		other.Target.URL = hosts[0]
		nts = append(nts, other)
	}
	mustEnqueue(t, ctx, s, shuffled(nts)...)
	// A few tasks in other states, for the state filter.
	all, _ := listAll(t, ctx, s, store.ListParams{Queue: "q", Limit: 1000})
	if len(all) != 60 {
		t.Fatalf("listed %d tasks of q, want 60", len(all))
	}
	for _, tk := range all[:6] {
		if _, err := s.CancelTask(ctx, tk.ID); err != nil {
			t.Fatal(err)
		}
	}
	all, _ = listAll(t, ctx, s, store.ListParams{Queue: "q", Limit: 1000})

	prio := func(n int) *int { return &n }
	for _, tc := range []struct {
		name string
		p    store.ListParams
		want int // tasks that match
	}{
		{"priority", store.ListParams{Priority: prio(3)}, 6},
		{"host", store.ListParams{TargetHost: "a.example"}, 20},
		{"host, any case", store.ListParams{TargetHost: "b.EXAMPLE"}, 20},
		{"host, IPv6", store.ListParams{TargetHost: "::1"}, 20},
		{"host and priority", store.ListParams{TargetHost: "a.example", Priority: prio(0)}, 2},
		{"key", store.ListParams{IdempotencyKey: "key-15"}, 1},
		{"key and a priority it lacks", store.ListParams{IdempotencyKey: "key-15", Priority: prio(1)}, 0},
		{"unknown key", store.ListParams{IdempotencyKey: "nope"}, 0},
		{"created range", store.ListParams{CreatedAfter: base.Add(10 * time.Second), CreatedBefore: base.Add(20 * time.Second)}, 10},
		{"created after", store.ListParams{CreatedAfter: base.Add(55*time.Second + 500*time.Microsecond)}, 5},
		{"created before the first", store.ListParams{CreatedBefore: base}, 0},
		{"run range", store.ListParams{RunAfter: base.Add(time.Hour), RunBefore: base.Add(3 * time.Hour)}, 30},
		{"state and host", store.ListParams{State: task.Cancelled, TargetHost: "a.example"}, 2},
		{"state and created range", store.ListParams{State: task.Available, CreatedBefore: base.Add(10 * time.Second)}, 2},
		{"everything", store.ListParams{State: task.Available, Priority: prio(7), TargetHost: "a.example",
			CreatedAfter: base, CreatedBefore: base.Add(time.Hour), RunAfter: base.Add(-time.Hour), RunBefore: base.Add(4 * time.Hour)}, 1},
	} {
		tc.p.Queue = "q"
		var want []string
		for _, tk := range all {
			if tc.p.Match(tk) {
				want = append(want, tk.ID)
			}
		}
		if len(want) != tc.want {
			t.Fatalf("%s: %d tasks match by ListParams.Match, want %d (the test's data is off)", tc.name, len(want), tc.want)
		}
		for _, limit := range []int{1, 3, 1000} {
			p := tc.p
			p.Limit = limit
			got, pages := listAll(t, ctx, s, p)
			if !slices.Equal(idsOf(got), want) {
				t.Errorf("%s, limit %d: listed %v, want %v", tc.name, limit, idsOf(got), want)
			}
			// Pages: at most one per Limit matches, or per ScanFactor ×
			// Limit tasks of the range, plus a last one.
			if most := len(want)/limit + len(all)/(store.ScanFactor*limit) + 2; pages > most {
				t.Errorf("%s, limit %d: %d pages, want at most %d", tc.name, limit, pages, most)
			}
		}
	}

	t.Run("ScanIsBounded", func(t *testing.T) {
		// Priority 9 is 6 of 60 tasks, 9 positions apart: a page of 1
		// scans 10 tasks at most, so some pages are empty, but none is
		// cut before a match it could reach, and Next moves on.
		p := store.ListParams{Queue: "q", Limit: 1, Priority: prio(9)}
		page, err := s.ListTasks(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Tasks) != 1 || page.Tasks[0].ID != all[9].ID || page.Next != all[9].ID {
			t.Errorf("first page = %v, next %q; want [%s] next %s", idsOf(page.Tasks), page.Next, all[9].ID, all[9].ID)
		}
		// Task i has priority i%10 and host a.example when i%3 == 0.
		// From task 9, a scan of 10 (tasks 10 to 19) finds task 14.
		p.After, p.Priority = all[9].ID, prio(4)
		page, err = s.ListTasks(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Tasks) != 1 || page.Tasks[0].ID != all[14].ID {
			t.Errorf("priority 4 after task 9 = %v, want [%s]", idsOf(page.Tasks), all[14].ID)
		}
		// Priority 4 on a.example: tasks 24 and 54. From task 24, the
		// scan of tasks 25 to 34 finds none: an empty page that goes on
		// after task 34, where the scan stopped; two more reach 54.
		p.After, p.TargetHost = all[24].ID, "a.example"
		for _, want := range []struct {
			ids  []string
			next string
		}{{nil, all[34].ID}, {nil, all[44].ID}, {[]string{all[54].ID}, all[54].ID}, {nil, ""}} {
			page, err = s.ListTasks(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(idsOf(page.Tasks), append([]string{}, want.ids...)) || page.Next != want.next {
				t.Errorf("after %s: page %v next %q; want %v next %q", p.After, idsOf(page.Tasks), page.Next, want.ids, want.next)
			}
			p.After = page.Next
		}
	})

	t.Run("UnknownQueue", func(t *testing.T) {
		page, err := s.ListTasks(ctx, store.ListParams{Queue: "nope", Limit: 5, Priority: prio(1)})
		if err != nil || len(page.Tasks) != 0 || page.Next != "" {
			t.Errorf("ListTasks(unknown queue, filtered) = %v, %q, %v; want empty, no next", idsOf(page.Tasks), page.Next, err)
		}
	})
}

// checkBulk holds bulk results to what each id should have come to.
func checkBulk(t *testing.T, what string, got []store.BulkResult, ids []string, want map[string]error, state map[string]task.State) {
	t.Helper()
	if len(got) != len(ids) {
		t.Fatalf("%s: %d results for %d ids", what, len(got), len(ids))
	}
	for i, r := range got {
		if r.ID != ids[i] {
			t.Errorf("%s: result %d is for %s, want %s", what, i, r.ID, ids[i])
		}
		w := want[ids[i]]
		if (w == nil) != (r.Err == nil) || w != nil && !errors.Is(r.Err, w) {
			t.Errorf("%s: %s: err %v, want %v", what, r.ID, r.Err, w)
		}
		if r.State != state[ids[i]] {
			t.Errorf("%s: %s: state %q, want %q", what, r.ID, r.State, state[ids[i]])
		}
	}
}

func testBulk(t *testing.T, newStore NewStoreFunc) {
	t.Run("CancelTasks", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{
			task.Scheduled: 1, task.Available: 2, task.Running: 1, task.Retrying: 1,
			task.Succeeded: 1, task.Failed: 1, task.Cancelled: 1,
		})
		other := enqueueOne(t, ctx, s, newTask("other"))
		running := mustGet(t, ctx, s, ids[task.Running][0])
		want, state := map[string]error{}, map[string]task.State{}
		var call []string
		for _, st := range task.States {
			for _, id := range ids[st] {
				call = append(call, id)
				if st.Final() {
					want[id], state[id] = store.ErrConflict, st
				} else {
					state[id] = task.Cancelled
				}
			}
		}
		missing := newID()
		call = append(call, other.ID, missing)
		want[other.ID], want[missing] = store.ErrNotFound, store.ErrNotFound
		res, err := s.CancelTasks(ctx, "q", call)
		if err != nil {
			t.Fatalf("CancelTasks: %v", err)
		}
		checkBulk(t, "CancelTasks", res, call, want, state)
		for _, id := range call[:len(call)-2] {
			tk := checkState(t, ctx, s, id, state[id])
			if !tk.State.Final() || tk.FinishedAt == nil {
				t.Errorf("task %s: state %s finished %v", id, tk.State, tk.FinishedAt)
			}
		}
		checkState(t, ctx, s, other.ID, task.Available)
		// The running attempt's lease is gone: its completion is refused.
		completeOne(t, ctx, s, store.Completion{LeaseRef: store.LeaseRef{TaskID: running.ID, Token: 0}, Outcome: store.Succeeded}, false)
		checkCountsEverywhere(t, ctx, s, "after CancelTasks", "q", "other")
		// Again: every one is final now.
		res, err = s.CancelTasks(ctx, "q", ids[task.Available])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			checkIs(t, "CancelTasks(cancelled)", r.Err, store.ErrConflict)
		}
		checkCountsEverywhere(t, ctx, s, "after a second CancelTasks", "q")
	})

	t.Run("CancelRunningRefusesCompletion", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		res, err := s.CancelTasks(ctx, "q", []string{tk.ID})
		if err != nil || len(res) != 1 || res[0].Err != nil {
			t.Fatalf("CancelTasks(running) = %+v, %v", res, err)
		}
		completeOne(t, ctx, s, done(l, store.Succeeded), false)
		checkState(t, ctx, s, tk.ID, task.Cancelled)
	})

	t.Run("RetryTasks", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{
			task.Scheduled: 1, task.Available: 1, task.Retrying: 1, task.Succeeded: 1, task.Failed: 3, task.Cancelled: 2,
		})
		ch := subscribe(t, s)
		want, state := map[string]error{}, map[string]task.State{}
		var call []string
		for _, st := range task.States {
			for _, id := range ids[st] {
				call = append(call, id)
				if st == task.Failed || st == task.Cancelled {
					state[id] = task.Available
				} else {
					want[id], state[id] = store.ErrConflict, st
				}
			}
		}
		missing := newID()
		call = append([]string{missing}, call...)
		want[missing] = store.ErrNotFound
		before := time.Now()
		res, err := s.RetryTasks(ctx, "q", call)
		if err != nil {
			t.Fatalf("RetryTasks: %v", err)
		}
		after := time.Now()
		checkBulk(t, "RetryTasks", res, call, want, state)
		expectSignal(t, ch, "RetryTasks")
		for _, id := range append(ids[task.Failed], ids[task.Cancelled]...) {
			tk := checkState(t, ctx, s, id, task.Available)
			if tk.Attempt != 0 || tk.FinishedAt != nil {
				t.Errorf("task %s after RetryTasks: attempt %d finished %v", id, tk.Attempt, tk.FinishedAt)
			}
			checkBetween(t, "RunAt after RetryTasks", tk.RunAt, before, after)
		}
		checkCountsEverywhere(t, ctx, s, "after RetryTasks", "q")
		// They run again from attempt 1.
		for _, l := range leaseN(t, ctx, s, 6, time.Minute) {
			if l.Task.Attempt != 1 {
				t.Errorf("retried task %s leased at attempt %d, want 1", l.Task.ID, l.Task.Attempt)
			}
		}
	})

	t.Run("RetryState", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{task.Failed: 7, task.Cancelled: 2, task.Succeeded: 2})
		populate(t, ctx, s, "other", map[task.State]int{task.Failed: 2})
		ch := subscribe(t, s)
		failed := sortedIDs(ids[task.Failed])
		var (
			after string
			moved int
		)
		for call := 0; ; call++ {
			if call > 5 {
				t.Fatal("the sweep did not end")
			}
			sw, err := s.RetryState(ctx, store.SweepParams{Queue: "q", State: task.Failed, After: after, Limit: 3})
			if err != nil {
				t.Fatalf("RetryState: %v", err)
			}
			wantN := min(3, 7-moved)
			if sw.Changed != wantN || sw.Last != failed[moved+wantN-1] || sw.More != (moved+wantN < 7) {
				t.Errorf("call %d = %+v; want %d changed, last %s, more %v", call, sw, wantN, failed[moved+wantN-1], moved+wantN < 7)
			}
			if call == 0 {
				expectSignal(t, ch, "RetryState")
				// A retried task that fails again is behind the cursor:
				// the sweep does not retry it twice.
				ls := leaseN(t, ctx, s, 3, time.Minute)
				var cs []store.Completion
				for _, l := range ls {
					cs = append(cs, done(l, store.Fail))
				}
				mustComplete(t, ctx, s, cs...)
			}
			moved += sw.Changed
			after = sw.Last
			if !sw.More {
				break
			}
		}
		if moved != 7 {
			t.Errorf("the sweep retried %d, want 7", moved)
		}
		q := mustQueue(t, ctx, s, "q")
		if q.Counts[task.Failed] != 3 || q.Counts[task.Available] != 4 || q.Counts[task.Cancelled] != 2 {
			t.Errorf("counts after the sweep = %v; want 3 failed again, 4 available, 2 cancelled", q.Counts)
		}
		checkCountsEverywhere(t, ctx, s, "after RetryState", "q", "other")
		if c := mustQueue(t, ctx, s, "other").Counts[task.Failed]; c != 2 {
			t.Errorf("the other queue's failed count = %d, want 2 (untouched)", c)
		}
		// Cancelled tasks sweep the same way; an empty state answers 0.
		sw, err := s.RetryState(ctx, store.SweepParams{Queue: "q", State: task.Cancelled, Limit: 1000})
		if err != nil || sw.Changed != 2 || sw.More {
			t.Errorf("RetryState(cancelled) = %+v, %v; want 2 changed, no more", sw, err)
		}
		sw, err = s.RetryState(ctx, store.SweepParams{Queue: "q", State: task.Cancelled, Limit: 1000})
		if err != nil || sw.Changed != 0 || sw.More {
			t.Errorf("RetryState(none left) = %+v, %v; want nothing", sw, err)
		}
		_, err = s.RetryState(ctx, store.SweepParams{Queue: "q", State: task.Succeeded, Limit: 10})
		checkIs(t, "RetryState(succeeded)", err, store.ErrConflict)
		checkCountsEverywhere(t, ctx, s, "after RetryState(cancelled)", "q")
	})

	t.Run("CancelState", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{task.Available: 5, task.Scheduled: 2, task.Succeeded: 1})
		sw, err := s.CancelState(ctx, store.SweepParams{Queue: "q", State: task.Available, Limit: 3})
		if err != nil || sw.Changed != 3 || !sw.More {
			t.Fatalf("CancelState = %+v, %v; want 3 changed, more", sw, err)
		}
		sw, err = s.CancelState(ctx, store.SweepParams{Queue: "q", State: task.Available, After: sw.Last, Limit: 3})
		if err != nil || sw.Changed != 2 || sw.More {
			t.Fatalf("CancelState, second call = %+v, %v; want 2 changed, no more", sw, err)
		}
		for _, id := range ids[task.Available] {
			checkState(t, ctx, s, id, task.Cancelled)
		}
		for _, id := range ids[task.Scheduled] {
			checkState(t, ctx, s, id, task.Scheduled)
		}
		_, err = s.CancelState(ctx, store.SweepParams{Queue: "q", State: task.Succeeded, Limit: 10})
		checkIs(t, "CancelState(succeeded)", err, store.ErrConflict)
		checkCountsEverywhere(t, ctx, s, "after CancelState", "q")
	})

	t.Run("AtMostMaxBulk", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := make([]string, store.MaxBulk+1)
		for i := range ids {
			ids[i] = newID()
		}
		if _, err := s.CancelTasks(ctx, "q", ids); err == nil {
			t.Errorf("CancelTasks(%d ids) succeeded; want an error", len(ids))
		}
		res, err := s.RetryTasks(ctx, "q", ids[:store.MaxBulk])
		if err != nil || len(res) != store.MaxBulk {
			t.Fatalf("RetryTasks(%d unknown ids) = %d results, %v", store.MaxBulk, len(res), err)
		}
		for _, r := range res {
			checkIs(t, "RetryTasks(unknown)", r.Err, store.ErrNotFound)
		}
	})
}
