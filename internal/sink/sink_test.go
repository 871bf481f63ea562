package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/webhook"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	s, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := webhook.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// deliver sends one delivery to srv with path+query, signed with key when
// key is non-nil, and returns the status.
func deliver(t *testing.T, srv *httptest.Server, pathQuery, id string, key []byte, body string) int {
	t.Helper()
	code, err := post(srv, pathQuery, id, key, body)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// post is deliver for goroutines, which must not call t.Fatal.
func post(srv *httptest.Server, pathQuery, id string, key []byte, body string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, srv.URL+pathQuery, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	webhook.SetHeaders(req.Header, [][]byte{key}, id, time.Now(), []byte(body))
	resp, err := srv.Client().Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func getStats(t *testing.T, srv *httptest.Server) Stats {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /stats = %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET /stats content type %q", ct)
	}
	// Decode into a map first to hold the exact JSON names.
	var raw map[string]int64
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"received", "unique", "duplicates", "bad_signatures"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("GET /stats lacks %q: %v", k, raw)
		}
	}
	return Stats{Received: raw["received"], Unique: raw["unique"], Duplicates: raw["duplicates"], BadSignatures: raw["bad_signatures"]}
}

func TestSignedDeliveriesAndDuplicates(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	s := New(Config{Keys: [][]byte{key}})
	srv := httptest.NewServer(s)
	defer srv.Close()

	if got := deliver(t, srv, "/hook", "a", key, `{"n":1}`); got != 200 {
		t.Fatalf("first delivery = %d", got)
	}
	if got := deliver(t, srv, "/hook", "b", key, `{"n":2}`); got != 200 {
		t.Fatalf("second id = %d", got)
	}
	if got := deliver(t, srv, "/hook", "a", key, `{"n":1}`); got != 200 {
		t.Fatalf("redelivery = %d", got)
	}
	// Wrong key, unsigned and tampered: 401, not received.
	if got := deliver(t, srv, "/hook", "c", newKey(t), "x"); got != 401 {
		t.Fatalf("wrong key = %d, want 401", got)
	}
	if got := deliver(t, srv, "/hook", "c", nil, "x"); got != 401 {
		t.Fatalf("unsigned = %d, want 401", got)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", strings.NewReader("tampered"))
	webhook.SetHeaders(req.Header, [][]byte{key}, "c", time.Now(), []byte("original"))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("tampered = %d, want 401", resp.StatusCode)
	}

	want := Stats{Received: 3, Unique: 2, Duplicates: 1, BadSignatures: 3}
	if got := getStats(t, srv); got != want {
		t.Fatalf("stats = %+v, want %+v", got, want)
	}
	if s.Seen("a") != 2 || s.Seen("b") != 1 || s.Seen("c") != 0 {
		t.Fatalf("Seen a=%d b=%d c=%d", s.Seen("a"), s.Seen("b"), s.Seen("c"))
	}
}

