package main

// End-to-end tests of the per-destination protection: the real binary
// delivering to receivers the tests control (a small capacity, an outage,
// Retry-After answers), on SQLite and on replicas sharing one PostgreSQL.

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/config"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
)

// receiver is an HTTP target whose behaviour a test sets: how many requests
// it takes at once (the rest get 503 at once), how long it holds each, or
// a fixed answer for everything.
type receiver struct {
	url string

	mu       sync.Mutex
	capacity int           // 0 = any number
	hold     time.Duration // per accepted request
	answer   func(w http.ResponseWriter, r *http.Request) bool
	cur      int
	peak     int
	received int
	refused  int
	accepted int
	arrivals []time.Time
	ok       map[string]bool // webhook-id answered 2xx
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{ok: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rc}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	rc.url = "http://" + ln.Addr().String() + "/hook"
	return rc
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.received++
	rc.arrivals = append(rc.arrivals, time.Now())
	if rc.answer != nil {
		answer := rc.answer
		rc.mu.Unlock()
		if answer(w, r) {
			rc.mu.Lock()
			rc.ok[r.Header.Get("webhook-id")] = true
			rc.mu.Unlock()
		}
		return
	}
	if rc.capacity > 0 && rc.cur >= rc.capacity {
		rc.refused++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	rc.cur++
	rc.accepted++
	rc.peak = max(rc.peak, rc.cur)
	hold := rc.hold
	rc.mu.Unlock()
	time.Sleep(hold)
	rc.mu.Lock()
	rc.cur--
	rc.ok[r.Header.Get("webhook-id")] = true
	rc.mu.Unlock()
}

func (rc *receiver) set(f func(rc *receiver)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	f(rc)
}

func (rc *receiver) snapshot() (received, refused, peak, unique int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.received, rc.refused, rc.peak, len(rc.ok)
}

// waitOK waits until the receiver has answered n distinct tasks well.
func (rc *receiver) waitOK(t *testing.T, n int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		received, refused, _, unique := rc.snapshot()
		if unique >= n {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("receiver answered %d of %d tasks within %s (%d requests, %d refused)", unique, n, timeout, received, refused)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openTestStore opens the store a serve process of o uses, to read tasks.
func openTestStore(t *testing.T, o serveOpts) store.Store {
	t.Helper()
	cfg := &config.Config{DatabaseURL: config.Secret(o.dsn), DataDir: o.dataDir}
	st, _, err := openStore(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// realisticBackoff replaces the harness's 50 ms retry backoff with the
// default's 1 s start, so that a refused task comes back as it would in
// production.
var realisticBackoff = []string{"SPOOL_RETRY_MIN_BACKOFF=1s", "SPOOL_RETRY_MAX_BACKOFF=10s"}

// Against a receiver that takes three requests at a time and refuses the
// rest with 503, at most a fifth of what Spool sends is refused, no task
// goes past its third attempt, and the receiver never sees much more than
// its capacity: on SQLite, and with two replicas on one PostgreSQL (whose
// shares of the limit add up to it).
func TestDestinationLimitAgainstSmallReceiver(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		replicas int
		pg       bool
	}{{"sqlite", 1, false}, {"postgres-2-replicas", 2, true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			key := newKey(t)
			rc := startReceiver(t)
			rc.set(func(rc *receiver) { rc.capacity, rc.hold = 3, 20*time.Millisecond })
			o := serveOpts{dataDir: t.TempDir(), env: realisticBackoff}
			if c.pg {
				o = serveOpts{dsn: testpg.Shared(t).CreateDB(t), env: append([]string{"SPOOL_MIGRATE=true"}, realisticBackoff...)}
			}
			var apis []string
			for i := range c.replicas {
				apis = append(apis, startServe(t, "replica-"+string(rune('a'+i)), o, key).api)
			}
			const n = 300
			ids := enqueueBatch(t, apis, "small", rc.url, n, 50)
			took := rc.waitOK(t, n, 90*time.Second)
			received, refused, peak, _ := rc.snapshot()
			share := float64(refused) / float64(received)
			t.Logf("%d tasks in %s: %d requests, %d refused (%.1f%%), peak %d in flight at the receiver",
				n, took.Round(time.Millisecond), received, refused, 100*share, peak)
			if share > 0.20 {
				t.Errorf("%.1f%% of requests refused, want at most 20%%", 100*share)
			}
			st := openTestStore(t, o)
			worst := 0
			for _, id := range ids {
				tk, err := st.GetTask(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				worst = max(worst, tk.Attempt)
				if tk.Attempt > 3 {
					t.Errorf("task %s took %d attempts (state %s, last error %q)", id, tk.Attempt, tk.State, tk.LastError)
				}
			}
			t.Logf("most attempts of one task: %d", worst)
		})
	}
}

// While a destination is down, two replicas send it a trickle of probes,
// not a request per task; its tasks wait as retrying without spending
// attempts, saying why; once it is back, the backlog drains within seconds.
func TestDestinationBreakerAcrossReplicas(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	rc := startReceiver(t)
	down := func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusInternalServerError)
		return false
	}
	rc.set(func(rc *receiver) { rc.answer = down })
	o := serveOpts{dsn: testpg.Shared(t).CreateDB(t), env: append([]string{"SPOOL_MIGRATE=true"}, realisticBackoff...)}
	a := startServe(t, "replica-a", o, key)
	b := startServe(t, "replica-b", o, key)
	const n = 300
	start := time.Now()
	ids := enqueueBatch(t, []string{a.api, b.api}, "outage", rc.url, n, 100)
	time.Sleep(10*time.Second - time.Since(start))
	received, _, _, _ := rc.snapshot()
	t.Logf("receiver down for 10 s with a backlog of %d: %d requests", n, received)
	if received > 60 {
		t.Errorf("%d requests reached a dead destination in 10 s, want a trickle (at most 60)", received)
	}
	st := openTestStore(t, o)
	spent, waiting := 0, 0
	for _, id := range ids {
		tk, err := st.GetTask(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		spent += tk.Attempt
		if tk.State == task.Retrying && strings.Contains(tk.LastError, "unavailable") {
			waiting++
		}
		if tk.State == task.Failed {
			t.Errorf("task %s failed during the outage: %s", id, tk.LastError)
		}
	}
	t.Logf("during the outage: %d attempts spent over %d tasks; %d retrying with the destination named unavailable", spent, n, waiting)
	if waiting < n/2 {
		t.Errorf("only %d of %d tasks wait as retrying with last_error naming the destination unavailable", waiting, n)
	}
	var d struct {
		Breaker string `json:"breaker"`
	}
	if code := call(t, "GET", "http://"+a.api+"/v1/destinations/"+escapeSegment(strings.TrimSuffix(rc.url, "/hook")), nil, &d); code != 200 || d.Breaker == "closed" {
		t.Errorf("GET destination during the outage: %d, breaker %q", code, d.Breaker)
	}

	rc.set(func(rc *receiver) { rc.answer = nil })
	recovered := time.Now()
	took := rc.waitOK(t, n, 60*time.Second)
	t.Logf("after recovery the backlog of %d drained in %s", n, took.Round(time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("backlog drained %s after recovery, want within seconds (next probe at most 13 s away)", took)
	}
	_ = recovered
}

// escapeSegment escapes a destination name as one path segment.
func escapeSegment(s string) string {
	r := strings.NewReplacer("%", "%25", "/", "%2F", ":", "%3A")
	return r.Replace(s)
}

// A Retry-After can slow a task down but not hurry it or park it for
// centuries, and a 429 with Retry-After holds the whole destination.
func TestRetryAfterIsBounded(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_RETRY_MIN_BACKOFF=1s", "SPOOL_RETRY_MAX_BACKOFF=10s"}}
	in := startServe(t, "serve", o, key)

	zero := startReceiver(t)
	zero.set(func(rc *receiver) {
		rc.answer = func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return false
		}
	})
	far := startReceiver(t)
	far.set(func(rc *receiver) {
		rc.answer = func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "Fri, 31 Dec 2319 23:59:59 GMT")
			w.WriteHeader(http.StatusServiceUnavailable)
			return false
		}
	})
	zeroID := enqueueBatch(t, []string{in.api}, "ra", zero.url, 1, 1)[0]
	farID := enqueueBatch(t, []string{in.api}, "ra", far.url, 1, 1)[0]
	time.Sleep(3 * time.Second)
	st := openTestStore(t, o)
	tk, err := st.GetTask(context.Background(), zeroID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Retry-After: 0 for 3 s: %d attempts", tk.Attempt)
	if tk.Attempt > 4 { // backoff 1 s, 2 s, … after the first attempt
		t.Errorf("Retry-After: 0 spent %d attempts in 3 s; the task's own backoff must hold", tk.Attempt)
	}
	tk, err = st.GetTask(context.Background(), farID)
	if err != nil {
		t.Fatal(err)
	}
	if ahead := time.Until(tk.RunAt); tk.State != task.Retrying || ahead > 11*time.Second {
		t.Errorf("Retry-After in 2319: state %s, next attempt in %s; want within SPOOL_RETRY_MAX_BACKOFF (10s)", tk.State, ahead)
	}

	// One 429 with Retry-After: 2 holds the destination: a task enqueued
	// right after it waits about 2 s, while another destination is served at once.
	held := startReceiver(t)
	first := true
	held.set(func(rc *receiver) {
		rc.answer = func(w http.ResponseWriter, r *http.Request) bool {
			rc.mu.Lock()
			wasFirst := first
			first = false
			rc.mu.Unlock()
			if wasFirst {
				w.Header().Set("Retry-After", "2")
				w.WriteHeader(http.StatusTooManyRequests)
				return false
			}
			return true
		}
	})
	other := startReceiver(t)
	enqueueBatch(t, []string{in.api}, "ra", held.url, 1, 1)
	held.waitRequests(t, 1, 10*time.Second)
	refusedAt := time.Now()
	enqueueBatch(t, []string{in.api}, "ra", held.url, 1, 1)
	enqueueBatch(t, []string{in.api}, "ra", other.url, 1, 1)
	other.waitOK(t, 1, 5*time.Second)
	otherAfter := time.Since(refusedAt)
	held.waitOK(t, 2, 15*time.Second)
	heldAfter := time.Since(refusedAt)
	t.Logf("after a 429 with Retry-After: 2, the same destination's next task went after %s, another destination's after %s", heldAfter.Round(time.Millisecond), otherAfter.Round(time.Millisecond))
	if heldAfter < 1800*time.Millisecond {
		t.Errorf("the held destination got its next request %s after the 429, want about 2 s", heldAfter)
	}
	if otherAfter > time.Second {
		t.Errorf("another destination waited %s", otherAfter)
	}
}

// waitRequests waits until the receiver has seen n requests.
func (rc *receiver) waitRequests(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if received, _, _, _ := rc.snapshot(); received >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver saw fewer than %d requests within %s", n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
