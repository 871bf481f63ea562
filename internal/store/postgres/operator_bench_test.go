package postgres

import (
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store/storetest"
)

// TestOperatorPaths10M builds a table of 10 million finished tasks with
// generate_series (SPOOL_BENCH_10M=1; SPOOL_BENCH_TASKS changes the size)
// and times each operator path on it. See docs/benchmarks.md.
func TestOperatorPaths10M(t *testing.T) {
	n, ok := storetest.BenchTasks()
	if !ok {
		t.Skip("set SPOOL_BENCH_10M=1 to build the 10-million-task table (minutes)")
	}
	s := migrated(t)
	start := time.Now()
	for _, q := range storetest.BenchQueues {
		operatorBacklog(t, s, q)
	}
	bulkFinished(t, s, storetest.BenchQueues, n, 8*24*time.Hour)
	t.Logf("inserted %d tasks in %s", n, time.Since(start).Round(time.Second))
	start = time.Now()
	mustExec(t, s, `VACUUM ANALYZE spool_tasks`)
	t.Logf("VACUUM ANALYZE in %s", time.Since(start).Round(time.Second))
	storetest.TimeOperatorPaths(t, s, n)
}
