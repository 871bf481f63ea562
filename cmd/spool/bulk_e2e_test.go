package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/testpg"
)

// TestBulkEndToEnd: through the real binary on each store, tasks that a
// target refuses for good are found with the list filters, retried by
// state in requests of 7 until none is left (the tasks fail again at once,
// behind the sweep's cursor, and are not retried twice), then every one
// by the CLI's --all; scheduled tasks are cancelled by ids with the CLI;
// counts and the cancelled metric follow.
func TestBulkEndToEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts func(t *testing.T) serveOpts
	}{
		{"sqlite", func(t *testing.T) serveOpts { return serveOpts{dataDir: t.TempDir()} }},
		{"postgres", func(t *testing.T) serveOpts {
			dsn := testpg.Shared(t).CreateDB(t)
			mig := startProc(t, "migrate", []string{"SPOOL_DATABASE_URL=" + dsn}, "migrate")
			if err := mig.wait(30 * time.Second); err != nil {
				t.Fatalf("spool migrate: %v\n%s", err, mig.out.String())
			}
			return serveOpts{dsn: dsn}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bulkEndToEnd(t, tc.opts(t))
		})
	}
}

func bulkEndToEnd(t *testing.T, o serveOpts) {
	key := newKey(t)
	_, sinkURL := startSink(t, key)
	in := startServe(t, "serve", o, key)
	base := "http://" + in.api

	// 30 tasks the sink refuses for good (400: failed at the first
	// attempt), priorities 0-2; 5 scheduled for later.
	var tasks []map[string]any
	for i := range 30 {
		tasks = append(tasks, map[string]any{"target": map[string]any{"url": sinkURL + "/refuse?status=400"}, "priority": i % 3})
	}
	if code := call(t, "POST", base+"/v1/queues/bulk/tasks", map[string]any{"tasks": tasks}, nil); code != 201 {
		t.Fatalf("enqueue: %d", code)
	}
	var later []string
	for range 5 {
		var tk apiTask
		body := map[string]any{"target": map[string]any{"url": sinkURL + "/later"}, "delay": "1h", "priority": 7}
		if code := call(t, "POST", base+"/v1/queues/bulk/tasks", body, &tk); code != 201 {
			t.Fatalf("enqueue later: %d", code)
		}
		later = append(later, tk.ID)
	}
	waitCount := func(state string, n int) apiQueue {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var q apiQueue
			call(t, "GET", base+"/v1/queues/bulk", nil, &q)
			if q.Counts[state] == n {
				return q
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue counts %v; want %d %s", q.Counts, n, state)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCount("failed", 30)

	// The filters: failed tasks of priority 1 on the sink's host.
	host := strings.Split(strings.TrimPrefix(sinkURL, "http://"), ":")[0]
	q := url.Values{"state": {"failed"}, "priority": {"1"}, "target_host": {host}, "limit": {"3"},
		"created_after": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}}
	found, cursor := 0, ""
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("filtered paging does not end")
		}
		var page struct {
			Tasks []struct {
				Priority int    `json:"priority"`
				State    string `json:"state"`
			} `json:"tasks"`
			NextCursor string `json:"next_cursor"`
		}
		q.Set("cursor", cursor)
		if code := call(t, "GET", base+"/v1/queues/bulk/tasks?"+q.Encode(), nil, &page); code != 200 {
			t.Fatalf("filtered list: %d", code)
		}
		for _, tk := range page.Tasks {
			if tk.Priority != 1 || tk.State != "failed" {
				t.Errorf("listed %+v", tk)
			}
			found++
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if found != 10 {
		t.Errorf("filtered list found %d, want 10", found)
	}

	// Retry every failed task, 7 a request: they fail again at once, but
	// behind the cursor, so the sweep moves each exactly once.
	moved, cursor := 0, ""
	for calls := 0; ; calls++ {
		if calls > 10 {
			t.Fatal("the sweep does not end")
		}
		body := map[string]any{"state": "failed", "limit": 7}
		if cursor != "" {
			body["cursor"] = cursor
		}
		var r struct {
			Count      int    `json:"count"`
			More       bool   `json:"more"`
			NextCursor string `json:"next_cursor"`
		}
		if code := call(t, "POST", base+"/v1/queues/bulk/tasks/retry", body, &r); code != 200 {
			t.Fatalf("bulk retry: %d", code)
		}
		if r.Count > 7 {
			t.Fatalf("one request retried %d, limit 7", r.Count)
		}
		moved += r.Count
		if !r.More {
			break
		}
		cursor = r.NextCursor
		time.Sleep(50 * time.Millisecond) // let some fail again meanwhile
	}
	if moved != 30 {
		t.Errorf("the sweep retried %d tasks, want 30", moved)
	}
	waitCount("failed", 30)

	// The CLI: every failed task, then the scheduled ones by id.
	cliEnv := []string{"SPOOL_SERVER=" + base, "SPOOL_API_KEY=" + testAPIKey}
	cli := func(args ...string) string {
		p := startProc(t, "cli "+strings.Join(args, " "), cliEnv, args...)
		if err := p.wait(20 * time.Second); err != nil {
			t.Fatalf("spool %v: %v\n%s", args, err, p.out.String())
		}
		return p.out.String()
	}
	if out := cli("tasks", "retry", "--queue", "bulk", "--state", "failed", "--all"); !strings.Contains(out, "retried 30 failed tasks of bulk") {
		t.Errorf("tasks retry --all: %s", out)
	}
	out := cli(append([]string{"tasks", "cancel", "--queue", "bulk", "--output", "json"}, later...)...)
	var res struct {
		Count   int `json:"count"`
		Results []struct {
			ID    string `json:"id"`
			State string `json:"state"`
			Error any    `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Count != 5 || len(res.Results) != 5 {
		t.Fatalf("tasks cancel several: %v\n%s", err, out)
	}
	for i, r := range res.Results {
		if r.ID != later[i] || r.State != "cancelled" || r.Error != nil {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	qu := waitCount("failed", 30)
	if qu.Counts["cancelled"] != 5 || qu.Counts["scheduled"] != 0 {
		t.Errorf("counts after the bulk changes: %v", qu.Counts)
	}
	// A key without the write role is refused.
	req, _ := http.NewRequest("POST", base+"/v1/queues/bulk/tasks/retry", bytes.NewReader([]byte(`{"state":"failed"}`)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("bulk retry without a key: %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`spool_tasks_finished_total{outcome="cancelled",queue="bulk"} %d`, 5); !bytes.Contains(metrics, []byte(want)) {
		t.Errorf("metrics lack %s:\n%s", want, grepLines(string(metrics), "spool_tasks_finished"))
	}
}
