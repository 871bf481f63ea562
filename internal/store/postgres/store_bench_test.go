package postgres_test

// Enqueue benchmarks on a real PostgreSQL (the throwaway testpg cluster:
// fsync and synchronous_commit off, so they measure Spool's statements and
// round trips rather than the disk), next to BenchmarkEnqueueBatch1000 and
// BenchmarkLeaseComplete in postgres_test.go. Each reports tasks/s.
//
//	go test -run '^$' -bench . -benchtime 2000x ./internal/store/postgres

import (
	"context"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/testpg"
)

func enqueueBenchStore(b *testing.B) *postgres.Store {
	b.Helper()
	dsn := testpg.Shared(b).CreateDB(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Options as `spool serve` uses them by default (pool max(4, 4*GOMAXPROCS)).
	s, err := postgres.Open(ctx, dsn, postgres.Options{Logger: quiet})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		b.Fatalf("Migrate: %v", err)
	}
	return s
}

func tasksPerSecond(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkEnqueueSingle: one task per Enqueue (one transaction each), one caller.
func BenchmarkEnqueueSingle(b *testing.B) {
	s := enqueueBenchStore(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.Enqueue(ctx, []store.NewTask{newTask("bench")}); err != nil {
			b.Fatal(err)
		}
	}
	tasksPerSecond(b, b.N)
}

// BenchmarkEnqueueSingleParallel: one task per Enqueue from 32 goroutines
// per GOMAXPROCS, as many API clients would call it. Without group commit
// each is its own transaction.
func BenchmarkEnqueueSingleParallel(b *testing.B) {
	s := enqueueBenchStore(b)
	ctx := context.Background()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Enqueue(ctx, []store.NewTask{newTask("bench")}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	tasksPerSecond(b, b.N)
}

// BenchmarkEnqueueBatch100: 100 tasks per Enqueue; b.N counts batches.
func BenchmarkEnqueueBatch100(b *testing.B) {
	s := enqueueBenchStore(b)
	ctx := context.Background()
	batch := make([]store.NewTask, 100)
	for b.Loop() {
		for i := range batch {
			batch[i] = newTask("bench")
		}
		if _, err := s.Enqueue(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	tasksPerSecond(b, 100*b.N)
}

// BenchmarkLeaseBigBacklog: lease 100 and complete them out of a backlog of
// 20,000 due tasks, with 20,000 tasks scheduled for later and 20,000
// finished ones in the table, as in the middle of a drain. The lease must
// stop after its 100 rows whatever the backlog.
func BenchmarkLeaseBigBacklog(b *testing.B) {
	s := enqueueBenchStore(b)
	ctx := context.Background()
	fill := func(n int, runAt time.Time) {
		batch := make([]store.NewTask, 1000)
		for done := 0; done < n; done += len(batch) {
			for i := range batch {
				batch[i] = newTask("bench")
				batch[i].RunAt = runAt
			}
			if _, err := s.Enqueue(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	fill(20000, time.Time{})
	fill(20000, time.Now().Add(time.Hour))
	leaseComplete := func() {
		ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
		if err != nil || len(ls) != 100 {
			b.Fatalf("Lease: %d, %v", len(ls), err)
		}
		cs := make([]store.Completion, len(ls))
		for i, l := range ls {
			cs[i] = store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded, LastStatus: 200}
		}
		if _, err := s.Complete(ctx, cs); err != nil {
			b.Fatal(err)
		}
	}
	for range 200 { // 20,000 finished
		leaseComplete()
	}
	fill(20000, time.Time{})
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i > 0 && i%100 == 0 { // keep the backlog near 20,000
			b.StopTimer()
			fill(10000, time.Time{})
			b.StartTimer()
		}
		leaseComplete()
	}
	tasksPerSecond(b, b.N*100)
}
