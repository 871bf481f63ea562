package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// tally counts queue's tasks by state by listing every one of them: the
// figures Counts must agree with, however the driver keeps them.
func tally(t *testing.T, ctx context.Context, s store.Store, queue string) map[task.State]int64 {
	t.Helper()
	want := make(map[task.State]int64)
	after := ""
	for {
		res, err := s.ListTasks(ctx, store.ListParams{Queue: queue, After: after, Limit: 1000})
		page := res.Tasks
		if err != nil {
			t.Fatalf("ListTasks(%s): %v", queue, err)
		}
		for _, tk := range page {
			want[tk.State]++
		}
		if len(page) < 1000 {
			return want
		}
		after = page[len(page)-1].ID
	}
}

// checkCountsEverywhere holds every read of the counts (GetQueue,
// ListQueues, UpdateQueue) to a tally of each queue's tasks, before and
// after FoldCounts: counts are exact whether or not the upkeep has run.
func checkCountsEverywhere(t *testing.T, ctx context.Context, s store.Store, stage string, queues ...string) {
	t.Helper()
	for _, fold := range []bool{false, true} {
		when := stage
		if fold {
			if _, err := s.FoldCounts(ctx); err != nil {
				t.Fatalf("%s: FoldCounts: %v", stage, err)
			}
			when += ", folded"
		}
		listed, err := s.ListQueues(ctx)
		if err != nil {
			t.Fatalf("%s: ListQueues: %v", when, err)
		}
		byName := make(map[string]task.Queue, len(listed))
		for _, q := range listed {
			byName[q.Name] = q
		}
		for _, name := range queues {
			want := tally(t, ctx, s, name)
			checkCounts(t, name+" ("+when+", GetQueue)", mustQueue(t, ctx, s, name).Counts, want)
			checkCounts(t, name+" ("+when+", ListQueues)", byName[name].Counts, want)
			checkCounts(t, name+" ("+when+", UpdateQueue)", mustUpdateQueue(t, ctx, s, name, task.QueuePatch{}).Counts, want)
		}
	}
}

