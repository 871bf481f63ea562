package store

import (
	"cmp"
	"slices"
	"sync/atomic"
)

// LeaserSlot holds a driver's EnqueueLeaser (LeasesOnEnqueue): the zero
// value holds none.
type LeaserSlot struct {
	p atomic.Pointer[leaserBox]
}

// leaserBox wraps the interface for the atomic pointer.
type leaserBox struct{ l EnqueueLeaser }

// Set installs l (nil removes the leaser).
func (s *LeaserSlot) Set(l EnqueueLeaser) {
	if l == nil {
		s.p.Store(nil)
		return
	}
	s.p.Store(&leaserBox{l})
}

// Offer asks the leaser, if there is one, for a lease of up to due tasks
// in an enqueue's transaction. It returns nil when there is none to run;
// otherwise the driver runs Req in the transaction, keeps what it took in
// Got and calls HandOver once the transaction ended.
func (s *LeaserSlot) Offer(due int) *EnqueueLeaseRun {
	box := s.p.Load()
	if box == nil || due <= 0 {
		return nil
	}
	req, ok := box.l.EnqueueLease(due)
	if !ok {
		return nil
	}
	return &EnqueueLeaseRun{leaser: box.l, Req: req}
}

// EnqueueLeaseRun is a lease a driver runs in an enqueue's transaction.
type EnqueueLeaseRun struct {
	leaser EnqueueLeaser
	Req    LeaseRequest
	Got    []Lease // what the lease took, before the commit
}

// HandOver gives the leaser what the lease took once the transaction
// ended with err (nothing unless it committed), and reports whether due
// work may be left behind for the dispatcher's own lease, so that the
// driver wakes it: the lease took nothing (a limited queue's due work
// makes PostgreSQL's free lease stand back, or other leases held the
// rows) or as many as it was allowed. One that took fewer saw nothing
// else due.
func (r *EnqueueLeaseRun) HandOver(err error) (leftWork bool) {
	if err != nil {
		r.leaser.Leased(r.Req, nil)
		return true
	}
	SortLeases(r.Got)
	r.leaser.Leased(r.Req, r.Got)
	return len(r.Got) == 0 || len(r.Got) >= r.Req.Limit
}

// SortLeases puts a batch of leases in dispatch order: priority, run_at,
// id (a statement's RETURNING has no order).
func SortLeases(ls []Lease) {
	slices.SortFunc(ls, func(a, b Lease) int {
		return cmp.Or(
			cmp.Compare(a.Task.Priority, b.Task.Priority),
			a.Task.RunAt.Compare(b.Task.RunAt),
			cmp.Compare(a.Task.ID, b.Task.ID))
	})
}
