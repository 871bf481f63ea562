// Package storetest is the conformance suite every store.Store driver must
// pass. It holds a driver to the contract written in internal/store/store.go
// and nothing more: drivers call Run from their own tests with a constructor
// that returns a fresh, migrated, empty store. It owns no driver and imports
// none; tests that need two Store instances on one database belong to the
// driver that supports that.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// NewStoreFunc returns a fresh, migrated, empty store for one test; it
// registers its own cleanup (closing the store, dropping the database).
type NewStoreFunc = func(t *testing.T) store.Store

// Time tolerances. The database clock (PostgreSQL) and the process clock
// run on one host, but a loaded 2-core machine can stall a call for a while,
// so "about now" is checked loosely; a time the caller handed in must come
// back to within the precision a database keeps (microseconds on
// PostgreSQL; a driver may keep milliseconds).
const (
	clockSlack = 2 * time.Second
	storedRes  = time.Millisecond
	// signalWait bounds how long a wake-up may take to arrive.
	signalWait = 5 * time.Second
)

// Run runs the whole conformance suite against the driver behind newStore.
// Every subtest calls newStore for its own store and runs in parallel.
func Run(t *testing.T, newStore NewStoreFunc) {
	t.Run("Ping", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
	t.Run("Enqueue", func(t *testing.T) { testEnqueue(t, newStore) })
	t.Run("Idempotency", func(t *testing.T) { testIdempotency(t, newStore) })
	t.Run("Tasks", func(t *testing.T) { testTasks(t, newStore) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, newStore) })
	t.Run("RetryTask", func(t *testing.T) { testRetryTask(t, newStore) })
	t.Run("ListFilters", func(t *testing.T) { testListFilters(t, newStore) })
	t.Run("Bulk", func(t *testing.T) { testBulk(t, newStore) })
	t.Run("Queues", func(t *testing.T) { testQueues(t, newStore) })
	t.Run("Counts", func(t *testing.T) { testCounts(t, newStore) })
	t.Run("Lease", func(t *testing.T) { testLease(t, newStore) })
	t.Run("FairLease", func(t *testing.T) { testFairLease(t, newStore) })
	t.Run("ExtendLeases", func(t *testing.T) { testExtendLeases(t, newStore) })
	t.Run("Complete", func(t *testing.T) { testComplete(t, newStore) })
	t.Run("Attempts", func(t *testing.T) { testAttempts(t, newStore) })
	t.Run("Delay", func(t *testing.T) { testDelay(t, newStore) })
	t.Run("RetryIn", func(t *testing.T) { testRetryIn(t, newStore) })
	t.Run("RescueExpired", func(t *testing.T) { testRescue(t, newStore) })
	t.Run("PromoteDue", func(t *testing.T) { testPromote(t, newStore) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, newStore) })
	t.Run("Leadership", func(t *testing.T) { testLeadership(t, newStore) })
	t.Run("Wakeups", func(t *testing.T) { testWakeups(t, newStore) })
	t.Run("EnqueueLease", func(t *testing.T) { testEnqueueLease(t, newStore) })
	t.Run("OldestDue", func(t *testing.T) { testOldestDue(t, newStore) })
	t.Run("FinishedPerMinute", func(t *testing.T) { testFinishedPerMinute(t, newStore) })
	t.Run("TraceParent", func(t *testing.T) { testTraceParent(t, newStore) })
	t.Run("Destinations", func(t *testing.T) { testDestinations(t, newStore) })
	t.Run("Schedules", func(t *testing.T) { testSchedules(t, newStore) })
}

// setup marks the test parallel and returns a bounded context and a fresh
// store. The context ends with the test, so Wakeups channels close then.
func setup(t *testing.T, newStore NewStoreFunc) (context.Context, store.Store) {
	t.Helper()
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	s := newStore(t)
	if s == nil {
		t.Fatal("newStore returned nil")
	}
	return ctx, s
}

// newID returns a fresh UUIDv7 string.
func newID() string { return uuid.Must(uuid.NewV7()).String() }

