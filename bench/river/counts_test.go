package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestStmtKind(t *testing.T) {
	for q, want := range map[string]string{
		"-- name: JobGetAvailable :many\nWITH locked_jobs AS (\n SELECT id FROM river_job FOR UPDATE SKIP LOCKED)\nUPDATE river_job SET x = 1": "WITH…UPDATE",
		"-- name: JobInsertFastMany :many\nINSERT INTO river_job (a) SELECT 1":                                                                 "INSERT",
		"/* c */ select 1":                     "SELECT",
		"SELECT a - b / c FROM t":              "SELECT",
		"WITH x AS (SELECT 1) SELECT * FROM x": "WITH…SELECT",
		"begin":                                "BEGIN",
		"START TRANSACTION":                    "BEGIN",
		"WITH due AS (SELECT ctid FROM t) DELETE FROM t": "WITH…DELETE",
	} {
		if got := stmtKind(q); got != want {
			t.Errorf("stmtKind(%q) = %q, want %q", q, got, want)
		}
	}
}

// scrapeCounters sums each counter over its labels and skips everything
// that is not a counter of the process's own.
func TestScrapeCounters(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP spool_tasks_finished_total Delivery attempts.
# TYPE spool_tasks_finished_total counter
spool_tasks_finished_total{outcome="succeeded",queue="a"} 3
spool_tasks_finished_total{outcome="failed",queue="a b}"} 2
spool_db_pool_acquires_total 7
spool_workers_busy 4
go_gc_cycles_total 9
promhttp_metric_handler_errors_total{cause="x"} 1
spool_delivery_duration_seconds_count 5
`)
	}))
	defer srv.Close()
	got, err := scrapeCounters(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"spool_tasks_finished_total": 5, "spool_db_pool_acquires_total": 7}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	d := counterDiff(map[string]float64{"a_total": 5, "b_total": 2}, map[string]float64{"a_total": 3, "b_total": 2})
	if len(d) != 1 || d["a_total"] != 2 {
		t.Fatalf("counterDiff = %v", d)
	}
}
