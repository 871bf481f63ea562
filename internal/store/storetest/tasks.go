package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// mustList lists tasks and checks the page respects p.Limit.
func mustList(t *testing.T, s store.Store, p store.ListParams) []task.Task {
	t.Helper()
	listPage, err := s.ListTasks(t.Context(), p)
	list := listPage.Tasks
	if err != nil {
		t.Fatalf("ListTasks(%+v): %v", p, err)
	}
	if len(list) > p.Limit {
		t.Fatalf("ListTasks(limit %d) returned %d tasks", p.Limit, len(list))
	}
	return list
}

func testTasks(t *testing.T, newStore NewStoreFunc) {
	t.Run("GetTaskNotFound", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		enqueueOne(t, ctx, s, newTask("q"))
		_, err := s.GetTask(ctx, newID())
		checkIs(t, "GetTask(unknown id)", err, store.ErrNotFound)
	})

	t.Run("ListOrderAndPaging", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// Insert in an order unrelated to ids, across batches, with a
		// neighbour queue that must never show up.
		all := shuffled(append(newTasks("q", 25), newTasks("other", 5)...))
		var want []string
		for _, nt := range all {
			if nt.Queue == "q" {
				want = append(want, nt.ID)
			}
		}
		want = sortedIDs(want)
		for i := 0; i < len(all); i += 10 {
			mustEnqueue(t, ctx, s, all[i:i+10]...)
		}
		var got []string
		after := ""
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatalf("paging did not end; got %d ids so far", len(got))
			}
			list := mustList(t, s, store.ListParams{Queue: "q", After: after, Limit: 7})
			if wantLen := min(7, len(want)-len(got)); len(list) != wantLen {
				t.Errorf("page %d has %d tasks, want %d", page, len(list), wantLen)
			}
			if len(list) == 0 {
				break
			}
			for _, tk := range list {
				if tk.Queue != "q" {
					t.Errorf("ListTasks(q) returned task %s of queue %s", tk.ID, tk.Queue)
				}
			}
			got = append(got, taskIDs(list)...)
			after = list[len(list)-1].ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("paged ids =\n%v\nwant (ascending, no gaps or repeats)\n%v", got, want)
		}
		whole := mustList(t, s, store.ListParams{Queue: "q", Limit: 1000})
		if ids := taskIDs(whole); !slices.Equal(ids, want) {
			t.Errorf("one page of 1000 = %v, want %v", ids, want)
		}
	})

	t.Run("ListLimit", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		nts := newTasks("q", 10)
		mustEnqueue(t, ctx, s, shuffled(nts)...)
		var ids []string
		for _, nt := range nts {
			ids = append(ids, nt.ID)
		}
		want := sortedIDs(ids)
		if got := taskIDs(mustList(t, s, store.ListParams{Queue: "q", Limit: 3})); !slices.Equal(got, want[:3]) {
			t.Errorf("limit 3 = %v, want %v", got, want[:3])
		}
		if got := taskIDs(mustList(t, s, store.ListParams{Queue: "q", Limit: 1, After: want[8]})); !slices.Equal(got, want[9:]) {
			t.Errorf("limit 1 after the 9th = %v, want %v", got, want[9:])
		}
		if got := mustList(t, s, store.ListParams{Queue: "q", Limit: 5, After: want[9]}); len(got) != 0 {
			t.Errorf("after the last id: %d tasks, want 0", len(got))
		}
	})

	t.Run("ListStateFilter", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		counts := map[task.State]int{
			task.Scheduled: 1, task.Available: 2, task.Running: 3, task.Retrying: 4,
			task.Succeeded: 2, task.Failed: 3, task.Cancelled: 1,
		}
		ids := populate(t, ctx, s, "q", counts)
		total := 0
		for _, st := range task.States {
			list := mustList(t, s, store.ListParams{Queue: "q", State: st, Limit: 1000})
			for _, tk := range list {
				if tk.State != st {
					t.Errorf("ListTasks(state %s) returned task %s in state %s", st, tk.ID, tk.State)
				}
			}
			if got, want := taskIDs(list), sortedIDs(ids[st]); !slices.Equal(got, want) {
				t.Errorf("ListTasks(state %s) = %v, want %v", st, got, want)
			}
			total += counts[st]
		}
		if got := mustList(t, s, store.ListParams{Queue: "q", Limit: 1000}); len(got) != total {
			t.Errorf("ListTasks(every state) returned %d tasks, want %d", len(got), total)
		}
		// Filter and cursor together.
		ret := sortedIDs(ids[task.Retrying])
		got := taskIDs(mustList(t, s, store.ListParams{Queue: "q", State: task.Retrying, After: ret[1], Limit: 1}))
		if !slices.Equal(got, ret[2:3]) {
			t.Errorf("retrying after the 2nd, limit 1 = %v, want %v", got, ret[2:3])
		}
	})

	t.Run("ListUnknownQueue", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		enqueueOne(t, ctx, s, newTask("q"))
		listPage, err := s.ListTasks(ctx, store.ListParams{Queue: "nope", Limit: 10})
		list := listPage.Tasks
		if err != nil {
			t.Fatalf("ListTasks(unknown queue): %v, want no error", err)
		}
		if len(list) != 0 {
			t.Errorf("ListTasks(unknown queue) returned %d tasks", len(list))
		}
	})
}

