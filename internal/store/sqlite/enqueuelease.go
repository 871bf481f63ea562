package sqlite

import (
	"context"
	"database/sql"

	"github.com/spoolhq/spool/internal/store"
)

// leaserBox holds the EnqueueLeaser (an interface cannot be stored in an
// atomic.Pointer directly).
type leaserBox struct{ l store.EnqueueLeaser }

// SetEnqueueLeaser implements store.LeasesOnEnqueue.
func (s *Store) SetEnqueueLeaser(l store.EnqueueLeaser) {
	if l == nil {
		s.leaser.Store(nil)
		return
	}
	s.leaser.Store(&leaserBox{l})
}

var _ store.LeasesOnEnqueue = (*Store)(nil)

// enqueueLeaseRun is a lease made in an enqueue's write transaction: the
// enqueue's write lock and commit serve it too, and its tasks go straight
// to the dispatcher instead of waiting for a wake-up and a write
// transaction of its own.
type enqueueLeaseRun struct {
	leaser store.EnqueueLeaser
	req    store.LeaseRequest
	got    []store.Lease
}

// enqueueLease asks the leaser (if any) for a lease of up to due tasks;
// nil when there is none.
func (s *Store) enqueueLease(due int) *enqueueLeaseRun {
	box := s.leaser.Load()
	if box == nil || due == 0 {
		return nil
	}
	req, ok := box.l.EnqueueLease(due)
	if !ok {
		return nil
	}
	return &enqueueLeaseRun{leaser: box.l, req: req}
}

// run leases in tx (nothing when r is nil).
func (r *enqueueLeaseRun) run(ctx context.Context, s *Store, tx *sql.Tx, st *statements) error {
	if r == nil {
		return nil
	}
	var err error
	r.got, err = s.leaseIn(ctx, tx, st, r.req)
	return err
}

// handOver gives the leaser what the lease took once the transaction
// ended with err (nothing unless it committed) and reports whether due
// work may be left for the dispatcher's own lease (store.LeftWork).
func (r *enqueueLeaseRun) handOver(err error) bool {
	if err != nil {
		r.leaser.Leased(r.req, nil)
		return true
	}
	sortLeases(r.got)
	r.leaser.Leased(r.req, r.got)
	return store.LeftWork(r.req, len(r.got))
}
