package sqlite_test

// Lease benchmarks on a realistic file: a backlog of due tasks next to a
// history of finished ones (what the drain of bench/river leaves behind),
// and the Lease a dispatcher runs when nothing can be leased.
//
//	go test -run '^$' -bench 'Lease' -benchtime 2s ./internal/store/sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
)

const (
	backlogDue      = 20_000
	backlogFinished = 20_000
)

// fill enqueues n tasks built by mk in batches of 1000.
func fill(b *testing.B, s *sqlite.Store, n int, mk func() store.NewTask) {
	b.Helper()
	ctx := context.Background()
	batch := make([]store.NewTask, 0, 1000)
	for n > 0 {
		batch = batch[:0]
		for range min(n, 1000) {
			batch = append(batch, mk())
		}
		if _, err := s.Enqueue(ctx, batch); err != nil {
			b.Fatalf("Enqueue: %v", err)
		}
		n -= len(batch)
	}
}

// finishAll leases every due task and completes it as succeeded.
func finishAll(b *testing.B, s *sqlite.Store) {
	b.Helper()
	ctx := context.Background()
	for {
		ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 1000, Shared: 1000, LeaseFor: time.Minute})
		if err != nil {
			b.Fatalf("Lease: %v", err)
		}
		if len(ls) == 0 {
			return
		}
		complete(b, s, ls)
	}
}

func complete(b *testing.B, s *sqlite.Store, ls []store.Lease) {
	b.Helper()
	cs := make([]store.Completion, len(ls))
	for i, l := range ls {
		cs[i] = store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded, LastStatus: 200}
	}
	acc, err := s.Complete(context.Background(), cs)
	if err != nil {
		b.Fatalf("Complete: %v", err)
	}
	for i, ok := range acc {
		if !ok {
			b.Fatalf("completion of %s refused", cs[i].TaskID)
		}
	}
}

// historyStore is a store holding backlogFinished succeeded tasks.
func historyStore(b *testing.B) *sqlite.Store {
	b.Helper()
	s := enqueueBenchStore(b)
	fill(b, s, backlogFinished, func() store.NewTask { return newTask("bench") })
	finishAll(b, s)
	return s
}

// BenchmarkLeaseBigBacklog: lease 100 and complete them, out of a backlog
// of 20,000 due tasks with 20,000 finished ones beside them. Outside the
// timer each round enqueues 100 tasks and prunes 100 finished ones, so both
// stay at 20,000.
func BenchmarkLeaseBigBacklog(b *testing.B) {
	s := historyStore(b)
	fill(b, s, backlogDue, func() store.NewTask { return newTask("bench") })
	ctx := context.Background()
	batch := make([]store.NewTask, 100)
	for b.Loop() {
		ls, err := s.Lease(ctx, store.LeaseRequest{Limit: len(batch), Shared: len(batch), LeaseFor: time.Minute})
		if err != nil || len(ls) != len(batch) {
			b.Fatalf("Lease: %d, %v", len(ls), err)
		}
		complete(b, s, ls)

		b.StopTimer()
		for i := range batch {
			batch[i] = newTask("bench")
		}
		if _, err := s.Enqueue(ctx, batch); err != nil {
			b.Fatal(err)
		}
		if n, err := s.Prune(ctx, 0, len(batch)); err != nil || n != len(batch) {
			b.Fatalf("Prune: %d, %v", n, err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkLeaseIdle: a Lease that finds nothing it may take, as the
// dispatcher runs one on every wake-up and poll. Each case has 20,000
// finished tasks; "empty" has nothing pending, "paused" 20,000 due tasks in
// a paused queue (the bench/river single-enqueue scenario), "scheduled"
// 20,000 tasks due in an hour, "full" 20,000 due tasks in a queue whose
// concurrency limit is taken.
func BenchmarkLeaseIdle(b *testing.B) {
	later := func() store.NewTask {
		nt := newTask("later")
		nt.RunAt = time.Now().Add(time.Hour)
		return nt
	}
	for _, bc := range []struct {
		name  string
		setup func(b *testing.B, s *sqlite.Store)
	}{
		{"empty", func(*testing.B, *sqlite.Store) {}},
		{"paused", func(b *testing.B, s *sqlite.Store) {
			fill(b, s, backlogDue, func() store.NewTask { return newTask("paused") })
			yes := true
			if _, err := s.UpdateQueue(context.Background(), "paused", task.QueuePatch{Paused: &yes}); err != nil {
				b.Fatal(err)
			}
		}},
		{"scheduled", func(b *testing.B, s *sqlite.Store) { fill(b, s, backlogDue, later) }},
		{"full", func(b *testing.B, s *sqlite.Store) {
			fill(b, s, backlogDue, func() store.NewTask { return newTask("full") })
			two := 2
			if _, err := s.UpdateQueue(context.Background(), "full", task.QueuePatch{Concurrency: &two}); err != nil {
				b.Fatal(err)
			}
			if ls, err := s.Lease(context.Background(), store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Hour}); err != nil || len(ls) != two {
				b.Fatalf("Lease: %d, %v", len(ls), err)
			}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := historyStore(b)
			bc.setup(b, s)
			ctx := context.Background()
			for b.Loop() {
				ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
				if err != nil || len(ls) != 0 {
					b.Fatalf("Lease: %d, %v", len(ls), err)
				}
			}
		})
	}
}

// BenchmarkEnqueueWhileIdleLeasing: single enqueues into a paused queue from
// 32 goroutines per GOMAXPROCS while one dispatcher-like goroutine runs a
// Lease after every wake-up, as `spool serve` does; it shows what an idle
// Lease takes from enqueues.
func BenchmarkEnqueueWhileIdleLeasing(b *testing.B) {
	s := enqueueBenchStore(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	yes := true
	if _, err := s.UpdateQueue(ctx, "paused", task.QueuePatch{Paused: &yes}); err != nil {
		b.Fatal(err)
	}
	wake, err := s.Wakeups(ctx)
	if err != nil {
		b.Fatal(err)
	}
	leases := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range wake {
			if _, err := s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute}); err != nil && ctx.Err() == nil {
				b.Error(err)
				return
			}
			leases++
		}
	}()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Enqueue(ctx, []store.NewTask{newTask("paused")}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	tasksPerSecond(b, b.N)
	cancel()
	<-done
	b.ReportMetric(float64(leases)/float64(b.N), "leases/op")
}

// BenchmarkLeaseBesidePausedBacklog: lease and complete 10 tasks of one
// queue while a paused queue holds 20,000 due tasks that are older, so that
// they come first in dispatch order. Outside the timer each round enqueues
// the next 10.
func BenchmarkLeaseBesidePausedBacklog(b *testing.B) {
	s := historyStore(b)
	ctx := context.Background()
	fill(b, s, backlogDue, func() store.NewTask { return newTask("paused") })
	yes := true
	if _, err := s.UpdateQueue(ctx, "paused", task.QueuePatch{Paused: &yes}); err != nil {
		b.Fatal(err)
	}
	batch := make([]store.NewTask, 10)
	for b.Loop() {
		b.StopTimer()
		for i := range batch {
			batch[i] = newTask("bench")
		}
		if _, err := s.Enqueue(ctx, batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
		if err != nil || len(ls) != len(batch) {
			b.Fatalf("Lease: %d, %v", len(ls), err)
		}
		complete(b, s, ls)
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "tasks/s")
}
