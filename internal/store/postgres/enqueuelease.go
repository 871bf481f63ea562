package postgres

import (
	"sync"
	"time"

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
func (s *Store) enqueueLease(b *pgx.Batch, due int, queues []string) *enqueueLeaseRun {
	box := s.leaser.Load()
	if box == nil || due == 0 || s.paused.all(queues, time.Now()) {
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

// pausedFor is how long an enqueue's NOTIFY finding every queue of its
// call paused spares the next enqueues into those queues their lease.
const pausedFor = time.Second

// maxPausedSeen bounds pausedSeen's queues.
const maxPausedSeen = 1000

// pausedSeen remembers the queues whose enqueues found them paused (the
// NOTIFY's answer), so that the enqueues that follow into a paused queue,
// as in a benchmark that fills a paused queue or an operator parking work,
// do not each run a lease that can take nothing. The store cannot know a
// queue is paused before its statements run; this learns it from them,
// for pausedFor: a resumed queue's enqueues lease again within it, and
// until then wake the dispatcher as before.
type pausedSeen struct {
	mu    sync.Mutex
	until map[string]time.Time
}

// all reports whether every queue of queues was seen paused within
// pausedFor of now.
func (p *pausedSeen) all(queues []string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range queues {
		if !now.Before(p.until[q]) {
			return false
		}
	}
	return len(queues) > 0
}

// note records what an enqueue's NOTIFY found: every queue of queues
// paused (woke false), or at least one open.
func (p *pausedSeen) note(queues []string, woke bool, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if woke {
		for _, q := range queues {
			delete(p.until, q)
		}
		return
	}
	if p.until == nil || len(p.until)+len(queues) > maxPausedSeen {
		p.until = make(map[string]time.Time)
	}
	for _, q := range queues {
		p.until[q] = now.Add(pausedFor)
	}
}
