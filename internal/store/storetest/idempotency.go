package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// Fingerprints of two different requests.
var (
	requestA = []byte("request A: 32 bytes of a sha-256")
	requestB = []byte("request B: 32 bytes of a sha-256")
)

// keyedTask is a task for queue under key, fingerprinted fp.
func keyedTask(queue, key string, fp []byte) store.NewTask {
	nt := newTask(queue)
	nt.IdempotencyKey, nt.Fingerprint = key, fp
	return nt
}

// refusedBy checks that err is the *store.IdempotencyError want (its Err,
// Index, Queue, Key and TaskID).
func refusedBy(t *testing.T, what string, err error, want store.IdempotencyError) {
	t.Helper()
	var ie *store.IdempotencyError
	if !errors.As(err, &ie) {
		t.Fatalf("%s: error = %v, want a *store.IdempotencyError", what, err)
	}
	checkIs(t, what, err, want.Err)
	if ie.Index != want.Index || ie.Queue != want.Queue || ie.Key != want.Key || ie.TaskID != want.TaskID {
		t.Errorf("%s: refused task %d of queue %q, key %q, held by %q; want %d, %q, %q, %q",
			what, ie.Index, ie.Queue, ie.Key, ie.TaskID, want.Index, want.Queue, want.Key, want.TaskID)
	}
}

// checkAbsent fails unless none of the tasks is stored.
func checkAbsent(t *testing.T, ctx context.Context, s store.Store, what string, nts ...store.NewTask) {
	t.Helper()
	for _, nt := range nts {
		_, err := s.GetTask(ctx, nt.ID)
		checkIs(t, what+": GetTask "+nt.ID, err, store.ErrNotFound)
	}
}

// pruneNow cancels the task and prunes it.
func pruneNow(t *testing.T, ctx context.Context, s store.Store, id string) {
	t.Helper()
	if _, err := s.CancelTask(ctx, id); err != nil {
		t.Fatalf("CancelTask: %v", err)
	}
	time.Sleep(2 * time.Millisecond) // finished_at strictly before now
	if n, err := s.Prune(ctx, 0, 100); err != nil || n != 1 {
		t.Fatalf("Prune(0) = %d, %v; want 1", n, err)
	}
	_, err := s.GetTask(ctx, id)
	checkIs(t, "GetTask of the pruned task", err, store.ErrNotFound)
}

