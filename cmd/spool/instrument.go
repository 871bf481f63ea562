package main

import (
	"context"
	"database/sql"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/telemetry"
)

// countingStore counts what only the store knows happened: tasks accepted
// (idempotent replays excluded) and tasks cancelled.
type countingStore struct {
	store.Store
	m *telemetry.Metrics
}

func (s countingStore) Enqueue(ctx context.Context, ts []store.NewTask) ([]store.Enqueued, error) {
	res, err := s.Store.Enqueue(ctx, ts)
	if err == nil {
		for _, r := range res {
			if !r.Existing {
				s.m.Enqueued.WithLabelValues(r.Task.Queue).Inc()
			}
		}
	}
	return res, err
}

func (s countingStore) CancelTask(ctx context.Context, id string) (task.Task, error) {
	t, err := s.Store.CancelTask(ctx, id)
	if err == nil {
		s.m.Finished.WithLabelValues(t.Queue, "cancelled").Inc()
	}
	return t, err
}

func (s countingStore) CancelTasks(ctx context.Context, queue string, ids []string) ([]store.BulkResult, error) {
	res, err := s.Store.CancelTasks(ctx, queue, ids)
	n := 0
	for _, r := range res {
		if r.Err == nil {
			n++
		}
	}
	if n > 0 { // no series for a queue name nobody has used
		s.m.Finished.WithLabelValues(queue, "cancelled").Add(float64(n))
	}
	return res, err
}

func (s countingStore) CancelState(ctx context.Context, p store.SweepParams) (store.Sweep, error) {
	sw, err := s.Store.CancelState(ctx, p)
	if sw.Changed > 0 {
		s.m.Finished.WithLabelValues(p.Queue, "cancelled").Add(float64(sw.Changed))
	}
	return sw, err
}

// poolStats adapts each driver's pool to the spool_db_pool_* metrics.
func poolStats(st migratingStore) func() telemetry.PoolStats {
	switch s := st.(type) {
	case *postgres.Store:
		return func() telemetry.PoolStats {
			p := s.Pool().Stat()
			return telemetry.PoolStats{
				Max: int(p.MaxConns()), InUse: int(p.AcquiredConns()), Idle: int(p.IdleConns()),
				Acquires: p.AcquireCount(), Waits: p.EmptyAcquireCount(), WaitTime: p.EmptyAcquireWaitTime(),
			}
		}
	case *sqlite.Store:
		return func() telemetry.PoolStats {
			w, r := s.PoolStats()
			sum := func(f func(sql.DBStats) int) int { return f(w) + f(r) }
			return telemetry.PoolStats{
				Max:      sum(func(s sql.DBStats) int { return s.MaxOpenConnections }),
				InUse:    sum(func(s sql.DBStats) int { return s.InUse }),
				Idle:     sum(func(s sql.DBStats) int { return s.Idle }),
				Waits:    w.WaitCount + r.WaitCount,
				WaitTime: w.WaitDuration + r.WaitDuration,
			}
		}
	}
	return nil
}
