package storetest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// BenchTasks is how many finished tasks the operator-path benchmark
// builds: SPOOL_BENCH_TASKS, default 10 million. The benchmark runs only
// with SPOOL_BENCH_10M=1 (it takes minutes); ok is false otherwise.
func BenchTasks() (n int64, ok bool) {
	if os.Getenv("SPOOL_BENCH_10M") != "1" {
		return 0, false
	}
	n = 10_000_000
	if v, err := strconv.ParseInt(os.Getenv("SPOOL_BENCH_TASKS"), 10, 64); err == nil && v > 0 {
		n = v
	}
	return n, true
}

// BenchQueues are the queues the benchmark spreads its tasks over.
var BenchQueues = []string{"emails", "orders", "reports", "webhooks"}

// TimeOperatorPaths times each operator path on s, which holds a long
// history in BenchQueues plus a small backlog: the median of 7 calls after
// one warm-up, logged as a table (no assertion: speed is reported, not
// asserted). It checks each answer is sane, so a fast wrong answer shows.
func TimeOperatorPaths(t *testing.T, s store.Store, finished int64) {
	ctx := context.Background()
	q := BenchQueues[0]
	var firstID string
	paused := false
	paths := []struct {
		name string
		call func() error
	}{
		{"GET /v1/queues (ListQueues)", func() error {
			qs, err := s.ListQueues(ctx)
			if err == nil && len(qs) < len(BenchQueues) {
				err = fmt.Errorf("%d queues", len(qs))
			}
			var sum int64
			for _, q := range qs {
				sum += q.Counts[task.Succeeded] + q.Counts[task.Failed] + q.Counts[task.Cancelled]
			}
			if err == nil && sum != finished {
				err = fmt.Errorf("finished tasks counted %d, want %d", sum, finished)
			}
			return err
		}},
		{"GET /v1/queues/{q} (GetQueue)", func() error {
			_, err := s.GetQueue(ctx, q)
			return err
		}},
		{"pause or resume (UpdateQueue)", func() error {
			paused = !paused
			got, err := s.UpdateQueue(ctx, q, task.QueuePatch{Paused: &paused})
			if err == nil && got.Paused != paused {
				err = fmt.Errorf("paused = %v", got.Paused)
			}
			return err
		}},
		{"oldest-due gauge (OldestDue)", func() error {
			_, err := s.OldestDue(ctx)
			return err
		}},
		{"list, first page of 100 (ListTasks)", func() error {
			tsPage, err := s.ListTasks(ctx, store.ListParams{Queue: q, Limit: 100})
			ts := tsPage.Tasks
			if err == nil && len(ts) != 100 {
				err = fmt.Errorf("listed %d", len(ts))
			}
			if err == nil {
				firstID = ts[len(ts)-1].ID
			}
			return err
		}},
		{"list, next page (ListTasks after a cursor)", func() error {
			_, err := s.ListTasks(ctx, store.ListParams{Queue: q, After: firstID, Limit: 100})
			return err
		}},
		{"list, failed, first page (ListTasks state=failed)", func() error {
			tsPage, err := s.ListTasks(ctx, store.ListParams{Queue: q, State: task.Failed, Limit: 100})
			ts := tsPage.Tasks
			for _, tk := range ts {
				if tk.State != task.Failed {
					err = fmt.Errorf("listed a task in state %s", tk.State)
				}
			}
			if err == nil && len(ts) == 0 {
				err = fmt.Errorf("listed no failed task")
			}
			return err
		}},
		{"list, available (ListTasks state=available)", func() error {
			_, err := s.ListTasks(ctx, store.ListParams{Queue: q, State: task.Available, Limit: 100})
			return err
		}},
		{"fold counts (FoldCounts)", func() error {
			_, err := s.FoldCounts(ctx)
			return err
		}},
	}
	t.Logf("%d finished tasks over %d queues; median of 7 calls after a warm-up", finished, len(BenchQueues))
	t.Logf("| path | median | min | max |")
	t.Logf("|---|---|---|---|")
	for _, p := range paths {
		if err := p.call(); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		var ds []time.Duration
		for range 7 {
			start := time.Now()
			if err := p.call(); err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		t.Logf("| %s | %s | %s | %s |", p.name, ms(ds[3]), ms(ds[0]), ms(ds[6]))
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