// newTask builds a valid NewTask for queue with a fresh UUIDv7 id, the
// queue's defaults for attempts and timeout, and due now. Callers change
// fields as needed.
func newTask(queue string) store.NewTask {
	return store.NewTask{
		ID:    newID(),
		Queue: queue,
		Target: task.Target{
			URL:     "http://127.0.0.1:9/hook",
			Method:  "POST",
			Headers: map[string]string{"X-Test": "1"},
		},
		Payload:     []byte(`{"n":1}`),
		ContentType: "application/json",
		Priority:    task.DefaultPriority,
	}
}

// newTasks builds n tasks for queue.
func newTasks(queue string, n int) []store.NewTask {
	out := make([]store.NewTask, n)
	for i := range out {
		out[i] = newTask(queue)
	}
	return out
}

// mustEnqueue enqueues nts in one call and checks one result per input.
func mustEnqueue(t *testing.T, ctx context.Context, s store.Store, nts ...store.NewTask) []store.Enqueued {
	t.Helper()
	res, err := s.Enqueue(ctx, nts)
	if err != nil {
		t.Fatalf("Enqueue(%d tasks): %v", len(nts), err)
	}
	if len(res) != len(nts) {
		t.Fatalf("Enqueue(%d tasks) returned %d results", len(nts), len(res))
	}
	return res
}

// enqueueOne enqueues one task and returns it as stored.
func enqueueOne(t *testing.T, ctx context.Context, s store.Store, nt store.NewTask) task.Task {
	t.Helper()
	return mustEnqueue(t, ctx, s, nt)[0].Task
}

// mustGet fetches a task that must exist.
func mustGet(t *testing.T, ctx context.Context, s store.Store, id string) task.Task {
	t.Helper()
	tk, err := s.GetTask(ctx, id)
	if err != nil {
		t.Fatalf("GetTask(%s): %v", id, err)
	}
	return tk
}

// mustQueue fetches a queue that must exist.
func mustQueue(t *testing.T, ctx context.Context, s store.Store, name string) task.Queue {
	t.Helper()
	q, err := s.GetQueue(ctx, name)
	if err != nil {
		t.Fatalf("GetQueue(%s): %v", name, err)
	}
	return q
}

// mustUpdateQueue applies a patch that must succeed.
func mustUpdateQueue(t *testing.T, ctx context.Context, s store.Store, name string, p task.QueuePatch) task.Queue {
	t.Helper()
	q, err := s.UpdateQueue(ctx, name, p)
	if err != nil {
		t.Fatalf("UpdateQueue(%s): %v", name, err)
	}
	return q
}

// mustLease calls Lease once for limit tasks, with no reserve and nothing
// running, and checks it respects limit.
func mustLease(t *testing.T, ctx context.Context, s store.Store, limit int, leaseFor time.Duration) []store.Lease {
	t.Helper()
	return mustLeaseReq(t, ctx, s, store.LeaseRequest{Limit: limit, Shared: limit, LeaseFor: leaseFor})
}

