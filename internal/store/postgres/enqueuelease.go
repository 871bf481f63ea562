package postgres

import (
	"github.com/jackc/pgx/v5"

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

// leasePlansSQL is genericPlansSQL without its asynchronous commit: the
// plan settings of the free lease when it runs in an enqueue's
// transaction, whose commit the client is answered for and must stay
// durable.
const leasePlansSQL = `SELECT ` + planSettings

// enqueueLeaseRun is a lease queued in an enqueue's batch.
type enqueueLeaseRun struct {
	leaser store.EnqueueLeaser
	req    store.LeaseRequest
	got    []store.Lease
}

// enqueueLease queues, after an enqueue's statements in b, the free lease
// the leaser asks for (if any) for up to due tasks, on the generic plan of
// the dispatcher's own lease: one statement more in the enqueue's round
// trip and transaction instead of a wake-up, a round trip and a
// transaction of the dispatcher's. nil when there is none.
func (s *Store) enqueueLease(b *pgx.Batch, due int) *enqueueLeaseRun {
	box := s.leaser.Load()
	if box == nil || due == 0 {
		return nil
	}
	req, ok := box.l.EnqueueLease(due)
	if !ok {
		return nil
	}
	run := &enqueueLeaseRun{leaser: box.l, req: req}
	names, counts := runningArrays(req.Running)
	b.Queue(leasePlansSQL)
	b.Queue(leaseFreeSQL, req.Limit, req.LeaseFor.Milliseconds(), names, counts, req.Shared).Query(func(rows pgx.Rows) error {
		var err error
		run.got, err = collectLeases(rows)
		return err
	})
	return run
}

// handOver gives the leaser what the lease took once the batch ended with
// err (nothing unless it committed) and reports whether due work may be
// left for the dispatcher's own lease (store.LeftWork).
func (r *enqueueLeaseRun) handOver(err error) bool {
	if err != nil {
		r.leaser.Leased(r.req, nil)
		return true
	}
	sortLeases(r.got)
	r.leaser.Leased(r.req, r.got)
	return store.LeftWork(r.req, len(r.got))
}
