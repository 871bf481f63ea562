package sqlite

import (
	"context"
	"database/sql"

	"github.com/spoolhq/spool/internal/store"
)

// SetEnqueueLeaser implements store.LeasesOnEnqueue.
func (s *Store) SetEnqueueLeaser(l store.EnqueueLeaser) { s.leaser.Set(l) }

var _ store.LeasesOnEnqueue = (*Store)(nil)

// enqueueLease runs, in an enqueue's write transaction tx, the lease the
// leaser offers (if any) for up to due tasks: the enqueue's write lock and
// commit serve it too, and its tasks go straight to the dispatcher instead
// of waiting for a wake-up and a write transaction of its own. nil when
// there is none.
func (s *Store) enqueueLease(ctx context.Context, tx *sql.Tx, st *statements, due int) (*store.EnqueueLeaseRun, error) {
	run := s.leaser.Offer(due)
	if run == nil {
		return nil, nil
	}
	var err error
	run.Got, err = s.leaseIn(ctx, tx, st, run.Req)
	return run, err
}