func TestUnsignedAccepted(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	if got := deliver(t, srv, "/", "x", nil, "hi"); got != 200 {
		t.Fatalf("unsigned = %d", got)
	}
	// Signed deliveries are accepted too: nothing to check them against.
	if got := deliver(t, srv, "/", "x", newKey(t), "hi"); got != 200 {
		t.Fatalf("signed without keys = %d", got)
	}
	// No webhook-id at all (plain curl): counted, never a duplicate.
	for range 2 {
		resp, err := srv.Client().Post(srv.URL+"/", "text/plain", strings.NewReader("curl"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := Stats{Received: 4, Unique: 3, Duplicates: 1}
	if got := s.Stats(); got != want {
		t.Fatalf("stats = %+v, want %+v", got, want)
	}
}

func TestFailInjectionPerID(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	srv := httptest.NewServer(s)
	defer srv.Close()

	for _, id := range []string{"t1", "t2"} {
		for attempt, want := range []int{500, 500, 200, 200} {
			if got := deliver(t, srv, "/?fail=2", id, nil, ""); got != want {
				t.Fatalf("%s attempt %d = %d, want %d", id, attempt+1, got, want)
			}
		}
	}
	if s.Attempts("t1") != 4 || s.Seen("t1") != 2 {
		t.Fatalf("t1 attempts=%d seen=%d", s.Attempts("t1"), s.Seen("t1"))
	}
	want := Stats{Received: 8, Unique: 2, Duplicates: 2}
	if got := s.Stats(); got != want {
		t.Fatalf("stats = %+v, want %+v", got, want)
	}
}

func TestStatusInjection(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	for range 2 {
		if got := deliver(t, srv, "/?status=410", "gone", nil, ""); got != 410 {
			t.Fatalf("status=410 answered %d", got)
		}
	}
	// fail first, then the chosen status.
	if got := deliver(t, srv, "/?fail=1&status=202", "x", nil, ""); got != 500 {
		t.Fatalf("fail+status first = %d", got)
	}
	if got := deliver(t, srv, "/?fail=1&status=202", "x", nil, ""); got != 202 {
		t.Fatalf("fail+status second = %d", got)
	}
	if got := s.Stats(); got != (Stats{Received: 4, Unique: 1}) {
		t.Fatalf("stats = %+v", got)
	}
	if s.Seen("gone") != 0 {
		t.Fatal("a 410 counted as seen")
	}
}

func TestBadQuery(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	for _, q := range []string{"fail=-1", "fail=x", "status=99", "status=600", "status=abc", "delay=forever", "delay=-1s", "delay=1h"} {
		if got := deliver(t, srv, "/?"+q, "id", nil, ""); got != 400 {
			t.Errorf("?%s = %d, want 400", q, got)
		}
	}
	if got := s.Stats(); got != (Stats{}) {
		t.Fatalf("bad queries counted: %+v", got)
	}
}

func TestDelay(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	srv := httptest.NewServer(s)
	defer srv.Close()

	start := time.Now()
	if got := deliver(t, srv, "/?delay=150ms", "slow", nil, ""); got != 200 {
		t.Fatalf("delayed = %d", got)
	}
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Fatalf("answered after %s, before the delay", el)
	}

	// A sender that gives up during the delay: the handler returns at once
	// and the delivery is received but not answered.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/?delay=1m", nil)
	req.Header.Set(webhook.HeaderID, "abandoned")
	start = time.Now()
	if _, err := srv.Client().Do(req); err == nil {
		t.Fatal("request with a 1m delay and a 100ms timeout succeeded")
	}
	// The handler must notice the cancellation; wait until it has counted
	// the attempt and check it never counted an answer.
	deadline := time.Now().Add(5 * time.Second)
	for s.Attempts("abandoned") == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.Attempts("abandoned") != 1 || s.Seen("abandoned") != 0 {
		t.Fatalf("abandoned: attempts=%d seen=%d", s.Attempts("abandoned"), s.Seen("abandoned"))
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %s", el)
	}
}

func TestDelayRespectsContext(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/?delay=1m", nil)
	req.Header.Set(webhook.HeaderID, "x")
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { s.ServeHTTP(rec, req); close(done) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler ignored the cancelled context")
	}
	if s.Seen("x") != 0 {
		t.Fatal("abandoned delivery counted as answered")
	}
}

func TestResetAndDeleteStats(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	deliver(t, srv, "/", "a", nil, "")
	deliver(t, srv, "/", "a", nil, "")
	if got := getStats(t, srv); got.Received != 2 {
		t.Fatalf("before reset: %+v", got)
	}
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/stats", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE /stats = %d", resp.StatusCode)
	}
	if got := getStats(t, srv); got != (Stats{}) {
		t.Fatalf("after reset: %+v", got)
	}
	// After a reset, an id seen before is new again.
	deliver(t, srv, "/", "a", nil, "")
	if got := s.Stats(); got != (Stats{Received: 1, Unique: 1}) {
		t.Fatalf("after reset delivery: %+v", got)
	}
	// POST /stats is a delivery, not a stats call.
	deliver(t, srv, "/stats", "b", nil, "")
	if got := s.Stats(); got.Received != 2 {
		t.Fatalf("POST /stats not a delivery: %+v", got)
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	s := New(Config{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	big := bytes.Repeat([]byte("x"), MaxBody+1)
	resp, err := srv.Client().Post(srv.URL+"/", "application/octet-stream", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body = %d, want 413", resp.StatusCode)
	}
	if got := s.Stats(); got != (Stats{}) {
		t.Fatalf("oversized body counted: %+v", got)
	}
	// Exactly the limit is fine.
	resp, err = srv.Client().Post(srv.URL+"/", "application/octet-stream", bytes.NewReader(big[:MaxBody]))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("body at the limit = %d", resp.StatusCode)
	}
}

func TestStaleTimestampRejected(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	now := time.Unix(1_700_000_000, 0)
	s := New(Config{Keys: [][]byte{key}, Now: func() time.Time { return now }, Tolerance: time.Minute})
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("b"))
	webhook.SetHeaders(req.Header, [][]byte{key}, "id", now.Add(-2*time.Minute), []byte("b"))
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("stale = %d, want 401", rec.Code)
	}
	req = httptest.NewRequest(http.MethodPost, "/", strings.NewReader("b"))
	webhook.SetHeaders(req.Header, [][]byte{key}, "id", now.Add(-30*time.Second), []byte("b"))
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("within tolerance = %d", rec.Code)
	}
	if got := s.Stats(); got != (Stats{Received: 1, Unique: 1, BadSignatures: 1}) {
		t.Fatalf("stats = %+v", got)
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	s := New(Config{Keys: [][]byte{key}})
	srv := httptest.NewServer(s)
	defer srv.Close()
	const ids, repeats = 50, 3
	var wg sync.WaitGroup
	for i := range ids {
		for range repeats {
			wg.Go(func() {
				id := "task-" + string(rune('A'+i%26)) + string(rune('a'+i/26))
				if got, err := post(srv, "/", id, key, "p"); err != nil || got != 200 {
					t.Errorf("delivery = %d, %v", got, err)
				}
			})
		}
	}
	wg.Wait()
	want := Stats{Received: ids * repeats, Unique: ids, Duplicates: ids * (repeats - 1)}
	if got := s.Stats(); got != want {
		t.Fatalf("stats = %+v, want %+v", got, want)
	}
}
