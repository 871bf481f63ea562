package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/client/clienttest"
)

const key = "test-api-key-0123456789"

func setup(t *testing.T) (*clienttest.Server, *client.Client, context.Context) {
	t.Helper()
	srv := clienttest.New(t, key)
	c, err := client.New(srv.URL, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return srv, c, ctx
}

func TestNewValidatesURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:8000", "ftp://x", "http://", "http://user:pw@host", "://bad"} {
		if _, err := client.New(u, ""); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
	if _, err := client.New("http://user:secretpw@host", ""); err == nil || strings.Contains(err.Error(), "secretpw") {
		t.Errorf("credentials error = %v", err)
	}
	if _, err := client.New("https://spool.example/prefix/", "k"); err != nil {
		t.Fatal(err)
	}
}

func TestEnqueueWireFormat(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	runAt := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	req := client.EnqueueRequest{
		Target:         client.Target{URL: "http://127.0.0.1:9/hook", Method: "PUT", Headers: map[string]string{"X-A": "1"}},
		Payload:        json.RawMessage(`{"hello":"world"}`),
		ContentType:    "application/vnd.test+json",
		RunAt:          runAt,
		Priority:       client.Ptr(0),
		MaxAttempts:    3,
		Timeout:        10 * time.Second,
		IdempotencyKey: "order-1",
	}
	task, created, err := c.Enqueue(ctx, "emails", req)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("first enqueue reported as a replay")
	}
	last := srv.Last()
	if last.Method != "POST" || last.Path != "/v1/queues/emails/tasks" {
		t.Fatalf("request %s %s", last.Method, last.Path)
	}
	if got := last.Header.Get("Authorization"); got != "Bearer "+key {
		t.Fatalf("Authorization = %q", got)
	}
	if ct := last.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var sent map[string]any
	if err := json.Unmarshal(last.Body, &sent); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"target":          map[string]any{"url": "http://127.0.0.1:9/hook", "method": "PUT", "headers": map[string]any{"X-A": "1"}},
		"payload":         map[string]any{"hello": "world"},
		"content_type":    "application/vnd.test+json",
		"run_at":          "2031-01-02T03:04:05Z",
		"priority":        float64(0), // priority 0 must be sent, not dropped
		"max_attempts":    float64(3),
		"timeout":         "10s",
		"idempotency_key": "order-1",
	}
	if g, w := mustJSON(t, sent), mustJSON(t, want); g != w {
		t.Fatalf("sent\n%s\nwant\n%s", g, w)
	}

	// The decoded task.
	if task.Queue != "emails" || task.State != client.StateScheduled || task.Priority != 0 ||
		task.MaxAttempts != 3 || !task.RunAt.Equal(runAt) || task.Timeout != 10*time.Second ||
		task.Target.Method != "PUT" || task.IdempotencyKey != "order-1" || task.LastError != "" || task.LastStatus != 0 {
		t.Fatalf("decoded task = %+v", task)
	}
	// Unknown fields survive in Raw and in MarshalJSON.
	if !strings.Contains(string(task.Raw), `"payload_size":17`) {
		t.Fatalf("Raw lost an unknown field: %s", task.Raw)
	}
	out, _ := json.Marshal(task)
	if !strings.Contains(string(out), `"payload_size":17`) {
		t.Fatalf("MarshalJSON lost an unknown field: %s", out)
	}

	// Replay with the same key: 200, the same task.
	again, created, err := c.Enqueue(ctx, "emails", req)
	if err != nil {
		t.Fatal(err)
	}
	if created || again.ID != task.ID {
		t.Fatalf("replay: created=%v id=%s, want false %s", created, again.ID, task.ID)
	}
}

