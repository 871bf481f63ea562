package sqlite

import (
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store/storetest"
)

// TestOperatorPaths10M builds a table of 10 million finished tasks with
// one INSERT … SELECT over WITH RECURSIVE per million (SPOOL_BENCH_10M=1;
// SPOOL_BENCH_TASKS changes the size) and times each operator path on it.
// See docs/benchmarks.md.
func TestOperatorPaths10M(t *testing.T) {
	n, ok := storetest.BenchTasks()
	if !ok {
		t.Skip("set SPOOL_BENCH_10M=1 to build the 10-million-task table (minutes)")
	}
	s := freshStore(t)
	start := time.Now()
	for _, q := range storetest.BenchQueues {
		operatorBacklog(t, s, q)
	}
	bulkFinished(t, s, storetest.BenchQueues, n, 8*24*time.Hour)
	t.Logf("inserted %d tasks in %s", n, time.Since(start).Round(time.Second))
	start = time.Now()
	if _, err := s.write.ExecContext(t.Context(), `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	t.Logf("ANALYZE in %s", time.Since(start).Round(time.Second))
	storetest.TimeOperatorPaths(t, s, n)
}