// testCounts: the counts by state follow every way a task enters or
// leaves a state (completion of each outcome, rescue, cancel, retry,
// prune), queue by queue, and stay exact while completions and folds run
// at once.
func testCounts(t *testing.T, newStore NewStoreFunc) {
	t.Run("ExactThroughEveryTransition", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		checkCountsEverywhere(t, ctx, s, "empty")
		nts := newTasks("q", 9)
		nts[5].MaxAttempts = 1 // its retry fails it
		mustEnqueue(t, ctx, s, nts...)
		mustEnqueue(t, ctx, s, newTasks("other", 2)...)
		future := newTask("q")
		future.RunAt = time.Now().Add(time.Hour)
		mustEnqueue(t, ctx, s, future)
		checkCountsEverywhere(t, ctx, s, "enqueued", "q", "other")

		ls := leaseN(t, ctx, s, 11, time.Hour)
		checkCountsEverywhere(t, ctx, s, "leased", "q", "other")
		byID := make(map[string]store.Lease, len(ls))
		for _, l := range ls {
			byID[l.Task.ID] = l
		}
		later := time.Now().Add(time.Hour)
		cs := []store.Completion{
			done(byID[nts[0].ID], store.Succeeded),
			done(byID[nts[1].ID], store.Succeeded),
			done(byID[nts[2].ID], store.Fail),
			done(byID[nts[3].ID], store.Fail),
			{LeaseRef: ref(byID[nts[4].ID]), Outcome: store.Retry, RetryAt: later},
			{LeaseRef: ref(byID[nts[5].ID]), Outcome: store.Retry, RetryAt: later}, // attempts spent: failed
			done(byID[nts[6].ID], store.Release),
			{LeaseRef: ref(byID[nts[7].ID]), Outcome: store.Defer, RetryAt: later},
		}
		for _, l := range ls {
			if l.Task.Queue == "other" {
				cs = append(cs, done(l, store.Succeeded))
				break
			}
		}
		for i, ok := range mustComplete(t, ctx, s, cs...) {
			if !ok {
				t.Fatalf("completion %d refused", i)
			}
		}
		// A completion the store refuses (already completed) counts nothing.
		completeOne(t, ctx, s, done(byID[nts[0].ID], store.Succeeded), false)
		checkCountsEverywhere(t, ctx, s, "completed", "q", "other")

		// Cancel a running task and a scheduled one; retry a failed and a
		// cancelled one; a refused cancel or retry counts nothing.
		for _, id := range []string{nts[8].ID, future.ID} {
			if _, err := s.CancelTask(ctx, id); err != nil {
				t.Fatalf("CancelTask: %v", err)
			}
		}
		if _, err := s.CancelTask(ctx, nts[0].ID); err == nil {
			t.Fatal("cancelling a succeeded task was accepted")
		}
		checkCountsEverywhere(t, ctx, s, "cancelled", "q", "other")
		for _, id := range []string{nts[2].ID, future.ID} {
			if _, err := s.RetryTask(ctx, id); err != nil {
				t.Fatalf("RetryTask: %v", err)
			}
		}
		if _, err := s.RetryTask(ctx, nts[0].ID); err == nil {
			t.Fatal("retrying a succeeded task was accepted")
		}
		checkCountsEverywhere(t, ctx, s, "retried", "q", "other")

		// A rescue that fails a task whose attempts are spent.
		spent := newTask("q")
		spent.MaxAttempts = 1
		mustEnqueue(t, ctx, s, spent)
		for _, l := range leaseN(t, ctx, s, 4, time.Millisecond) { // spent, nts[2], nts[6], future
			if l.Task.ID != spent.ID {
				completeOne(t, ctx, s, done(l, store.Succeeded), true)
			}
		}
		time.Sleep(20 * time.Millisecond)
		if n, err := s.RescueExpired(ctx); err != nil || n != 1 {
			t.Fatalf("RescueExpired = %d, %v; want 1", n, err)
		}
		checkState(t, ctx, s, spent.ID, task.Failed)
		checkCountsEverywhere(t, ctx, s, "rescued", "q", "other")

		// Prune in two steps, then everything final.
		if n, err := s.Prune(ctx, 0, 3); err != nil || n != 3 {
			t.Fatalf("Prune(limit 3) = %d, %v; want 3", n, err)
		}
		checkCountsEverywhere(t, ctx, s, "partly pruned", "q", "other")
		if _, err := s.Prune(ctx, 0, 1000); err != nil {
			t.Fatalf("Prune: %v", err)
		}
		checkCountsEverywhere(t, ctx, s, "pruned", "q", "other")
		for _, st := range []task.State{task.Succeeded, task.Failed, task.Cancelled} {
			if n := mustQueue(t, ctx, s, "q").Counts[st]; n != 0 {
				t.Errorf("after pruning every final task, q counts %d %s", n, st)
			}
		}
	})

	t.Run("ExactWhileFolding", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		const workers, perWorker, batch = 4, 60, 10
		mustEnqueue(t, ctx, s, newTasks("q", workers*perWorker)...)
		ls := leaseN(t, ctx, s, workers*perWorker, time.Hour)
		stop := make(chan struct{})
		folded := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					folded <- nil
					return
				default:
				}
				if _, err := s.FoldCounts(ctx); err != nil {
					folded <- err
					return
				}
			}
		}()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := ls[w*perWorker : (w+1)*perWorker]
				for i := 0; i < len(mine); i += batch {
					var cs []store.Completion
					for _, l := range mine[i : i+batch] {
						cs = append(cs, done(l, store.Succeeded))
					}
					if _, err := s.Complete(ctx, cs); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		if err := <-folded; err != nil {
			t.Fatalf("FoldCounts: %v", err)
		}
		close(errs)
		for err := range errs {
			t.Fatalf("Complete: %v", err)
		}
		checkCountsEverywhere(t, ctx, s, "completed while folding", "q")
		if n := mustQueue(t, ctx, s, "q").Counts[task.Succeeded]; n != workers*perWorker {
			t.Errorf("succeeded = %d, want %d", n, workers*perWorker)
		}
	})
}