func TestEnqueueMinimalAndRawPayload(t *testing.T) {
	t.Parallel()
	srv, _, ctx := setup(t)
	// Without retries the client adds nothing: no generated key.
	c, err := client.New(srv.URL, key, client.WithRetryPolicy(client.RetryPolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	task, _, err := c.Enqueue(ctx, "q", client.EnqueueRequest{Target: client.Target{URL: "http://x/"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(srv.Last().Body); got != `{"target":{"url":"http://x/"}}` {
		t.Fatalf("minimal request body = %s", got)
	}
	if task.Priority != 5 || task.State != client.StateAvailable {
		t.Fatalf("defaults: %+v", task)
	}

	raw := []byte{0, 1, 2, 0xff}
	task, _, err = c.Enqueue(ctx, "q", client.EnqueueRequest{Target: client.Target{URL: "http://x/"}, RawPayload: raw, Delay: 90 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(srv.Last().Body); !strings.Contains(got, `"payload_base64":"AAEC/w=="`) || !strings.Contains(got, `"delay":"1m30s"`) {
		t.Fatalf("raw payload body = %s", got)
	}
	if string(srv.Payload(task.ID)) != string(raw) {
		t.Fatalf("server stored %v", srv.Payload(task.ID))
	}
}

func TestEnqueueValidationError(t *testing.T) {
	t.Parallel()
	_, c, ctx := setup(t)
	_, _, err := c.Enqueue(ctx, "q", client.EnqueueRequest{Priority: client.Ptr(12)})
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %T %v, want *client.Error", err, err)
	}
	if e.Status != 422 || len(e.Fields) != 2 {
		t.Fatalf("error = %+v", e)
	}
	msg := err.Error()
	for _, sub := range []string{"422", "Unprocessable Entity", "invalid task", "target.url: required", "priority: must be 0-9"} {
		if !strings.Contains(msg, sub) {
			t.Errorf("error %q lacks %q", msg, sub)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	if client.StatusOf(err) != 422 {
		t.Errorf("StatusOf = %d", client.StatusOf(err))
	}
}

func TestEnqueueBatch(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	reqs := []client.EnqueueRequest{
		{Target: client.Target{URL: "http://a/"}},
		{Target: client.Target{URL: "http://b/"}, Priority: client.Ptr(1)},
	}
	tasks, err := c.EnqueueBatch(ctx, "q", reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 2 || tasks[1].Priority != 1 || tasks[0].Target.URL != "http://a/" {
		t.Fatalf("batch = %+v", tasks)
	}
	if !strings.HasPrefix(string(srv.Last().Body), `{"tasks":[`) {
		t.Fatalf("batch body = %s", srv.Last().Body)
	}
	// Atomic: one bad task rejects all, the field names the index.
	_, err = c.EnqueueBatch(ctx, "q", append(reqs, client.EnqueueRequest{}))
	if client.StatusOf(err) != 422 || !strings.Contains(err.Error(), "tasks[2].target.url") {
		t.Fatalf("bad batch err = %v", err)
	}
	page, err := c.ListTasks(ctx, "q", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Tasks) != 2 {
		t.Fatalf("after rejected batch, %d tasks", len(page.Tasks))
	}
}

func TestGetCancelRetry(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	task, _, err := c.Enqueue(ctx, "q", client.EnqueueRequest{Target: client.Target{URL: "http://x/"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetTask(ctx, task.ID)
	if err != nil || got.ID != task.ID {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if srv.Last().Path != "/v1/tasks/"+task.ID {
		t.Fatalf("get path %s", srv.Last().Path)
	}

	_, err = c.GetTask(ctx, "missing")
	if client.StatusOf(err) != 404 || !strings.Contains(err.Error(), `task "missing" not found`) {
		t.Fatalf("missing err = %v", err)
	}

	// Retry of an available task conflicts.
	if _, err := c.RetryTask(ctx, task.ID); client.StatusOf(err) != 409 {
		t.Fatalf("retry available = %v", err)
	}
	cancelled, err := c.CancelTask(ctx, task.ID)
	if err != nil || cancelled.State != client.StateCancelled || cancelled.FinishedAt == nil {
		t.Fatalf("cancel = %+v, %v", cancelled, err)
	}
	if last := srv.Last(); last.Method != "POST" || last.Path != "/v1/tasks/"+task.ID+"/cancel" {
		t.Fatalf("cancel request %s %s", last.Method, last.Path)
	}
	if _, err := c.CancelTask(ctx, task.ID); client.StatusOf(err) != 409 {
		t.Fatalf("second cancel = %v", err)
	}
	retried, err := c.RetryTask(ctx, task.ID)
	if err != nil || retried.State != client.StateAvailable {
		t.Fatalf("retry = %+v, %v", retried, err)
	}

	srv.SetState(task.ID, client.StateFailed)
	failed, err := c.GetTask(ctx, task.ID)
	if err != nil || failed.LastStatus != 500 || failed.LastError != "target answered 500" {
		t.Fatalf("failed task = %+v, %v", failed, err)
	}

	if _, err := c.GetTask(ctx, " "); err == nil {
		t.Fatal("empty id accepted")
	}
}

func TestPathEscaping(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	_, err := c.GetTask(ctx, "a/b?c")
	if client.StatusOf(err) != 404 {
		t.Fatalf("err = %v", err)
	}
	if got := srv.Last().Path; got != "/v1/tasks/a%2Fb%3Fc" {
		t.Fatalf("path = %s", got)
	}
}

func TestListTasksPaging(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	var ids []string
	for range 5 {
		task, _, err := c.Enqueue(ctx, "q", client.EnqueueRequest{Target: client.Target{URL: "http://x/"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ID)
	}
	srv.SetState(ids[1], client.StateFailed)

	var seen []string
	opts := client.ListOptions{Limit: 2}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging never ended")
		}
		page, err := c.ListTasks(ctx, "q", opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range page.Tasks {
			seen = append(seen, tk.ID)
		}
		if page.NextCursor == "" {
			break
		}
		opts.Cursor = page.NextCursor
	}
	if strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Fatalf("paged ids %v, want %v", seen, ids)
	}
	if q := srv.Last().Query; !strings.Contains(q, "limit=2") || !strings.Contains(q, "cursor=") {
		t.Fatalf("query = %s", q)
	}

	page, err := c.ListTasks(ctx, "q", client.ListOptions{State: client.StateFailed})
	if err != nil || len(page.Tasks) != 1 || page.Tasks[0].ID != ids[1] {
		t.Fatalf("state filter = %+v, %v", page, err)
	}
	page, err = c.ListTasks(ctx, "empty", client.ListOptions{})
	if err != nil || page.Tasks == nil || len(page.Tasks) != 0 {
		t.Fatalf("empty queue = %+v, %v", page, err)
	}
	if _, err := c.ListTasks(ctx, "q", client.ListOptions{State: "bogus"}); client.StatusOf(err) != 422 {
		t.Fatalf("bad state = %v", err)
	}
}

func TestQueues(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	if qs, err := c.ListQueues(ctx); err != nil || len(qs) != 0 {
		t.Fatalf("no queues = %v, %v", qs, err)
	}
	for _, q := range []string{"b", "a"} {
		if _, _, err := c.Enqueue(ctx, q, client.EnqueueRequest{Target: client.Target{URL: "http://x/"}}); err != nil {
			t.Fatal(err)
		}
	}
	qs, err := c.ListQueues(ctx)
	if err != nil || len(qs) != 2 || qs[0].Name != "a" {
		t.Fatalf("queues = %+v, %v", qs, err)
	}
	q, err := c.GetQueue(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if q.Counts[client.StateAvailable] != 1 || q.Timeout != 30*time.Second || q.MaxAttempts != 25 {
		t.Fatalf("queue = %+v", q)
	}

	q, err = c.UpdateQueue(ctx, "a", client.QueuePatch{Concurrency: client.Ptr(0), Timeout: client.Ptr(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(srv.Last().Body); got != `{"concurrency":0,"timeout":"10s"}` {
		t.Fatalf("patch body = %s", got)
	}
	if q.Timeout != 10*time.Second {
		t.Fatalf("patched = %+v", q)
	}
	q, err = c.PauseQueue(ctx, "a")
	if err != nil || !q.Paused {
		t.Fatalf("pause = %+v, %v", q, err)
	}
	if got := string(srv.Last().Body); got != `{"paused":true}` || srv.Last().Method != "PATCH" {
		t.Fatalf("pause sent %s %s", srv.Last().Method, got)
	}
	q, err = c.ResumeQueue(ctx, "a")
	if err != nil || q.Paused {
		t.Fatalf("resume = %+v, %v", q, err)
	}
	if got := string(srv.Last().Body); got != `{"paused":false}` {
		t.Fatalf("resume sent %s", got)
	}
	if _, err := c.UpdateQueue(ctx, "a", client.QueuePatch{MaxAttempts: client.Ptr(0)}); client.StatusOf(err) != 422 {
		t.Fatalf("bad patch = %v", err)
	}
	if _, err := c.GetQueue(ctx, "nope"); client.StatusOf(err) != 404 {
		t.Fatalf("missing queue = %v", err)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c, _ := client.New(srv.URL, "wrong-key")
	_, err := c.ListQueues(context.Background())
	if client.StatusOf(err) != 401 {
		t.Fatalf("wrong key = %v", err)
	}
	if strings.Contains(err.Error(), "wrong-key") {
		t.Fatalf("error echoes the key: %v", err)
	}
	c, _ = client.New(srv.URL, "")
	if _, err := c.ListQueues(context.Background()); client.StatusOf(err) != 401 {
		t.Fatalf("no key = %v", err)
	}
	if h := srv.Last().Header.Get("Authorization"); h != "" {
		t.Fatalf("empty key sent Authorization %q", h)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	srv, _, ctx := setup(t)
	c, _ := client.New(srv.URL, "") // health needs no key
	if err := c.Livez(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Readyz(ctx); err != nil {
		t.Fatal(err)
	}
	srv.SetReady(false)
	if err := c.Readyz(ctx); client.StatusOf(err) != 503 {
		t.Fatalf("not ready = %v", err)
	}
	srv.Close()
	if err := c.Livez(ctx); err == nil || client.StatusOf(err) != 0 {
		t.Fatalf("closed server = %v", err)
	}
}

func TestNonProblemError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>\n<body>upstream\n down</body></html>"))
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	_, err := c.GetTask(context.Background(), "x")
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 502 {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "upstream down") {
		t.Fatalf("message = %q", err.Error())
	}
}

func TestTolerantDecoding(t *testing.T) {
	t.Parallel()
	var tk client.Task
	data := `{"id":"x","queue":"q","state":"failed","attempt":3,"max_attempts":3,"priority":5,
	"run_at":"2030-01-01T00:00:00Z","created_at":"2030-01-01T00:00:00.123456Z","updated_at":"2030-01-01T00:00:01Z",
	"target":{"url":"http://x/","method":"POST"},"last_error":null,"last_status":null,"timeout":12.5,"novel":{"a":[1]}}`
	if err := json.Unmarshal([]byte(data), &tk); err != nil {
		t.Fatal(err)
	}
	if tk.LastError != "" || tk.LastStatus != 0 || tk.Timeout != 12500*time.Millisecond || tk.Attempt != 3 {
		t.Fatalf("task = %+v", tk)
	}
	if err := json.Unmarshal([]byte(`{"id":"x","timeout":"soon"}`), &tk); err == nil {
		t.Fatal("bad duration accepted")
	}
	// Without Raw, MarshalJSON writes the API's shape.
	out, err := json.Marshal(client.Task{ID: "y", Timeout: time.Second, LastStatus: 503})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{`"id":"y"`, `"timeout":"1s"`, `"last_status":503`, `"last_error":null`} {
		if !strings.Contains(string(out), sub) {
			t.Errorf("%s lacks %s", out, sub)
		}
	}
}

func TestContextCancel(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	c, _ := client.New(srv.URL, "")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.ListQueues(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDestinations(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	if ds, err := c.ListDestinations(ctx); err != nil || ds == nil || len(ds) != 0 {
		t.Fatalf("no destinations = %#v, %v", ds, err)
	}

	// The name travels as one escaped path segment; the server normalizes it.
	d, err := c.UpdateDestination(ctx, "https://api.example.com", client.DestinationPatch{MaxConcurrency: client.Ptr(0), RateLimit: client.Ptr(2.5)})
	if err != nil {
		t.Fatal(err)
	}
	last := srv.Last()
	if last.Method != "PATCH" || last.Path != "/v1/destinations/https:%2F%2Fapi.example.com" {
		t.Fatalf("sent %s %s", last.Method, last.Path)
	}
	if got := string(last.Body); got != `{"max_concurrency":0,"rate_limit":2.5}` {
		t.Fatalf("patch body = %s", got)
	}
	if d.Name != "https://api.example.com:443" || d.RateLimit != 2.5 || d.MaxConcurrency != 0 || d.LimitState != "slow_start" ||
		d.Breaker != "closed" || d.OpenUntil != nil || d.HoldUntil != nil || d.SuccessRate != 1 {
		t.Fatalf("created = %+v", d)
	}
	if _, err := c.UpdateDestination(ctx, "https://api.example.com:443", client.DestinationPatch{MaxConcurrency: client.Ptr(4)}); err != nil {
		t.Fatal(err)
	}
	if got := string(srv.Last().Body); got != `{"max_concurrency":4}` {
		t.Fatalf("patch body = %s", got)
	}

	// Every field of the documented shape is read.
	openUntil := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	srv.SetDestination(clienttest.Destination{
		Destination: "http://b.example:8080", Limit: 12.5, LimitState: "learned", MaxConcurrency: 20, RateLimit: 0.5,
		InFlight: 3, Replicas: 2, Breaker: "open", ConsecutiveFailures: 5, OpenUntil: &openUntil, Cooldown: "30s",
		HoldUntil: &openUntil, SuccessRate: 0.9, Latency: "12.5ms", RecentSuccesses: 9, RecentFailures: 1,
		CreatedAt: openUntil, UpdatedAt: openUntil,
	})
	d, err = c.GetDestination(ctx, "http://B.example:8080/hooks?x=1")
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Last().Path; got != "/v1/destinations/http:%2F%2FB.example:8080%2Fhooks%3Fx=1" {
		t.Fatalf("path = %s", got)
	}
	if d.Name != "http://b.example:8080" || d.Limit != 12.5 || d.LimitState != "learned" || d.MaxConcurrency != 20 ||
		d.RateLimit != 0.5 || d.InFlight != 3 || d.Replicas != 2 || d.Breaker != "open" || d.ConsecutiveFailures != 5 ||
		d.OpenUntil == nil || !d.OpenUntil.Equal(openUntil) || d.Cooldown != 30*time.Second || d.HoldUntil == nil ||
		d.SuccessRate != 0.9 || d.Latency != 12500*time.Microsecond || d.RecentSuccesses != 9 || d.RecentFailures != 1 ||
		!d.CreatedAt.Equal(openUntil) || !d.UpdatedAt.Equal(openUntil) {
		t.Fatalf("destination = %+v", d)
	}
	// Raw keeps what the server sent.
	if out, _ := json.Marshal(d); !strings.Contains(string(out), `"cooldown":"30s"`) || !strings.Contains(string(out), `"latency":"12.5ms"`) {
		t.Fatalf("re-encoded = %s", out)
	}

	ds, err := c.ListDestinations(ctx)
	if err != nil || len(ds) != 2 || ds[0].Name != "http://b.example:8080" || ds[1].Name != "https://api.example.com:443" || ds[1].MaxConcurrency != 4 {
		t.Fatalf("destinations = %+v, %v", ds, err)
	}

	// Errors carry the server's status.
	if _, err := c.GetDestination(ctx, "https://nope.example"); client.StatusOf(err) != 404 {
		t.Fatalf("missing = %v", err)
	}
	if _, err := c.GetDestination(ctx, "ftp://x"); client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "destination") {
		t.Fatalf("bad name = %v", err)
	}
	if _, err := c.UpdateDestination(ctx, "https://api.example.com", client.DestinationPatch{MaxConcurrency: client.Ptr(-1)}); client.StatusOf(err) != 422 {
		t.Fatalf("bad patch = %v", err)
	}
	if _, err := c.UpdateDestination(ctx, "https://api.example.com", client.DestinationPatch{}); client.StatusOf(err) != 422 {
		t.Fatalf("empty patch = %v", err)
	}
	for _, name := range []string{"", "  "} {
		if _, err := c.GetDestination(ctx, name); err == nil || client.StatusOf(err) != 0 {
			t.Fatalf("GetDestination(%q) = %v, want a client-side error", name, err)
		}
	}
}

// TestDestinationTolerantDecoding: nulls and absent figures decode as
// zero values, unknown fields are kept in Raw.
func TestDestinationTolerantDecoding(t *testing.T) {
	t.Parallel()
	var d client.Destination
	data := `{"destination":"https://h:443","breaker":"closed","open_until":null,"hold_until":null,"cooldown":null,"latency":0.25,"novel":true}`
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		t.Fatal(err)
	}
	if d.Name != "https://h:443" || d.OpenUntil != nil || d.Cooldown != 0 || d.Latency != 250*time.Millisecond || !strings.Contains(string(d.Raw), "novel") {
		t.Fatalf("destination = %+v", d)
	}
	out, err := json.Marshal(client.Destination{Name: "https://h:443", Cooldown: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{`"destination":"https://h:443"`, `"cooldown":"1s"`, `"open_until":null`, `"latency":"0s"`} {
		if !strings.Contains(string(out), sub) {
			t.Errorf("%s lacks %s", out, sub)
		}
	}
}

func TestAttempts(t *testing.T) {
	srv, c, ctx := setup(t)
	tk, _, err := c.Enqueue(ctx, "q", client.EnqueueRequest{Target: client.Target{URL: "http://x/"}})
	if err != nil {
		t.Fatal(err)
	}
	as, err := c.Attempts(ctx, tk.ID)
	if err != nil || as == nil || len(as) != 0 {
		t.Fatalf("Attempts of a new task = %#v, %v; want [] and no error", as, err)
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dur, status, excerpt, trace := "250ms", 503, "busy", "4bf92f3577b34da6a3ce929d0e0e4736"
	srv.AddAttempt(tk.ID, clienttest.Attempt{Attempt: 1, StartedAt: &start, FinishedAt: start.Add(250 * time.Millisecond), Duration: &dur,
		Outcome: "retry", Status: &status, Error: &clienttest.AttemptError{Class: "http_status", Message: "HTTP 503"},
		ResponseExcerpt: &excerpt, ResponseHeaders: map[string]string{"Retry-After": "5"}, TraceID: &trace})
	srv.AddAttempt(tk.ID, clienttest.Attempt{Attempt: 2, FinishedAt: start.Add(time.Minute), Outcome: "succeeded"})
	as, err = c.Attempts(ctx, tk.ID)
	if err != nil || len(as) != 2 {
		t.Fatalf("Attempts = %v, %v", as, err)
	}
	a := as[0]
	if a.Attempt != 1 || !a.StartedAt.Equal(start) || a.Duration != 250*time.Millisecond || a.Outcome != client.AttemptRetry || a.Status != 503 ||
		a.Error == nil || a.Error.Class != "http_status" || a.ResponseExcerpt == nil || *a.ResponseExcerpt != "busy" ||
		a.ResponseHeaders["Retry-After"] != "5" || a.Replica != "" || a.TraceID != trace {
		t.Errorf("first attempt = %+v", a)
	}
	if b := as[1]; b.StartedAt != nil || b.Duration != 0 || b.Status != 0 || b.Error != nil || b.ResponseExcerpt != nil || b.Outcome != client.AttemptSucceeded {
		t.Errorf("second attempt = %+v", b)
	}
	_, err = c.Attempts(ctx, "01890a5d-ac96-774b-bcce-b302099a8057")
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
		t.Errorf("Attempts of an unknown task: %v, want a 404 *client.Error", err)
	}
	if _, err := c.Attempts(ctx, " "); err == nil {
		t.Error("Attempts of an empty id: no error")
	}
}

func TestListFiltersAndBulk(t *testing.T) {
	t.Parallel()
	srv, c, ctx := setup(t)
	var ids []string
	for i := range 30 {
		p := i % 5
		task, _, err := c.Enqueue(ctx, "q", client.EnqueueRequest{
			Target: client.Target{URL: fmt.Sprintf("http://h%d.example/", i%2)}, Priority: &p})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ID)
	}
	// The filters go on the query string.
	two := 2
	from := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := c.ListTasks(ctx, "q", client.ListOptions{Priority: &two, TargetHost: "h0.example", IdempotencyKey: "k",
		CreatedAfter: from, RunBefore: from.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	q, _ := url.ParseQuery(srv.Last().Query)
	for k, v := range map[string]string{"priority": "2", "target_host": "h0.example", "idempotency_key": "k",
		"created_after": "2026-01-02T03:04:05Z", "run_before": "2026-01-02T04:04:05Z"} {
		if q.Get(k) != v {
			t.Errorf("query %s = %q, want %q (%s)", k, q.Get(k), v, srv.Last().Query)
		}
	}
	// AllTasks follows a cursor past empty pages: priority 4 on h1 (tasks
	// 9, 19, 29) with pages of 1 scanning 10 tasks each.
	four := 4
	var got []string
	for tk, err := range c.AllTasks(ctx, "q", client.ListOptions{Priority: &four, TargetHost: "h1.example", Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tk.ID)
	}
	if want := []string{ids[9], ids[19], ids[29]}; !slices.Equal(got, want) {
		t.Errorf("AllTasks(filtered) = %v, want %v", got, want)
	}

	// Bulk by ids: a result per id.
	r, err := c.CancelTasks(ctx, "q", []string{ids[0], ids[1], "0190a000-0000-7000-8000-999999999999"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 2 || len(r.Results) != 3 || r.Results[0].State != client.StateCancelled || r.Results[0].Error != nil ||
		r.Results[2].Error == nil || r.Results[2].Error.Status != 404 {
		t.Errorf("CancelTasks = %+v", r)
	}
	if !strings.Contains(string(srv.Last().Body), `"ids":[`) || !strings.HasSuffix(srv.Last().Path, "/v1/queues/q/tasks/cancel") {
		t.Errorf("CancelTasks sent %s %s", srv.Last().Path, srv.Last().Body)
	}
	// Bulk by state, looping on the cursor.
	o, moved := client.SweepOptions{Limit: 1}, 0
	for range 5 {
		r, err := c.RetryTasksInState(ctx, "q", client.StateCancelled, o)
		if err != nil {
			t.Fatal(err)
		}
		moved += r.Count
		if !r.More {
			break
		}
		o.Cursor = r.NextCursor
	}
	if moved != 2 {
		t.Errorf("RetryTasksInState moved %d, want 2", moved)
	}
	if r, err := c.CancelTasksInState(ctx, "q", client.StateAvailable, client.SweepOptions{}); err != nil || r.Count != 30 || r.More {
		t.Errorf("CancelTasksInState = %+v, %v", r, err)
	}
	if r, err := c.RetryTasks(ctx, "q", ids[:3]); err != nil || r.Count != 3 {
		t.Errorf("RetryTasks = %+v, %v", r, err)
	}
	if _, err := c.RetryTasksInState(ctx, "q", client.StateSucceeded, client.SweepOptions{}); client.StatusOf(err) != 422 {
		t.Errorf("RetryTasksInState(succeeded) = %v, want 422", err)
	}
}
