package api

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestListAttempts: a task's attempts come back oldest first in the
// documented shape (the schema check of testEnv.do holds every field),
// with nulls for what an attempt lacks.
func TestListAttempts(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := t.Context()
		tk := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"}}`), 201))
		if got := decode[attemptListJSON](t, want(t, e.do("GET", "/v1/tasks/"+tk.ID+"/attempts", "", "Authorization", "Bearer "+readerKey), 200)); got.Attempts == nil || len(got.Attempts) != 0 {
			t.Fatalf("a new task's attempts = %#v, want []", got.Attempts)
		}
		lease := func() store.Lease {
			t.Helper()
			ls, err := st.Lease(ctx, store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Minute})
			if err != nil || len(ls) != 1 {
				t.Fatalf("Lease = %v, %v", ls, err)
			}
			return ls[0]
		}
		start := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
		body := "upstream says no"
		l1 := lease()
		c1 := store.Completion{LeaseRef: store.LeaseRef{TaskID: tk.ID, Token: l1.Token}, Outcome: store.Retry, LastStatus: 502,
			Attempt: &task.Attempt{Attempt: 1, Outcome: task.AttemptRetry, StartedAt: start, FinishedAt: start.Add(1500 * time.Millisecond),
				Duration: 1500 * time.Millisecond, Status: 502, ErrorClass: task.ErrorHTTPStatus, ErrorMessage: "HTTP 502 Bad Gateway: upstream says no",
				ResponseExcerpt: &body, ResponseHeaders: map[string]string{"Content-Type": "text/plain"}, Replica: "r1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}}
		if acc, err := st.Complete(ctx, []store.Completion{c1}); err != nil || !acc[0] {
			t.Fatalf("Complete = %v, %v", acc, err)
		}
		l2 := lease()
		c2 := store.Completion{LeaseRef: store.LeaseRef{TaskID: tk.ID, Token: l2.Token}, Outcome: store.Retry,
			Attempt: &task.Attempt{Attempt: 2, Outcome: task.AttemptRetry, StartedAt: start.Add(time.Minute), FinishedAt: start.Add(time.Minute + 30*time.Second),
				Duration: 30 * time.Second, ErrorClass: task.ErrorTimeout, ErrorMessage: "timeout: no response within 30s", Replica: "r2",
				TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}}
		if acc, err := st.Complete(ctx, []store.Completion{c2}); err != nil || !acc[0] {
			t.Fatalf("Complete = %v, %v", acc, err)
		}
		r := want(t, e.do("GET", "/v1/tasks/"+tk.ID+"/attempts", ""), 200)
		var got struct {
			Attempts []map[string]any `json:"attempts"`
		}
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Attempts) != 2 {
			t.Fatalf("attempts %s, want 2", r.Body)
		}
		a, b := got.Attempts[0], got.Attempts[1]
		for k, w := range map[string]any{"attempt": 1.0, "started_at": "2026-01-02T03:04:05.123456Z", "finished_at": "2026-01-02T03:04:06.623456Z",
			"duration": "1.5s", "outcome": "retry", "status": 502.0, "response_excerpt": body, "replica": "r1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"} {
			if a[k] != w {
				t.Errorf("first attempt %s = %v, want %v", k, a[k], w)
			}
		}
		if e, _ := a["error"].(map[string]any); e["class"] != "http_status" || e["message"] != "HTTP 502 Bad Gateway: upstream says no" {
			t.Errorf("first attempt error = %v", a["error"])
		}
		if h, _ := a["response_headers"].(map[string]any); h["Content-Type"] != "text/plain" || len(h) != 1 {
			t.Errorf("first attempt headers = %v", a["response_headers"])
		}
		for k, w := range map[string]any{"attempt": 2.0, "duration": "30s", "status": nil, "response_excerpt": nil, "replica": "r2"} {
			if b[k] != w {
				t.Errorf("second attempt %s = %v, want %v", k, b[k], w)
			}
		}
		if e, _ := b["error"].(map[string]any); e["class"] != "timeout" {
			t.Errorf("second attempt error = %v", b["error"])
		}
		if h, ok := b["response_headers"].(map[string]any); !ok || len(h) != 0 {
			t.Errorf("second attempt headers = %v, want {}", b["response_headers"])
		}
		want(t, e.do("GET", "/v1/tasks/not-a-task/attempts", ""), 404)
	})
}
