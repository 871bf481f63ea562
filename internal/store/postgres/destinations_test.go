package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/task"
)

// exchanges counts round trips: each query outside a batch, and each batch.
type exchanges struct{ n atomic.Int64 }

func (e *exchanges) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	e.n.Add(1)
	return ctx
}
func (e *exchanges) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (e *exchanges) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	e.n.Add(1)
	return ctx
}
func (e *exchanges) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (e *exchanges) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// TestSyncDestinationsReplicas: four replicas (separate pools) sync the same
// destinations concurrently, each listing them in its own random order.
// Rows are locked in name order, so none deadlocks (PostgreSQL would abort
// one with 40P01), and under the locks no increment is lost.
func TestSyncDestinationsReplicas(t *testing.T) {
	t.Parallel()
	_, dsn := fresh(t)
	names := []string{"https://a.example:443", "https://b.example:443", "https://c.example:443", "https://d.example:443"}
	const replicas, rounds = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, replicas*rounds)
	for r := range replicas {
		s := open(t, dsn, postgres.Options{MaxConns: 2})
		replica := fmt.Sprintf("r%d", r)
		wg.Go(func() {
			for range rounds {
				reports := make([]store.DestinationReport, len(names))
				for i, n := range names {
					reports[i] = store.DestinationReport{Name: n, InFlight: 1}
				}
				rand.Shuffle(len(reports), func(i, j int) { reports[i], reports[j] = reports[j], reports[i] })
				_, err := s.SyncDestinations(t.Context(), replica, time.Minute, reports,
					func(d *task.Destination, _ store.DestinationReport, _ time.Time) bool {
						d.Failures++
						return true
					})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", replica, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := open(t, dsn, postgres.Options{MaxConns: 2})
	ds, err := s.ListDestinations(t.Context(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != len(names) {
		t.Fatalf("%d destinations, want %d", len(ds), len(names))
	}
	for _, d := range ds {
		if d.Failures != replicas*rounds || d.Stats.Replicas != replicas || d.Stats.InFlight != replicas {
			t.Errorf("%s: Failures %d, Replicas %d, InFlight %d; want %d, %d, %d",
				d.Name, d.Failures, d.Stats.Replicas, d.Stats.InFlight, replicas*rounds, replicas, replicas)
		}
	}
}

// TestSyncDestinationsRoundTrips: a sync of many destinations costs a
// fixed number of round trips (it runs every second on every replica that
// delivers): BEGIN, one batch, the write-backs when apply changed a row,
// COMMIT.
func TestSyncDestinationsRoundTrips(t *testing.T) {
	t.Parallel()
	_, dsn := fresh(t)
	var ex exchanges
	s := open(t, dsn, postgres.Options{Tracer: &ex})
	reports := make([]store.DestinationReport, 50)
	for i := range reports {
		reports[i] = store.DestinationReport{Name: fmt.Sprintf("https://d%02d.example:443", i), Successes: 1}
	}
	for _, tc := range []struct {
		write bool
		want  int64
	}{{true, 4}, {false, 3}} {
		ex.n.Store(0)
		if _, err := s.SyncDestinations(t.Context(), "r1", time.Minute, reports,
			func(d *task.Destination, _ store.DestinationReport, _ time.Time) bool {
				d.Limit++
				return tc.write
			}); err != nil {
			t.Fatal(err)
		}
		if n := ex.n.Load(); n != tc.want {
			t.Errorf("SyncDestinations(%d reports, apply writes: %v) took %d round trips, want %d", len(reports), tc.write, n, tc.want)
		}
	}
}
