package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// checkCounts fails unless counts has every state, each equal to want
// (absent from want = 0).
func checkCounts(t *testing.T, queue string, counts map[task.State]int64, want map[task.State]int64) {
	t.Helper()
	for _, st := range task.States {
		got, ok := counts[st]
		if !ok {
			t.Errorf("queue %s: Counts has no %s entry (every state must be present)", queue, st)
			continue
		}
		if got != want[st] {
			t.Errorf("queue %s: Counts[%s] = %d, want %d", queue, st, got, want[st])
		}
	}
	if len(counts) != len(task.States) {
		t.Errorf("queue %s: Counts has %d entries, want %d: %v", queue, len(counts), len(task.States), counts)
	}
}

func testQueues(t *testing.T, newStore NewStoreFunc) {
	t.Run("CountsEveryState", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// Distinct numbers so that a swapped state shows.
		made := map[task.State]int{
			task.Scheduled: 1, task.Available: 2, task.Running: 3, task.Retrying: 4,
			task.Succeeded: 5, task.Failed: 6, task.Cancelled: 7,
		}
		populate(t, ctx, s, "busy", made)
		mustUpdateQueue(t, ctx, s, "idle", task.QueuePatch{})
		want := make(map[task.State]int64)
		for st, n := range made {
			want[st] = int64(n)
		}
		checkCounts(t, "busy", mustQueue(t, ctx, s, "busy").Counts, want)
		checkCounts(t, "idle", mustQueue(t, ctx, s, "idle").Counts, nil)
		qs, err := s.ListQueues(ctx)
		if err != nil {
			t.Fatalf("ListQueues: %v", err)
		}
		if len(qs) != 2 {
			t.Fatalf("ListQueues returned %d queues, want 2", len(qs))
		}
		checkCounts(t, "busy (ListQueues)", qs[0].Counts, want)
		checkCounts(t, "idle (ListQueues)", qs[1].Counts, nil)
	})

	t.Run("UpdateQueueCreatesAndPatches", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		conc := 3
		before := time.Now()
		q := mustUpdateQueue(t, ctx, s, "new", task.QueuePatch{Concurrency: &conc})
		after := time.Now()
		want := task.Queue{Name: "new", Concurrency: 3, MaxAttempts: task.DefaultMaxAttempts, Timeout: task.DefaultTimeout,
			Weight: task.DefaultWeight, RetryStatuses: task.DefaultRetryStatuses}
		checkQueue(t, "created by UpdateQueue", q, want)
		checkBetween(t, "CreatedAt", q.CreatedAt, before, after)
		checkBetween(t, "UpdatedAt", q.UpdatedAt, before, after)
		checkCounts(t, "new", q.Counts, nil)

		rate := 2.5
		q = mustUpdateQueue(t, ctx, s, "new", task.QueuePatch{RateLimit: &rate})
		want.RateLimit = 2.5
		checkQueue(t, "after patching rate_limit", q, want)

		maxAttempts, timeout, paused := 9, 1500*time.Millisecond, true
		q = mustUpdateQueue(t, ctx, s, "new", task.QueuePatch{MaxAttempts: &maxAttempts, Timeout: &timeout, Paused: &paused})
		want.MaxAttempts, want.Timeout, want.Paused = 9, timeout, true
		checkQueue(t, "after patching max_attempts, timeout, paused", q, want)

		zero := 0
		q = mustUpdateQueue(t, ctx, s, "new", task.QueuePatch{Concurrency: &zero})
		want.Concurrency = 0
		checkQueue(t, "after setting concurrency back to 0", q, want)

		// An empty patch changes nothing, and GetQueue agrees.
		checkQueue(t, "after an empty patch", mustUpdateQueue(t, ctx, s, "new", task.QueuePatch{}), want)
		checkQueue(t, "GetQueue", mustQueue(t, ctx, s, "new"), want)

		// Patching a queue that has tasks keeps them and their counts.
		mustEnqueue(t, ctx, s, newTasks("new", 2)...)
		unpaused := false
		q = mustUpdateQueue(t, ctx, s, "new", task.QueuePatch{Paused: &unpaused})
		want.Paused = false
		checkQueue(t, "after unpausing", q, want)
		checkCounts(t, "new", q.Counts, map[task.State]int64{task.Available: 2})
	})

	t.Run("ListQueuesByName", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		qs, err := s.ListQueues(ctx)
		if err != nil {
			t.Fatalf("ListQueues on an empty store: %v", err)
		}
		if len(qs) != 0 {
			t.Errorf("empty store lists %d queues", len(qs))
		}
		mustEnqueue(t, ctx, s, newTask("mango"))
		mustUpdateQueue(t, ctx, s, "apple", task.QueuePatch{})
		mustEnqueue(t, ctx, s, newTask("zebra"), newTask("banana"), newTask("mango"))
		qs, err = s.ListQueues(ctx)
		if err != nil {
			t.Fatalf("ListQueues: %v", err)
		}
		var names []string
		for _, q := range qs {
			names = append(names, q.Name)
		}
		if want := []string{"apple", "banana", "mango", "zebra"}; !slices.Equal(names, want) {
			t.Errorf("ListQueues names = %v, want %v", names, want)
		}
		for _, q := range qs {
			want := map[task.State]int64{task.Available: map[string]int64{"banana": 1, "mango": 2, "zebra": 1}[q.Name]}
			checkCounts(t, q.Name, q.Counts, want)
		}
	})

	t.Run("WeightAndRetryStatuses", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// Defaults, on a queue made by Enqueue and on one made by a patch
		// of another setting.
		mustEnqueue(t, ctx, s, newTask("enqueued"))
		conc := 2
		mustUpdateQueue(t, ctx, s, "patched", task.QueuePatch{Concurrency: &conc})
		def := task.Queue{MaxAttempts: task.DefaultMaxAttempts, Timeout: task.DefaultTimeout,
			Weight: task.DefaultWeight, RetryStatuses: task.DefaultRetryStatuses}
		wantEnq, wantPat := def, def
		wantEnq.Name, wantPat.Name, wantPat.Concurrency = "enqueued", "patched", 2
		checkQueue(t, "queue made by Enqueue", mustQueue(t, ctx, s, "enqueued"), wantEnq)
		checkQueue(t, "queue made by UpdateQueue", mustQueue(t, ctx, s, "patched"), wantPat)

		weight := 7
		rs := task.MustRetryStatuses("503, 429, 500-502, timeout")
		q := mustUpdateQueue(t, ctx, s, "patched", task.QueuePatch{Weight: &weight, RetryStatuses: &rs})
		wantPat.Weight, wantPat.RetryStatuses = 7, rs
		checkQueue(t, "after patching weight and retry_statuses", q, wantPat)
		checkQueue(t, "GetQueue", mustQueue(t, ctx, s, "patched"), wantPat)
		if got := q.RetryStatuses.String(); got != "429,500-503,timeout" {
			t.Errorf("retry_statuses read back as %q, want the canonical 429,500-503,timeout", got)
		}
		// Other patches leave them alone; the empty set (nothing retries)
		// is a setting of its own, not the default.
		paused := true
		wantPat.Paused = true
		checkQueue(t, "after patching paused", mustUpdateQueue(t, ctx, s, "patched", task.QueuePatch{Paused: &paused}), wantPat)
		none := task.RetryStatuses{}
		maxWeight := task.MaxWeight
		q = mustUpdateQueue(t, ctx, s, "patched", task.QueuePatch{Weight: &maxWeight, RetryStatuses: &none})
		wantPat.Weight, wantPat.RetryStatuses = task.MaxWeight, none
		checkQueue(t, "after patching weight to the maximum and retry_statuses to nothing", q, wantPat)

		// ListQueueSettings: every queue by name, settings only.
		qs, err := s.ListQueueSettings(ctx)
		if err != nil {
			t.Fatalf("ListQueueSettings: %v", err)
		}
		if len(qs) != 2 {
			t.Fatalf("ListQueueSettings returned %d queues, want 2", len(qs))
		}
		checkQueue(t, "ListQueueSettings[0]", qs[0], wantEnq)
		checkQueue(t, "ListQueueSettings[1]", qs[1], wantPat)
		for _, q := range qs {
			if q.Counts != nil {
				t.Errorf("ListQueueSettings: queue %s has Counts %v, want nil (settings only)", q.Name, q.Counts)
			}
			if q.CreatedAt.IsZero() || q.UpdatedAt.IsZero() {
				t.Errorf("ListQueueSettings: queue %s has zero times", q.Name)
			}
		}
	})

	t.Run("ListQueueSettingsEmpty", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		qs, err := s.ListQueueSettings(ctx)
		if err != nil || qs == nil || len(qs) != 0 {
			t.Errorf("ListQueueSettings on an empty store = %v, %v; want an empty, non-nil list", qs, err)
		}
	})

	t.Run("GetQueueNotFound", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustEnqueue(t, ctx, s, newTask("q"))
		_, err := s.GetQueue(ctx, "nope")
		checkIs(t, "GetQueue(unknown)", err, store.ErrNotFound)
	})
}

// checkQueue compares a queue's settings (not times or counts) with want.
func checkQueue(t *testing.T, what string, got, want task.Queue) {
	t.Helper()
	if got.Name != want.Name || got.Concurrency != want.Concurrency || got.RateLimit != want.RateLimit ||
		got.MaxAttempts != want.MaxAttempts || got.Timeout != want.Timeout || got.Paused != want.Paused ||
		got.Weight != want.Weight || !got.RetryStatuses.Equal(want.RetryStatuses) {
		t.Errorf("%s: queue = {name %s concurrency %d rate %v max_attempts %d timeout %v paused %v weight %d retry_statuses %q}, "+
			"want {name %s concurrency %d rate %v max_attempts %d timeout %v paused %v weight %d retry_statuses %q}",
			what, got.Name, got.Concurrency, got.RateLimit, got.MaxAttempts, got.Timeout, got.Paused, got.Weight, got.RetryStatuses,
			want.Name, want.Concurrency, want.RateLimit, want.MaxAttempts, want.Timeout, want.Paused, want.Weight, want.RetryStatuses)
	}
}