func testCancel(t *testing.T, newStore NewStoreFunc) {
	t.Run("Pending", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{task.Scheduled: 1, task.Available: 1, task.Retrying: 1})
		for _, st := range []task.State{task.Scheduled, task.Available, task.Retrying} {
			id := ids[st][0]
			before := time.Now()
			tk, err := s.CancelTask(ctx, id)
			after := time.Now()
			if err != nil {
				t.Fatalf("CancelTask(%s task): %v", st, err)
			}
			if tk.State != task.Cancelled || tk.ID != id {
				t.Errorf("CancelTask(%s task) returned %s in state %s, want %s cancelled", st, tk.ID, tk.State, id)
			}
			// Cancelled is final, and pruning goes by finished_at.
			if tk.FinishedAt == nil {
				t.Errorf("CancelTask(%s task): FinishedAt nil", st)
			} else {
				checkBetween(t, "FinishedAt", *tk.FinishedAt, before, after)
			}
			checkState(t, ctx, s, id, task.Cancelled)
		}
		// Nothing cancelled is leased, even once due.
		if _, err := s.PromoteDue(ctx); err != nil {
			t.Fatalf("PromoteDue: %v", err)
		}
		if ls := mustLease(t, ctx, s, 10, time.Minute); len(ls) != 0 {
			t.Errorf("leased %d cancelled tasks", len(ls))
		}
	})

	t.Run("Running", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		tk := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, tk.ID, time.Minute)
		got, err := s.CancelTask(ctx, tk.ID)
		if err != nil {
			t.Fatalf("CancelTask(running): %v", err)
		}
		if got.State != task.Cancelled || got.FinishedAt == nil {
			t.Errorf("CancelTask(running) = state %s, finished %v; want cancelled with finished_at", got.State, got.FinishedAt)
		}
		lost, err := s.ExtendLeases(ctx, []store.LeaseRef{ref(l)}, time.Minute)
		if err != nil {
			t.Fatalf("ExtendLeases: %v", err)
		}
		if !slices.Contains(lost, ref(l)) {
			t.Errorf("ExtendLeases lost = %v, want it to report the cancelled lease %v", lost, ref(l))
		}
		completeOne(t, ctx, s, done(l, store.Succeeded), false)
		checkState(t, ctx, s, tk.ID, task.Cancelled)
		if q := mustQueue(t, ctx, s, "q"); q.Counts[task.Running] != 0 {
			t.Errorf("running count = %d after cancel, want 0", q.Counts[task.Running])
		}
	})

	t.Run("Final", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{task.Succeeded: 1, task.Failed: 1, task.Cancelled: 1})
		for _, st := range []task.State{task.Succeeded, task.Failed, task.Cancelled} {
			_, err := s.CancelTask(ctx, ids[st][0])
			checkIs(t, "CancelTask("+string(st)+" task)", err, store.ErrConflict)
			checkState(t, ctx, s, ids[st][0], st)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		_, err := s.CancelTask(ctx, newID())
		checkIs(t, "CancelTask(unknown id)", err, store.ErrNotFound)
	})
}

func testRetryTask(t *testing.T, newStore NewStoreFunc) {
	t.Run("FailedAndCancelled", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		failed := enqueueOne(t, ctx, s, newTask("q"))
		l := leaseOne(t, ctx, s, failed.ID, time.Minute)
		c := done(l, store.Fail)
		c.LastError, c.LastStatus = "400 Bad Request", 400
		completeOne(t, ctx, s, c, true)
		cancelled := enqueueOne(t, ctx, s, newTask("q"))
		if _, err := s.CancelTask(ctx, cancelled.ID); err != nil {
			t.Fatalf("CancelTask: %v", err)
		}
		for _, tc := range []struct {
			id      string
			lastErr string
		}{{failed.ID, "400 Bad Request"}, {cancelled.ID, ""}} {
			before := time.Now()
			got, err := s.RetryTask(ctx, tc.id)
			after := time.Now()
			if err != nil {
				t.Fatalf("RetryTask: %v", err)
			}
			for _, tk := range []task.Task{got, mustGet(t, ctx, s, tc.id)} {
				if tk.State != task.Available || tk.Attempt != 0 || tk.FinishedAt != nil {
					t.Errorf("task %s after RetryTask: state %s, attempt %d, finished %v; want available, 0, nil", tc.id, tk.State, tk.Attempt, tk.FinishedAt)
				}
				if tk.LastError != tc.lastErr {
					t.Errorf("task %s LastError = %q, want it kept: %q", tc.id, tk.LastError, tc.lastErr)
				}
				checkBetween(t, "RunAt after RetryTask", tk.RunAt, before, after)
			}
		}
		// Both run again from attempt 1.
		for _, l := range leaseN(t, ctx, s, 2, time.Minute) {
			if l.Task.Attempt != 1 {
				t.Errorf("retried task %s leased at attempt %d, want 1", l.Task.ID, l.Task.Attempt)
			}
		}
	})

	t.Run("OtherStates", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ids := populate(t, ctx, s, "q", map[task.State]int{
			task.Scheduled: 1, task.Available: 1, task.Running: 1, task.Retrying: 1, task.Succeeded: 1,
		})
		for _, st := range []task.State{task.Scheduled, task.Available, task.Running, task.Retrying, task.Succeeded} {
			_, err := s.RetryTask(ctx, ids[st][0])
			checkIs(t, "RetryTask("+string(st)+" task)", err, store.ErrConflict)
			checkState(t, ctx, s, ids[st][0], st)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		_, err := s.RetryTask(ctx, newID())
		checkIs(t, "RetryTask(unknown id)", err, store.ErrNotFound)
	})
}
