package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/testpg"
)

// apiAttempt is an attempt as GET /v1/tasks/{id}/attempts answers it.
type apiAttempt struct {
	Attempt    int     `json:"attempt"`
	StartedAt  *string `json:"started_at"`
	FinishedAt string  `json:"finished_at"`
	Duration   *string `json:"duration"`
	Outcome    string  `json:"outcome"`
	Status     *int    `json:"status"`
	Error      *struct {
		Class   string `json:"class"`
		Message string `json:"message"`
	} `json:"error"`
	ResponseExcerpt *string           `json:"response_excerpt"`
	ResponseHeaders map[string]string `json:"response_headers"`
	Replica         *string           `json:"replica"`
	TraceID         *string           `json:"trace_id"`
}

// TestAttemptHistoryEndToEnd: a receiver that answers 500 with a body
// twice and then 200 leaves three attempts in the task's history, on each
// store: statuses 500, 500, 200, the bodies' starts (bounded by
// SPOOL_ATTEMPT_BODY_BYTES), durations, the replica and the trace id each
// request carried; spool tasks get shows them.
func TestAttemptHistoryEndToEnd(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			var (
				mu           sync.Mutex
				calls        int
				traceparents []string
			)
			recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				n := calls
				traceparents = append(traceparents, r.Header.Get("Traceparent"))
				mu.Unlock()
				w.Header().Set("Content-Type", "text/plain")
				w.Header().Set("X-Request-Id", "rq-"+string(rune('0'+n)))
				w.Header().Set("Set-Cookie", "session=not-for-the-history")
				if n <= 2 {
					w.WriteHeader(500)
					w.Write([]byte("failure number " + string(rune('0'+n)) + ": the upstream database is unavailable"))
					return
				}
				w.Write([]byte("accepted"))
			}))
			defer recv.Close()

			o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_MIGRATE=true", "SPOOL_ATTEMPT_BODY_BYTES=20"}}
			if driver == "postgres" {
				o.dsn = testpg.Shared(t).CreateDB(t)
			}
			in := startServe(t, "serve", o, newKey(t))
			base := "http://" + in.api

			var tk apiTask
			if code := call(t, "POST", base+"/v1/queues/hist/tasks", map[string]any{"target": map[string]any{"url": recv.URL + "/hook"}}, &tk); code != 201 {
				t.Fatalf("enqueue: %d", code)
			}
			waitState(t, in.api, tk.ID, "succeeded", 20*time.Second)

			var got struct {
				Attempts []apiAttempt `json:"attempts"`
			}
			if code := call(t, "GET", base+"/v1/tasks/"+tk.ID+"/attempts", nil, &got); code != 200 {
				t.Fatalf("attempts: %d", code)
			}
			if len(got.Attempts) != 3 {
				t.Fatalf("attempts %+v, want 3", got.Attempts)
			}
			wantExcerpts := []string{"failure number 1: th", "failure number 2: th", "accepted"}
			wantOutcomes := []string{"retry", "retry", "succeeded"}
			wantStatus := []int{500, 500, 200}
			replica := ""
			hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
			for i, a := range got.Attempts {
				if a.Attempt != i+1 || a.Outcome != wantOutcomes[i] || a.Status == nil || *a.Status != wantStatus[i] {
					t.Errorf("attempt %d: number %d, outcome %s, status %v; want %d, %s, %d", i, a.Attempt, a.Outcome, a.Status, i+1, wantOutcomes[i], wantStatus[i])
				}
				if a.ResponseExcerpt == nil || *a.ResponseExcerpt != wantExcerpts[i] {
					t.Errorf("attempt %d: excerpt %v, want %q (SPOOL_ATTEMPT_BODY_BYTES=20)", i, a.ResponseExcerpt, wantExcerpts[i])
				}
				if a.Duration == nil {
					t.Errorf("attempt %d: no duration", i)
				} else if d, err := time.ParseDuration(*a.Duration); err != nil || d <= 0 {
					t.Errorf("attempt %d: duration %q (%v)", i, *a.Duration, err)
				}
				if a.StartedAt == nil || a.FinishedAt == "" || *a.StartedAt > a.FinishedAt {
					t.Errorf("attempt %d: started %v, finished %q", i, a.StartedAt, a.FinishedAt)
				}
				if a.Replica == nil || *a.Replica == "" {
					t.Errorf("attempt %d: no replica", i)
				} else if replica == "" {
					replica = *a.Replica
				} else if *a.Replica != replica {
					t.Errorf("attempt %d: replica %q, the others %q (one serving process)", i, *a.Replica, replica)
				}
				mu.Lock()
				tp := traceparents[i]
				mu.Unlock()
				if a.TraceID == nil || !hexID.MatchString(*a.TraceID) || !strings.Contains(tp, "-"+*a.TraceID+"-") {
					t.Errorf("attempt %d: trace id %v, but the request carried traceparent %q", i, a.TraceID, tp)
				}
				if a.ResponseHeaders["X-Request-Id"] == "" || a.ResponseHeaders["Content-Type"] != "text/plain" {
					t.Errorf("attempt %d: headers %v", i, a.ResponseHeaders)
				}
				if _, ok := a.ResponseHeaders["Set-Cookie"]; ok {
					t.Errorf("attempt %d: kept Set-Cookie", i)
				}
				if i < 2 && (a.Error == nil || a.Error.Class != "http_status" || !strings.Contains(a.Error.Message, "500")) {
					t.Errorf("attempt %d: error %+v, want http_status naming 500", i, a.Error)
				}
				if i == 2 && a.Error != nil {
					t.Errorf("the successful attempt has an error %+v", a.Error)
				}
			}
			var missing map[string]any
			if code := call(t, "GET", base+"/v1/tasks/01890a5d-ac96-774b-bcce-b302099a8057/attempts", nil, &missing); code != 404 {
				t.Errorf("attempts of an unknown task: %d, want 404", code)
			}

			// The CLI shows them.
			cliEnv := []string{"SPOOL_SERVER=" + base, "SPOOL_API_KEY=" + testAPIKey}
			p := startProc(t, "cli tasks get", cliEnv, "tasks", "get", tk.ID)
			if err := p.wait(20 * time.Second); err != nil {
				t.Fatalf("spool tasks get: %v\n%s", err, p.out.String())
			}
			out := p.out.String()
			if !strings.Contains(out, "ATTEMPTS") || strings.Count(out, "http_status") != 2 || !strings.Contains(out, "accepted") || !strings.Contains(out, replica) {
				t.Errorf("spool tasks get:\n%s", out)
			}
			p = startProc(t, "cli tasks get json", cliEnv, "tasks", "get", tk.ID, "--output", "json")
			if err := p.wait(20 * time.Second); err != nil {
				t.Fatalf("spool tasks get --output json: %v\n%s", err, p.out.String())
			}
			var withAttempts struct {
				ID       string       `json:"id"`
				Attempts []apiAttempt `json:"attempts"`
			}
			if err := json.Unmarshal([]byte(p.out.String()), &withAttempts); err != nil || withAttempts.ID != tk.ID || len(withAttempts.Attempts) != 3 {
				t.Errorf("spool tasks get --output json (%v):\n%s", err, p.out.String())
			}
		})
	}
}