// leaseN leases exactly n tasks, calling Lease until it has them: a driver
// may legitimately return fewer than asked in one call (skipped locks).
func leaseN(t *testing.T, ctx context.Context, s store.Store, n int, leaseFor time.Duration) []store.Lease {
	t.Helper()
	var out []store.Lease
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n {
		ls := mustLease(t, ctx, s, n-len(out), leaseFor)
		out = append(out, ls...)
		if len(ls) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("leased %d tasks, want %d", len(out), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}

// leaseOne leases the single due task the test expects.
func leaseOne(t *testing.T, ctx context.Context, s store.Store, wantID string, leaseFor time.Duration) store.Lease {
	t.Helper()
	l := leaseN(t, ctx, s, 1, leaseFor)[0]
	if l.Task.ID != wantID {
		t.Fatalf("leased task %s, want %s", l.Task.ID, wantID)
	}
	return l
}

// mustComplete applies completions and returns accepted, checking its length.
func mustComplete(t *testing.T, ctx context.Context, s store.Store, cs ...store.Completion) []bool {
	t.Helper()
	acc, err := s.Complete(ctx, cs)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if len(acc) != len(cs) {
		t.Fatalf("Complete(%d completions) returned %d accepted flags", len(cs), len(acc))
	}
	return acc
}

// completeOne applies one completion and fails unless accepted == want.
func completeOne(t *testing.T, ctx context.Context, s store.Store, c store.Completion, want bool) {
	t.Helper()
	if got := mustComplete(t, ctx, s, c)[0]; got != want {
		t.Fatalf("Complete(task %s token %d outcome %d) accepted = %v, want %v", c.TaskID, c.Token, c.Outcome, got, want)
	}
}

// done is a completion of outcome for lease l.
func done(l store.Lease, o store.Outcome) store.Completion {
	return store.Completion{LeaseRef: ref(l), Outcome: o}
}

// ref names lease l.
func ref(l store.Lease) store.LeaseRef { return store.LeaseRef{TaskID: l.Task.ID, Token: l.Token} }

// populate makes counts[st] tasks of queue in each state st and returns
// their ids by state (each list in creation order). It leases every due
// task in the store, so call it on a store holding no other due tasks.
func populate(t *testing.T, ctx context.Context, s store.Store, queue string, counts map[task.State]int) map[task.State][]string {
	t.Helper()
	ids := make(map[task.State][]string)
	leased := []task.State{task.Running, task.Retrying, task.Succeeded, task.Failed}
	n := 0
	for _, st := range leased {
		n += counts[st]
	}
	if n > 0 {
		mustEnqueue(t, ctx, s, newTasks(queue, n)...)
		ls := leaseN(t, ctx, s, n, time.Hour)
		var cs []store.Completion
		i := 0
		for _, st := range leased {
			for range counts[st] {
				l := ls[i]
				i++
				ids[st] = append(ids[st], l.Task.ID)
				switch st {
				case task.Retrying:
					c := done(l, store.Retry)
					c.RetryAt = time.Now().Add(time.Hour)
					cs = append(cs, c)
				case task.Succeeded:
					cs = append(cs, done(l, store.Succeeded))
				case task.Failed:
					cs = append(cs, done(l, store.Fail))
				}
			}
		}
		if len(cs) > 0 {
			for i, ok := range mustComplete(t, ctx, s, cs...) {
				if !ok {
					t.Fatalf("populate: completion %d refused", i)
				}
			}
		}
	}
	for range counts[task.Cancelled] {
		tk := enqueueOne(t, ctx, s, newTask(queue))
		if _, err := s.CancelTask(ctx, tk.ID); err != nil {
			t.Fatalf("populate: CancelTask: %v", err)
		}
		ids[task.Cancelled] = append(ids[task.Cancelled], tk.ID)
	}
	for range counts[task.Available] {
		ids[task.Available] = append(ids[task.Available], enqueueOne(t, ctx, s, newTask(queue)).ID)
	}
	for range counts[task.Scheduled] {
		nt := newTask(queue)
		nt.RunAt = time.Now().Add(time.Hour)
		ids[task.Scheduled] = append(ids[task.Scheduled], enqueueOne(t, ctx, s, nt).ID)
	}
	for st, want := range counts {
		if got := len(ids[st]); got != want {
			t.Fatalf("populate: made %d %s tasks, want %d", got, st, want)
		}
	}
	return ids
}

// checkState fails unless task id is in state want.
func checkState(t *testing.T, ctx context.Context, s store.Store, id string, want task.State) task.Task {
	t.Helper()
	tk := mustGet(t, ctx, s, id)
	if tk.State != want {
		t.Errorf("task %s state = %s, want %s", id, tk.State, want)
	}
	return tk
}

// checkBetween fails unless got lies in [lo, hi], widened by clockSlack.
func checkBetween(t *testing.T, what string, got, lo, hi time.Time) {
	t.Helper()
	if got.IsZero() {
		t.Errorf("%s is zero", what)
		return
	}
	if got.Before(lo.Add(-clockSlack)) || got.After(hi.Add(clockSlack)) {
		t.Errorf("%s = %v, want between %v and %v", what, got, lo, hi)
	}
}

// checkNear fails unless got is want within storedRes.
func checkNear(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if d := got.Sub(want).Abs(); d > storedRes {
		t.Errorf("%s = %v, want %v (off by %v)", what, got, want, d)
	}
}

// checkIs fails unless errors.Is(err, want).
func checkIs(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error = %v, want errors.Is(%v)", what, err, want)
	}
}

// diffTask lists the fields in which got and want differ; times compare to
// within storedRes, a nil map or slice equals an empty one.
func diffTask(got, want task.Task) []string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	if got.ID != want.ID {
		add("ID", got.ID, want.ID)
	}
	if got.Queue != want.Queue {
		add("Queue", got.Queue, want.Queue)
	}
	if got.State != want.State {
		add("State", got.State, want.State)
	}
	if got.Attempt != want.Attempt {
		add("Attempt", got.Attempt, want.Attempt)
	}
	if got.MaxAttempts != want.MaxAttempts {
		add("MaxAttempts", got.MaxAttempts, want.MaxAttempts)
	}
	if got.Priority != want.Priority {
		add("Priority", got.Priority, want.Priority)
	}
	times := []struct {
		name string
		g, w time.Time
	}{{"RunAt", got.RunAt, want.RunAt}, {"CreatedAt", got.CreatedAt, want.CreatedAt}, {"UpdatedAt", got.UpdatedAt, want.UpdatedAt}}
	for _, tm := range times {
		if tm.g.Sub(tm.w).Abs() > storedRes {
			add(tm.name, tm.g, tm.w)
		}
	}
	switch {
	case (got.FinishedAt == nil) != (want.FinishedAt == nil):
		add("FinishedAt", got.FinishedAt, want.FinishedAt)
	case got.FinishedAt != nil && got.FinishedAt.Sub(*want.FinishedAt).Abs() > storedRes:
		add("FinishedAt", *got.FinishedAt, *want.FinishedAt)
	}
	d = append(d, diffDelivery(got, want)...)
	if got.IdempotencyKey != want.IdempotencyKey {
		add("IdempotencyKey", got.IdempotencyKey, want.IdempotencyKey)
	}
	if got.LastError != want.LastError {
		add("LastError", got.LastError, want.LastError)
	}
	if got.LastStatus != want.LastStatus {
		add("LastStatus", got.LastStatus, want.LastStatus)
	}
	return d
}

