package ui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/store/storetest"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/internal/ui"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// BenchmarkPages times the server-side render of every page (the handler,
// store calls included, into a recorder) on PostgreSQL holding a million
// tasks: 900,000 finished a week ago, 100,000 finished in the last two
// minutes (the chart's hour), and a small backlog in every pending state.
// SPOOL_BENCH_TASKS changes the total. Building the table takes a minute;
// docs/benchmarks.md has the figures.
func BenchmarkPages(b *testing.B) {
	n := int64(1_000_000)
	if v, ok := storetest.BenchTasks(); ok && os.Getenv("SPOOL_BENCH_TASKS") != "" {
		n = v
	}
	ctx := context.Background()
	dsn := testpg.Shared(b).CreateDB(b)
	st, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 4})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	q := storetest.BenchQueues[0]
	var backlog []store.NewTask
	for i := range 200 {
		nt := store.NewTask{ID: newID(b), Queue: q, Target: task.Target{URL: "http://127.0.0.1:9/hook", Headers: map[string]string{"Authorization": "Bearer x"}},
			Payload: []byte(`{"order":42}`), ContentType: "application/json", Priority: i % 10}
		if i%2 == 0 {
			nt.RunAt = time.Now().Add(time.Hour)
		}
		backlog = append(backlog, nt)
	}
	if _, err := st.Enqueue(ctx, backlog); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	recent := n / 10
	if err := st.LoadFinished(ctx, storetest.BenchQueues, n-recent, 7*24*time.Hour); err != nil {
		b.Fatal(err)
	}
	if err := st.LoadFinished(ctx, storetest.BenchQueues, recent, 0); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d tasks in %s", n, time.Since(start).Round(time.Second))
	if _, err := st.RefreshStats(ctx); err != nil {
		b.Fatal(err)
	}
	// A task with its attempts, for the task page.
	ls, err := st.Lease(ctx, store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Minute})
	if err != nil || len(ls) != 1 {
		b.Fatalf("lease: %v", err)
	}
	tk := ls[0].Task.ID
	if _, err := st.Complete(ctx, []store.Completion{{LeaseRef: store.LeaseRef{TaskID: tk, Token: ls[0].Token}, Outcome: store.Retry,
		LastStatus: 503, LastError: "HTTP 503", Attempt: &task.Attempt{TaskID: tk, Attempt: 1, Outcome: task.AttemptRetry, Status: 503,
			StartedAt: time.Now(), FinishedAt: time.Now(), Duration: time.Millisecond, ErrorClass: task.ErrorHTTPStatus, ErrorMessage: "HTTP 503"}}}); err != nil {
		b.Fatal(err)
	}

	h, err := ui.New(ui.Config{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	pages := []struct{ name, path string }{
		{"overview", "/ui/"},
		{"overview-live", "/ui/?fragment=live"},
		{"queue", "/ui/queues/" + q},
		{"queue-succeeded", "/ui/queues/" + q + "?state=succeeded"},
		{"queue-failed", "/ui/queues/" + q + "?state=failed"},
		{"queue-priority", "/ui/queues/" + q + "?priority=3"},
		{"queue-host", "/ui/queues/" + q + "?target_host=nowhere.example.com"},
		{"queue-created", "/ui/queues/" + q + "?created_after=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)},
		{"queue-search", "/ui/queues/" + q + "?id=" + tk},
		{"task", "/ui/tasks/" + tk},
		{"enqueue-copy", "/ui/enqueue?from=" + tk},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.path, nil))
				if rec.Code != http.StatusOK && rec.Code != http.StatusSeeOther {
					b.Fatalf("%s: %d\n%s", p.path, rec.Code, rec.Body)
				}
			}
		})
	}
	// The chart's reading itself, which the overview pays once per 15 s.
	b.Run("chart-reading", func(b *testing.B) {
		for b.Loop() {
			if _, err := st.FinishedPerMinute(ctx, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
}
