package dispatch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// attemptsOf lists a task's attempt records from the store.
func (h *harness) attemptsOf(id string) []task.Attempt {
	h.t.Helper()
	as, err := h.store.ListAttempts(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return as
}

// TestAttemptRecords: a target that fails once (500, a body longer than
// the excerpt, a request id and a cookie) and then succeeds leaves two
// records: statuses, outcomes, error class, an excerpt bounded by
// AttemptBodyBytes, the allowed headers only, the replica and the trace
// id the target received.
func TestAttemptRecords(t *testing.T) {
	h := newHarness(t)
	var calls atomic.Int32
	var mu sync.Mutex
	var traceparents []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("Traceparent"))
		mu.Unlock()
		w.Header().Set("X-Request-Id", "req-42")
		w.Header().Set("Set-Cookie", "session=secret")
		w.Header().Set("Content-Type", "text/plain")
		if calls.Add(1) == 1 {
			w.WriteHeader(500)
			w.Write([]byte("boom: the database is on fire"))
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	d := h.dispatcher(func(c *Config) { c.Replica, c.AttemptBodyBytes = "replica-7", 8 })
	defer stop(d)
	id := h.enqueue(srv.URL, nil)
	if tk := h.waitFinal(id); tk.State != task.Succeeded {
		t.Fatalf("task %+v", tk)
	}
	as := h.attemptsOf(id)
	if len(as) != 2 {
		t.Fatalf("attempts %+v, want 2", as)
	}
	want := []struct {
		outcome task.AttemptOutcome
		status  int
		class   task.ErrorClass
		excerpt string
	}{{task.AttemptRetry, 500, task.ErrorHTTPStatus, "boom: th"}, {task.AttemptSucceeded, 200, "", "ok"}}
	for i, a := range as {
		w := want[i]
		if a.Attempt != i+1 || a.Outcome != w.outcome || a.Status != w.status || a.ErrorClass != w.class {
			t.Errorf("attempt %d: %d %s %d %s; want %d %s %d %s", i, a.Attempt, a.Outcome, a.Status, a.ErrorClass, i+1, w.outcome, w.status, w.class)
		}
		if a.ResponseExcerpt == nil || *a.ResponseExcerpt != w.excerpt {
			t.Errorf("attempt %d: excerpt %v, want %q (AttemptBodyBytes 8)", i, a.ResponseExcerpt, w.excerpt)
		}
		if len(a.ResponseHeaders) != 2 || a.ResponseHeaders["X-Request-Id"] != "req-42" || a.ResponseHeaders["Content-Type"] != "text/plain" {
			t.Errorf("attempt %d: headers %v, want Content-Type and X-Request-Id only", i, a.ResponseHeaders)
		}
		if a.Replica != "replica-7" {
			t.Errorf("attempt %d: replica %q", i, a.Replica)
		}
		if a.Duration <= 0 || a.StartedAt.IsZero() || a.FinishedAt.Before(a.StartedAt) {
			t.Errorf("attempt %d: started %v finished %v duration %v", i, a.StartedAt, a.FinishedAt, a.Duration)
		}
		mu.Lock()
		tp := traceparents[i]
		mu.Unlock()
		if len(a.TraceID) != 32 || !strings.Contains(tp, "-"+a.TraceID+"-") {
			t.Errorf("attempt %d: trace id %q, but the target received traceparent %q", i, a.TraceID, tp)
		}
	}
	if as[0].ErrorMessage == "" || !strings.Contains(as[0].ErrorMessage, "500") {
		t.Errorf("the failed attempt's message %q does not name the status", as[0].ErrorMessage)
	}
	if as[1].ErrorMessage != "" {
		t.Errorf("the successful attempt has an error message %q", as[1].ErrorMessage)
	}
}

// TestAttemptExcerptDisabled: AttemptBodyBytes 0 keeps no excerpt, while
// last_error still quotes a failed response's body.
func TestAttemptExcerptDisabled(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		w.Write([]byte("no such hook"))
	}))
	defer srv.Close()
	d := h.dispatcher(nil) // AttemptBodyBytes 0
	defer stop(d)
	id := h.enqueue(srv.URL, nil)
	tk := h.waitFinal(id)
	if !strings.Contains(tk.LastError, "no such hook") {
		t.Errorf("last error %q does not quote the body", tk.LastError)
	}
	as := h.attemptsOf(id)
	if len(as) != 1 || as[0].ResponseExcerpt != nil || as[0].Outcome != task.AttemptFailed || as[0].Status != 404 {
		t.Errorf("attempts %+v, want one failed 404 without excerpt", as)
	}
}

// TestAttemptExcerptBinary: a body that is not UTF-8 is kept as valid
// text within the bound.
func TestAttemptExcerptBinary(t *testing.T) {
	h := newHarness(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte{0xff, 0x00, 'a', 0xc3})
	}))
	defer srv.Close()
	d := h.dispatcher(func(c *Config) { c.AttemptBodyBytes = task.DefaultAttemptBodyBytes })
	defer stop(d)
	id := h.enqueue(srv.URL, nil)
	h.waitFinal(id)
	as := h.attemptsOf(id)
	if len(as) != 1 || as[0].ResponseExcerpt == nil {
		t.Fatalf("attempts %+v", as)
	}
	if e := *as[0].ResponseExcerpt; !utf8.ValidString(e) || e != "\uFFFD\uFFFDa\uFFFD" {
		t.Errorf("excerpt %q, want %q", e, "\uFFFD\uFFFDa\uFFFD")
	}
}

// TestAttemptErrorClasses: a timeout, a refused address and a connection
// error are classed so.
func TestAttemptErrorClasses(t *testing.T) {
	h := newHarness(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	d := h.dispatcher(nil)
	defer stop(d)
	timeout := h.enqueue(h.url+"/?delay=2s", func(nt *store.NewTask) { nt.Timeout = 100 * time.Millisecond; nt.MaxAttempts = 1 })
	refused := h.enqueue(closedURL, func(nt *store.NewTask) { nt.MaxAttempts = 1 })
	forbidden := h.enqueue("http://169.254.169.254/latest", func(nt *store.NewTask) { nt.MaxAttempts = 1 })
	for id, class := range map[string]task.ErrorClass{timeout: task.ErrorTimeout, refused: task.ErrorConnection, forbidden: task.ErrorSSRFRefused} {
		h.waitFinal(id)
		as := h.attemptsOf(id)
		if len(as) != 1 || as[0].ErrorClass != class || as[0].Outcome != task.AttemptFailed || as[0].Status != 0 || as[0].ErrorMessage == "" {
			t.Errorf("%s: attempts %+v, want one failed %s with a message and no status", class, as, class)
		}
	}
}

// TestAttemptReleasedAtShutdown: an attempt abandoned by Stop is in the
// history as released; the task does not count it.
func TestAttemptReleasedAtShutdown(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(nil)
	id := h.enqueue(h.url+"/?delay=10s", nil)
	deadline := time.Now().Add(5 * time.Second)
	for d.busy.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the request is out
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	d.Stop(ctx)
	cancel()
	tk, _ := h.store.GetTask(context.Background(), id)
	if tk.State != task.Available || tk.Attempt != 0 {
		t.Errorf("task %s attempt %d, want available attempt 0", tk.State, tk.Attempt)
	}
	as := h.attemptsOf(id)
	if len(as) != 1 || as[0].Outcome != task.AttemptReleased || as[0].ErrorClass != task.ErrorShutdown || as[0].Attempt != 1 {
		t.Errorf("attempts %+v, want one released (shutdown) attempt 1", as)
	}
}