// diffDelivery compares what a worker needs to deliver a task.
func diffDelivery(got, want task.Task) []string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	if got.Target.URL != want.Target.URL {
		add("Target.URL", got.Target.URL, want.Target.URL)
	}
	if got.Target.Method != want.Target.Method {
		add("Target.Method", got.Target.Method, want.Target.Method)
	}
	if len(got.Target.Headers) != len(want.Target.Headers) || !maps.Equal(got.Target.Headers, want.Target.Headers) {
		add("Target.Headers", got.Target.Headers, want.Target.Headers)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		add("Payload", summarize(got.Payload), summarize(want.Payload))
	}
	if got.ContentType != want.ContentType {
		add("ContentType", got.ContentType, want.ContentType)
	}
	if got.Timeout != want.Timeout {
		add("Timeout", got.Timeout, want.Timeout)
	}
	return d
}

// summarize shows a payload briefly in failure messages.
func summarize(b []byte) string {
	if len(b) <= 32 {
		return fmt.Sprintf("%q (len %d)", b, len(b))
	}
	return fmt.Sprintf("%q… (len %d)", b[:32], len(b))
}

// checkSameTask fails with every differing field of got against want.
func checkSameTask(t *testing.T, what string, got, want task.Task) {
	t.Helper()
	for _, d := range diffTask(got, want) {
		t.Errorf("%s: %s", what, d)
	}
}

// sortedIDs returns a sorted copy of ids.
func sortedIDs(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// shuffled returns nts in a random order so that id order and insertion
// order differ.
func shuffled(nts []store.NewTask) []store.NewTask {
	out := slices.Clone(nts)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// taskIDs lists the ids of tasks.
func taskIDs(ts []task.Task) []string {
	out := make([]string, len(ts))
	for i, tk := range ts {
		out[i] = tk.ID
	}
	return out
}
