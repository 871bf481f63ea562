package postgres

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
)

// TestCompleteAndExtendDoNotDeadlock: a heartbeat's lease extension and a
// completion batch that share running tasks, started together with their
// leases in opposite orders, wait for each other and both succeed. Sent in
// the order they came, the two statements locked the shared rows in
// opposite orders and PostgreSQL broke the deadlock after deadlock_timeout
// by failing one of them (see byTaskID).
func TestCompleteAndExtendDoNotDeadlock(t *testing.T) {
	t.Parallel()
	s, _ := migratedConns(t, 4)
	ctx := t.Context()
	const rounds, tasks = 20, 200
	fill(t, s, "q", rounds*tasks)
	for round := range rounds {
		ls, err := s.Lease(ctx, store.LeaseRequest{Limit: tasks, Shared: tasks, LeaseFor: time.Minute})
		if err != nil || len(ls) != tasks {
			t.Fatalf("Lease = %d, %v; want %d", len(ls), err, tasks)
		}
		refs := make([]store.LeaseRef, len(ls))
		cs := make([]store.Completion, len(ls))
		for i, l := range ls {
			refs[i] = store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}
			cs[i] = store.Completion{LeaseRef: refs[i], Outcome: store.Succeeded}
		}
		slices.Reverse(cs)
		var (
			wg             sync.WaitGroup
			start          = make(chan struct{})
			extErr, cplErr error
			accepted       []bool
		)
		wg.Go(func() {
			<-start
			_, extErr = s.ExtendLeases(ctx, refs, time.Minute)
		})
		wg.Go(func() {
			<-start
			accepted, cplErr = s.Complete(ctx, cs)
		})
		close(start)
		wg.Wait()
		if extErr != nil || cplErr != nil {
			t.Fatalf("round %d: ExtendLeases: %v; Complete: %v", round, extErr, cplErr)
		}
		if n := len(slices.DeleteFunc(accepted, func(a bool) bool { return !a })); n != tasks {
			t.Fatalf("round %d: %d of %d completions accepted", round, n, tasks)
		}
	}
}
