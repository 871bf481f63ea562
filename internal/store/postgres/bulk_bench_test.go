package postgres

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
)

// BenchmarkQueuePage1M times what the dashboard's queue page asks of the
// store when one queue holds a million finished tasks (SPOOL_BENCH_BULK=1;
// SPOOL_BENCH_TASKS changes the size), built with generate_series as
// TestOperatorPaths10M builds its table (one task in a thousand failed,
// one cancelled): filtered lists (the row filters' bounded scan at its
// worst, a page that matches nothing; a creation range; a key) and bulk
// retries (1000 ids; a sweep of a state, 1000 at a time). Each op is one
// request's store work; ns/op is the figure.
//
//	SPOOL_BENCH_BULK=1 go test -run '^$' -bench QueuePage1M -benchtime 20x ./internal/store/postgres
func BenchmarkQueuePage1M(b *testing.B) {
	if os.Getenv("SPOOL_BENCH_BULK") != "1" {
		b.Skip("set SPOOL_BENCH_BULK=1 to build the million-task table (a minute)")
	}
	n := int64(1_000_000)
	if v, err := strconv.ParseInt(os.Getenv("SPOOL_BENCH_TASKS"), 10, 64); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	dsn := testpg.Shared(b).CreateDB(b)
	s, err := Open(ctx, dsn, Options{MaxConns: 4})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	const q = "emails"
	start := time.Now()
	operatorBacklog(b, s, q)
	bulkFinished(b, s, []string{q}, n, 8*24*time.Hour)
	if _, err := s.pool.Exec(ctx, `VACUUM ANALYZE spool_tasks`); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %d tasks in %s", n, time.Since(start).Round(time.Second))

	// A middle slice of the history, by creation time: bulkFinished's
	// tasks are one millisecond apart, the last finished 8 days ago.
	mid := time.Now().Add(-8*24*time.Hour - time.Duration(n/2)*time.Millisecond)
	prio := 5
	list := func(name string, p store.ListParams, check func(store.TaskPage) error) {
		b.Run(name, func(b *testing.B) {
			p.Queue = q
			for b.Loop() {
				page, err := s.ListTasks(ctx, p)
				if err == nil {
					err = check(page)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	full := func(page store.TaskPage) error {
		if len(page.Tasks) != 100 || page.Next == "" {
			return fmt.Errorf("page of %d, next %q", len(page.Tasks), page.Next)
		}
		return nil
	}
	list("list/every state, 100", store.ListParams{Limit: 100}, full)
	list("list/every state, target_host, no match, 100 (scans 1000)", store.ListParams{Limit: 100, TargetHost: "none.example"},
		func(page store.TaskPage) error {
			if len(page.Tasks) != 0 || page.Next == "" {
				return fmt.Errorf("page of %d, next %q; want an empty page that goes on", len(page.Tasks), page.Next)
			}
			return nil
		})
	list("list/every state, target_host and priority, 100", store.ListParams{Limit: 100, TargetHost: "127.0.0.1", Priority: &prio}, full)
	list("list/succeeded, run_before, 1000 (scans 10000)", store.ListParams{Limit: 1000, State: task.Succeeded,
		RunBefore: time.Now()}, func(page store.TaskPage) error {
		if len(page.Tasks) != 1000 {
			return fmt.Errorf("page of %d", len(page.Tasks))
		}
		return nil
	})
	list("list/failed, priority, 100", store.ListParams{Limit: 100, State: task.Failed, Priority: &prio},
		func(page store.TaskPage) error {
			if want := min(100, int(n/1000)); len(page.Tasks) != want {
				return fmt.Errorf("page of %d, want %d", len(page.Tasks), want)
			}
			return nil
		})
	list("list/every state, created range in the middle, 100", store.ListParams{Limit: 100,
		CreatedAfter: mid, CreatedBefore: mid.Add(time.Hour)}, full)
	list("list/idempotency key", store.ListParams{Limit: 100, IdempotencyKey: "none"}, func(page store.TaskPage) error {
		if len(page.Tasks) != 0 {
			return fmt.Errorf("page of %d", len(page.Tasks))
		}
		return nil
	})

	// 1000 failed tasks' ids, retried then (untimed) failed again by hand.
	page, err := s.ListTasks(ctx, store.ListParams{Queue: q, State: task.Failed, Limit: 1000})
	if want := min(1000, int(n/1000)); err != nil || len(page.Tasks) != want {
		b.Fatalf("failed tasks: %d, %v; want %d", len(page.Tasks), err, want)
	}
	ids := make([]string, len(page.Tasks))
	for i, tk := range page.Tasks {
		ids[i] = tk.ID
	}
	refail := func(b *testing.B) {
		b.StopTimer()
		// As a completion would: back to failed, counted.
		if _, err := s.pool.Exec(ctx, `WITH upd AS (
				UPDATE spool_tasks SET state = 'failed', finished_at = now() WHERE id = ANY ($1::uuid[]) RETURNING queue
			) INSERT INTO spool_task_count_deltas (queue, state, n) SELECT queue, 'failed', count(*) FROM upd GROUP BY queue`, ids); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.Run(fmt.Sprintf("bulk/retry %d ids", len(ids)), func(b *testing.B) {
		for b.Loop() {
			res, err := s.RetryTasks(ctx, q, ids)
			if err != nil {
				b.Fatal(err)
			}
			if res[0].Err != nil || res[len(res)-1].Err != nil {
				b.Fatalf("results %v, %v", res[0].Err, res[len(res)-1].Err)
			}
			refail(b)
		}
	})
	b.Run("bulk/retry every failed task, 1000 a request", func(b *testing.B) {
		for b.Loop() {
			sw, err := s.RetryState(ctx, store.SweepParams{Queue: q, State: task.Failed, Limit: 1000})
			if err != nil {
				b.Fatal(err)
			}
			if sw.Changed != len(ids) {
				b.Fatalf("retried %d", sw.Changed)
			}
			refail(b)
		}
	})
	if _, err := s.FoldCounts(ctx); err != nil {
		b.Fatal(err)
	}
	qu, err := s.GetQueue(ctx, q)
	if err != nil || qu.Counts[task.Failed] != n/1000 {
		b.Fatalf("failed count %d after the bulk retries, want %d (%v)", qu.Counts[task.Failed], n/1000, err)
	}
}