func testIdempotency(t *testing.T, newStore NewStoreFunc) {
	t.Run("SameRequestReplays", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		orig := enqueueOne(t, ctx, s, keyedTask("q", "k", requestA))
		again := keyedTask("q", "k", requestA)
		res := mustEnqueue(t, ctx, s, again)[0]
		if !res.Existing || res.Task.ID != orig.ID {
			t.Errorf("replay: Existing %v, task %s; want true, the original %s", res.Existing, res.Task.ID, orig.ID)
		}
		checkAbsent(t, ctx, s, "replay", again)
	})

	t.Run("UnknownFingerprintMatches", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		orig := enqueueOne(t, ctx, s, keyedTask("q", "k", nil))
		for _, fp := range [][]byte{requestA, nil} {
			res := mustEnqueue(t, ctx, s, keyedTask("q", "k", fp))[0]
			if !res.Existing || res.Task.ID != orig.ID {
				t.Errorf("replay of a key with no fingerprint: Existing %v, task %s; want true, %s", res.Existing, res.Task.ID, orig.ID)
			}
		}
		withFP := enqueueOne(t, ctx, s, keyedTask("q", "k2", requestA))
		res := mustEnqueue(t, ctx, s, keyedTask("q", "k2", nil))[0]
		if !res.Existing || res.Task.ID != withFP.ID {
			t.Errorf("replay without a fingerprint: Existing %v, task %s; want true, %s", res.Existing, res.Task.ID, withFP.ID)
		}
	})

	t.Run("DifferentRequestRefused", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		orig := enqueueOne(t, ctx, s, keyedTask("q", "k", requestA))
		other := keyedTask("q", "k", requestB)
		_, err := s.Enqueue(ctx, []store.NewTask{other})
		refusedBy(t, "a different request", err, store.IdempotencyError{Err: store.ErrIdempotencyMismatch, Queue: "q", Key: "k", TaskID: orig.ID})
		checkAbsent(t, ctx, s, "refused", other)
		checkSameTask(t, "the original", mustGet(t, ctx, s, orig.ID), orig)
		// The same key in another queue is another key.
		if res := mustEnqueue(t, ctx, s, keyedTask("q2", "k", requestB))[0]; res.Existing {
			t.Error("a key of queue q refused a task of queue q2")
		}
	})

	t.Run("BatchMismatchStoresNothing", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		orig := enqueueOne(t, ctx, s, keyedTask("q", "k1", requestA))
		plain, fresh, other := newTask("q"), keyedTask("q", "k2", requestA), keyedTask("q", "k1", requestB)
		_, err := s.Enqueue(ctx, []store.NewTask{plain, fresh, other})
		refusedBy(t, "a batch repeating a key with a different request", err,
			store.IdempotencyError{Err: store.ErrIdempotencyMismatch, Index: 2, Queue: "q", Key: "k1", TaskID: orig.ID})
		checkAbsent(t, ctx, s, "refused batch", plain, fresh, other)
		// k2 was not reserved by the refused batch.
		if res := mustEnqueue(t, ctx, s, keyedTask("q", "k2", requestB))[0]; res.Existing {
			t.Error("the refused batch reserved k2")
		}
		checkCounts(t, "q", mustQueue(t, ctx, s, "q").Counts, map[task.State]int64{task.Available: 2})
	})

	t.Run("BatchSharingKeyDifferently", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		plain, a, b := newTask("q"), keyedTask("q", "k", requestA), keyedTask("q", "k", requestB)
		_, err := s.Enqueue(ctx, []store.NewTask{plain, a, b})
		refusedBy(t, "two tasks of one call sharing a key with different requests", err,
			store.IdempotencyError{Err: store.ErrIdempotencyMismatch, Index: 2, Queue: "q", Key: "k"})
		checkAbsent(t, ctx, s, "refused batch", plain, a, b)
	})

	t.Run("BatchMixes", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		orig := enqueueOne(t, ctx, s, keyedTask("q", "k1", requestA))
		plain, replay := newTask("q"), keyedTask("q", "k1", requestA)
		fresh, freshAgain := keyedTask("q", "k2", requestB), keyedTask("q", "k2", requestB)
		res := mustEnqueue(t, ctx, s, plain, replay, fresh, freshAgain)
		wantIDs := []string{plain.ID, orig.ID, fresh.ID, fresh.ID}
		wantExisting := []bool{false, true, false, true}
		for i, r := range res {
			if r.Task.ID != wantIDs[i] || r.Existing != wantExisting[i] {
				t.Errorf("result %d: task %s, Existing %v; want %s, %v", i, r.Task.ID, r.Existing, wantIDs[i], wantExisting[i])
			}
		}
	})

	t.Run("ReservedAfterPrune", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		orig := enqueueOne(t, ctx, s, keyedTask("q", "k", requestA))
		// While its task is stored a key is never released, however old.
		time.Sleep(2 * time.Millisecond)
		if n, err := s.PruneIdempotencyKeys(ctx, 0, 100); err != nil || n != 0 {
			t.Fatalf("PruneIdempotencyKeys(0) with the task stored = %d, %v; want 0", n, err)
		}
		pruneNow(t, ctx, s, orig.ID)

		same, other := keyedTask("q", "k", requestA), keyedTask("q", "k", requestB)
		_, err := s.Enqueue(ctx, []store.NewTask{newTask("q"), same})
		refusedBy(t, "the same request after its task was pruned", err,
			store.IdempotencyError{Err: store.ErrIdempotencyPruned, Index: 1, Queue: "q", Key: "k", TaskID: orig.ID})
		_, err = s.Enqueue(ctx, []store.NewTask{other})
		refusedBy(t, "a different request after the task was pruned", err,
			store.IdempotencyError{Err: store.ErrIdempotencyPruned, Queue: "q", Key: "k", TaskID: orig.ID})
		checkAbsent(t, ctx, s, "refused", same, other)
		checkCounts(t, "q", mustQueue(t, ctx, s, "q").Counts, map[task.State]int64{})

		// Not yet old enough: still reserved.
		if n, err := s.PruneIdempotencyKeys(ctx, time.Hour, 100); err != nil || n != 0 {
			t.Fatalf("PruneIdempotencyKeys(1h) = %d, %v; want 0", n, err)
		}
		_, err = s.Enqueue(ctx, []store.NewTask{keyedTask("q", "k", requestA)})
		checkIs(t, "after PruneIdempotencyKeys(1h)", err, store.ErrIdempotencyPruned)
	})

	t.Run("ReleasedAfterRetention", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		kept := enqueueOne(t, ctx, s, keyedTask("q", "kept", requestA))
		var gone []task.Task
		for _, k := range []string{"a", "b", "c"} {
			gone = append(gone, enqueueOne(t, ctx, s, keyedTask("q", k, requestA)))
		}
		for _, g := range gone {
			if _, err := s.CancelTask(ctx, g.ID); err != nil {
				t.Fatalf("CancelTask: %v", err)
			}
		}
		time.Sleep(2 * time.Millisecond)
		if n, err := s.Prune(ctx, 0, 100); err != nil || n != 3 {
			t.Fatalf("Prune(0) = %d, %v; want 3", n, err)
		}
		n1, err1 := s.PruneIdempotencyKeys(ctx, 0, 2)
		n2, err2 := s.PruneIdempotencyKeys(ctx, 0, 100)
		if err := errors.Join(err1, err2); err != nil || n1 != 2 || n2 != 1 {
			t.Fatalf("PruneIdempotencyKeys(0, limit 2), PruneIdempotencyKeys(0) = %d, %d, %v; want 2, 1", n1, n2, err)
		}
		// A released key is free: a different request makes a new task.
		for _, k := range []string{"a", "b", "c"} {
			nt := keyedTask("q", k, requestB)
			if res := mustEnqueue(t, ctx, s, nt)[0]; res.Existing || res.Task.ID != nt.ID {
				t.Errorf("key %s after release: Existing %v, task %s; want a new task %s", k, res.Existing, res.Task.ID, nt.ID)
			}
		}
		// The stored task's key is still held.
		res := mustEnqueue(t, ctx, s, keyedTask("q", "kept", requestA))[0]
		if !res.Existing || res.Task.ID != kept.ID {
			t.Errorf("key of a stored task: Existing %v, task %s; want true, %s", res.Existing, res.Task.ID, kept.ID)
		}
	})
}
