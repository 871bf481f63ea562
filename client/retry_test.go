package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/client/clienttest"
)

// fast retries quickly so tests measure the policy, not the clock.
var fast = client.RetryPolicy{MaxAttempts: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}

func newClient(t *testing.T, srv *clienttest.Server, p client.RetryPolicy) *client.Client {
	t.Helper()
	c, err := client.New(srv.URL, key, client.WithRetryPolicy(p))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var target = client.Target{URL: "http://127.0.0.1:9/hook"}

func TestEnqueueLostAnswerStoresOneTask(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	srv.DropNext(1) // the first attempt commits, its answer is lost
	task, created, err := c.Enqueue(ctxFor(t), "q", client.EnqueueRequest{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if srv.Requests() != 2 || srv.Tasks() != 1 {
		t.Fatalf("%d requests stored %d tasks, want 2 and 1", srv.Requests(), srv.Tasks())
	}
	// The replay is of the call's own first attempt: created, from the
	// caller's point of view; the server says it was a replay.
	if !created || !task.IdempotentReplay || task.IdempotencyKey == "" {
		t.Fatalf("created %v, replay %v, key %q", created, task.IdempotentReplay, task.IdempotencyKey)
	}
}

func TestEnqueueLostAnswerWithoutRetries(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, client.RetryPolicy{MaxAttempts: 1})
	srv.DropNext(1)
	if _, _, err := c.Enqueue(ctxFor(t), "q", client.EnqueueRequest{Target: target}); err == nil {
		t.Fatal("a lost answer without retries succeeded")
	}
	if srv.Requests() != 1 || srv.Tasks() != 1 {
		t.Fatalf("%d requests, %d tasks", srv.Requests(), srv.Tasks())
	}
	if string(srv.Last().Body) != `{"target":{"url":"http://127.0.0.1:9/hook"}}` {
		t.Fatalf("without retries the client added to the request: %s", srv.Last().Body)
	}
}

func TestEnqueueCallerKeyReplay(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	r := client.EnqueueRequest{Target: target, IdempotencyKey: "order-7"}
	first, created, err := c.Enqueue(ctxFor(t), "q", r)
	if err != nil || !created {
		t.Fatalf("first: created %v, %v", created, err)
	}
	again, created, err := c.Enqueue(ctxFor(t), "q", r)
	if err != nil || created || again.ID != first.ID || !again.IdempotentReplay {
		t.Fatalf("second: created %v, id %s vs %s, %v", created, again.ID, first.ID, err)
	}
	// Another request under the key: 422 with the problem's extension members.
	_, _, err = c.Enqueue(ctxFor(t), "q", client.EnqueueRequest{Target: client.Target{URL: "http://other/"}, IdempotencyKey: "order-7"})
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 422 || len(e.Fields) != 1 || e.Fields[0].Field != "idempotency_key" {
		t.Fatalf("conflict: %v", err)
	}
	if string(e.Extensions["task_id"]) != `"`+first.ID+`"` || string(e.Extensions["idempotency_key"]) != `"order-7"` {
		t.Fatalf("extensions %s", e.Extensions)
	}
	if srv.Requests() != 3 {
		t.Fatalf("a 422 was retried: %d requests", srv.Requests())
	}
}

func TestEnqueueBatchLostAnswer(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	rs := []client.EnqueueRequest{{Target: target}, {Target: target, IdempotencyKey: "mine"}}
	srv.DropNext(1)
	tasks, err := c.EnqueueBatch(ctxFor(t), "q", rs)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Tasks() != 2 || len(tasks) != 2 || !tasks[0].IdempotentReplay || tasks[1].IdempotencyKey != "mine" {
		t.Fatalf("stored %d, answered %+v", srv.Tasks(), tasks)
	}
	if rs[0].IdempotencyKey != "" {
		t.Fatal("the client wrote a generated key into the caller's slice")
	}
}

func TestRetriesOn429And503(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	srv.FailNext(2, http.StatusServiceUnavailable, "")
	if _, err := c.ListQueues(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if srv.Requests() != 3 {
		t.Fatalf("%d requests, want 3", srv.Requests())
	}

	// Retry-After (seconds) is waited for, even when the backoff is shorter.
	srv.FailNext(1, http.StatusTooManyRequests, "1")
	start := time.Now()
	if _, err := c.ListQueues(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < time.Second {
		t.Fatalf("retried after %s, before the Retry-After of 1s", el)
	}
}

func TestRetriesGiveUp(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	srv.FailNext(10, http.StatusServiceUnavailable, "")
	_, err := c.GetQueue(ctxFor(t), "q")
	if client.StatusOf(err) != 503 || srv.Requests() != 3 {
		t.Fatalf("err %v after %d requests, want 503 after 3", err, srv.Requests())
	}
}

func TestRetryAfterBeyondPolicyEndsAtOnce(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	srv.FailNext(1, http.StatusTooManyRequests, "3600")
	_, err := c.ListQueues(ctxFor(t))
	var e *client.Error
	if !errors.As(err, &e) || e.RetryAfter != time.Hour || srv.Requests() != 1 {
		t.Fatalf("err %v (RetryAfter %v) after %d requests", err, e, srv.Requests())
	}
}

func TestRetryStopsAtDeadline(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	srv.FailNext(1, http.StatusServiceUnavailable, "5")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.ListQueues(ctx)
	if client.StatusOf(err) != 503 || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("err %v after %s: want the 503 at once, no wait past the deadline", err, time.Since(start))
	}
}

func TestUnsafeRequestsNotRetried(t *testing.T) {
	t.Parallel()
	srv := clienttest.New(t, key)
	c := newClient(t, srv, fast)
	task, _, err := c.Enqueue(ctxFor(t), "q", client.EnqueueRequest{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	before := srv.Requests()
	srv.FailNext(1, http.StatusServiceUnavailable, "")
	if _, err := c.CancelTask(ctxFor(t), task.ID); client.StatusOf(err) != 503 {
		t.Fatalf("cancel: %v", err)
	}
	srv.DropNext(1)
	if _, err := c.RetryTask(ctxFor(t), task.ID); err == nil {
		t.Fatal("retry with a lost answer succeeded")
	}
	if n := srv.Requests() - before; n != 2 {
		t.Fatalf("cancel and retry sent %d requests, want 1 each", n)
	}
	// Other 4xx are final for every request.
	before = srv.Requests()
	if _, err := c.GetTask(ctxFor(t), "nope"); client.StatusOf(err) != 404 || srv.Requests()-before != 1 {
		t.Fatalf("404: %v after %d requests", err, srv.Requests()-before)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestConnectionErrorsRetriedWhenSafe(t *testing.T) {
	t.Parallel()
	var sent atomic.Int32
	refused := roundTripFunc(func(*http.Request) (*http.Response, error) {
		sent.Add(1)
		return nil, errors.New("connect: connection refused")
	})
	c, err := client.New("http://127.0.0.1:9", "", client.WithRetryPolicy(fast), client.WithHTTPClient(&http.Client{Transport: refused}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetTask(ctxFor(t), "x"); err == nil || sent.Load() != 3 {
		t.Fatalf("GET: %v after %d attempts, want 3", err, sent.Load())
	}
	sent.Store(0)
	if _, err := c.CancelTask(ctxFor(t), "x"); err == nil || sent.Load() != 1 {
		t.Fatalf("cancel: %v after %d attempts, want 1", err, sent.Load())
	}
	sent.Store(0)
	if _, err := c.UpdateQueue(ctxFor(t), "q", client.QueuePatch{Paused: client.Ptr(true)}); err == nil || sent.Load() != 3 {
		t.Fatalf("PATCH: %v after %d attempts, want 3", err, sent.Load())
	}
	// A cancelled context ends the retries.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sent.Store(0)
	if _, err := c.GetTask(ctx, "x"); err == nil || sent.Load() > 1 {
		t.Fatalf("cancelled: %v after %d attempts", err, sent.Load())
	}
}

func TestProblemFields(t *testing.T) {
	t.Parallel()
	when := time.Now().Add(90 * time.Second).UTC().Truncate(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", when.Format(http.TimeFormat))
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"type":"https://spool.example/problems/gone","title":"Conflict","status":409,
			"detail":"the task was pruned","instance":"/v1/queues/q/tasks","errors":[{"field":"idempotency_key","detail":"pruned"}],
			"idempotency_key":"k","task_id":"t-1"}`))
	}))
	defer srv.Close()
	c, _ := client.New(srv.URL, "")
	_, _, err := c.Enqueue(ctxFor(t), "q", client.EnqueueRequest{Target: target})
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("err %T %v", err, err)
	}
	if e.Status != 409 || e.Type != "https://spool.example/problems/gone" || e.Title != "Conflict" ||
		e.Detail != "the task was pruned" || e.Instance != "/v1/queues/q/tasks" || len(e.Fields) != 1 {
		t.Fatalf("error %+v", e)
	}
	if e.RetryAfter < 80*time.Second || e.RetryAfter > 91*time.Second {
		t.Fatalf("RetryAfter from an HTTP date = %s, want about 90s", e.RetryAfter)
	}
	if len(e.Extensions) != 2 || string(e.Extensions["task_id"]) != `"t-1"` {
		t.Fatalf("extensions %s", e.Extensions)
	}
}
