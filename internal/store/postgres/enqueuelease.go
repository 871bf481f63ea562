package postgres

import (
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
)

// SetEnqueueLeaser implements store.LeasesOnEnqueue.
func (s *Store) SetEnqueueLeaser(l store.EnqueueLeaser) { s.leaser.Set(l) }

var _ store.LeasesOnEnqueue = (*Store)(nil)

// leasePlansSQL is genericPlansSQL without its asynchronous commit: the
// plan settings of the free lease when it runs in an enqueue's
// transaction, whose commit the client is answered for and must stay
// durable.
const leasePlansSQL = `SELECT ` + planSettings

// enqueueLease queues, after an enqueue's statements in b, the free lease
// the leaser offers (if any) for up to due tasks, on the generic plan of
// the dispatcher's own lease: one statement more in the enqueue's round
// trip and transaction instead of a wake-up, a round trip and a
// transaction of the dispatcher's. nil when there is none.
func (s *Store) enqueueLease(b *pgx.Batch, due int, queues []string) *store.EnqueueLeaseRun {
	if s.paused.all(queues, time.Now()) {
		return nil
	}
	run := s.leaser.Offer(due)
	if run == nil {
		return nil
	}
	names, counts := runningArrays(run.Req.Running)
	b.Queue(leasePlansSQL)
	b.Queue(leaseFreeSQL, run.Req.Limit, run.Req.LeaseFor.Milliseconds(), names, counts, run.Req.Shared).Query(func(rows pgx.Rows) error {
		var err error
		run.Got, err = collectLeases(rows)
		return err
	})
	return run
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
