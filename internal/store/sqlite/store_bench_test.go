package sqlite_test

// Enqueue benchmarks on a real SQLite file (WAL, synchronous=FULL: the
// options `spool serve` uses), next to BenchmarkEnqueueBatch1000 and
// BenchmarkLeaseComplete in sqlite_test.go. Each reports tasks/s.
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/store/sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
)

func enqueueBenchStore(b *testing.B) *sqlite.Store {
	return enqueueBenchStoreSync(b, sqlite.SyncFull)
}

func enqueueBenchStoreSync(b *testing.B, sync sqlite.Sync) *sqlite.Store {
	b.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "spool.db"), sqlite.Options{Logger: quiet, Sync: sync})
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Migrate(context.Background()); err != nil {
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
// per GOMAXPROCS, as many API clients would call it; they queue for the one
// write connection.
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

// BenchmarkEnqueueSync: one task per Enqueue, one caller, so one commit
// (and under full one fsync) per task: the worst case of SPOOL_SQLITE_SYNC,
// which group commit spreads over many tasks in spool serve.
func BenchmarkEnqueueSync(b *testing.B) {
	for _, sync := range []sqlite.Sync{sqlite.SyncFull, sqlite.SyncNormal} {
		b.Run(string(sync), func(b *testing.B) {
			s := enqueueBenchStoreSync(b, sync)
			ctx := context.Background()
			for b.Loop() {
				if _, err := s.Enqueue(ctx, []store.NewTask{newTask("bench")}); err != nil {
					b.Fatal(err)
				}
			}
			tasksPerSecond(b, b.N)
		})
	}
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
