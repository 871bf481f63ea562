package dispatch

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spoolhq/spool/internal/sink"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/telemetry"
	"github.com/spoolhq/spool/webhook"
)

// These tests run the dispatcher against the real embedded store and a real
// receiver on loopback; the Postgres path is covered end to end in cmd/spool.

type harness struct {
	t     *testing.T
	store *sqlite.Store
	sink  *sink.Sink
	url   string
	key   []byte
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keyStr, _ := webhook.GenerateKey()
	key, _ := webhook.ParseKey(keyStr)
	sk := sink.New(sink.Config{Keys: [][]byte{key}})
	srv := httptest.NewServer(sk)
	t.Cleanup(srv.Close)
	return &harness{t: t, store: st, sink: sk, url: srv.URL, key: key}
}

func (h *harness) dispatcher(mod func(*Config)) *Dispatcher {
	cfg := Config{
		Store:         h.store,
		Client:        NewHTTPClient(Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
		SigningKeys:   [][]byte{h.key},
		Workers:       20,
		LeaseDuration: 3 * time.Second,
		PollInterval:  50 * time.Millisecond,
		Backoff:       task.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	d := New(cfg)
	if err := d.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	return d
}

func (h *harness) enqueue(target string, mod func(*store.NewTask)) string {
	h.t.Helper()
	id, _ := uuid.NewV7()
	nt := store.NewTask{ID: id.String(), Queue: "q", Target: task.Target{URL: target, Method: "POST"},
		Payload: []byte(`{"n":1}`), ContentType: "application/json", Priority: 5}
	if mod != nil {
		mod(&nt)
	}
	if _, err := h.store.Enqueue(context.Background(), []store.NewTask{nt}); err != nil {
		h.t.Fatal(err)
	}
	return nt.ID
}

// waitFinal polls until the task is final (bounded), then returns it.
func (h *harness) waitFinal(id string) task.Task {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		tk, err := h.store.GetTask(context.Background(), id)
		if err != nil {
			h.t.Fatal(err)
		}
		if tk.State.Final() {
			return tk
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("task %s still %s after 15s (attempt %d, last error %q)", id, tk.State, tk.Attempt, tk.LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stop(d *Dispatcher) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d.Stop(ctx)
}

// TestDeliversEverySignature: with two signing keys (a rotation under way),
// each delivery carries a signature per key, so a receiver still on the old
// key and one already on the new key both accept it.
func TestDeliversEverySignature(t *testing.T) {
	h := newHarness(t)
	newStr, _ := webhook.GenerateKey()
	newKey, _ := webhook.ParseKey(newStr)
	var mu sync.Mutex
	var accepted []string
	receiver := func(name string, key []byte) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if err := webhook.Verify([][]byte{key}, r.Header, b, time.Now(), 0); err != nil {
				w.WriteHeader(401)
				return
			}
			mu.Lock()
			accepted = append(accepted, name)
			mu.Unlock()
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	oldURL, newURL := receiver("old", h.key), receiver("new", newKey)
	d := h.dispatcher(func(c *Config) { c.SigningKeys = [][]byte{newKey, h.key} })
	defer stop(d)
	for _, u := range []string{oldURL, newURL} {
		if tk := h.waitFinal(h.enqueue(u, nil)); tk.State != task.Succeeded {
			t.Errorf("delivery to %s: %s, last error %q", u, tk.State, tk.LastError)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(accepted) != 2 {
		t.Errorf("accepted by %v, want old and new", accepted)
	}
}

func TestDeliversSignedRequest(t *testing.T) {
	h := newHarness(t)
	var got http.Header
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 100)
		n, _ := r.Body.Read(b)
		body, got = string(b[:n]), r.Header.Clone()
		if err := webhook.Verify([][]byte{h.key}, r.Header, b[:n], time.Now(), 0); err != nil {
			w.WriteHeader(401)
		}
	}))
	defer srv.Close()
	d := h.dispatcher(nil)
	defer stop(d)
	id := h.enqueue(srv.URL+"/hook", func(nt *store.NewTask) { nt.Target.Headers = map[string]string{"X-Custom": "yes"} })
	tk := h.waitFinal(id)
	if tk.State != task.Succeeded || tk.Attempt != 1 || tk.LastStatus != 200 {
		t.Fatalf("task %+v", tk)
	}
	if body != `{"n":1}` || got.Get("Content-Type") != "application/json" || got.Get("X-Custom") != "yes" ||
		got.Get("Webhook-Id") != id || got.Get("Spool-Attempt") != "1" || !strings.HasPrefix(got.Get("Traceparent"), "00-") {
		t.Errorf("request: body %q headers %v", body, got)
	}
}

func TestRetriesThenSucceeds(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(nil)
	defer stop(d)
	id := h.enqueue(h.url+"/?fail=2", nil)
	tk := h.waitFinal(id)
	if tk.State != task.Succeeded || tk.Attempt != 3 {
		t.Fatalf("want succeeded on attempt 3, got %s on %d (%q)", tk.State, tk.Attempt, tk.LastError)
	}
	if h.sink.Attempts(id) != 3 || h.sink.Seen(id) != 1 {
		t.Errorf("sink saw %d attempts, %d successes", h.sink.Attempts(id), h.sink.Seen(id))
	}
}

func TestPermanentFailureAndExhaustion(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(nil)
	defer stop(d)
	notFound := h.enqueue(h.url+"/?status=404", nil)
	exhausted := h.enqueue(h.url+"/?status=503", func(nt *store.NewTask) { nt.MaxAttempts = 3 })
	redirect := h.enqueue(h.url+"/?status=302", nil)

	if tk := h.waitFinal(notFound); tk.State != task.Failed || tk.Attempt != 1 || tk.LastStatus != 404 || !strings.Contains(tk.LastError, "404") {
		t.Errorf("404: %+v", tk)
	}
	if tk := h.waitFinal(exhausted); tk.State != task.Failed || tk.Attempt != 3 || tk.LastStatus != 503 {
		t.Errorf("503 x3: %+v", tk)
	}
	if tk := h.waitFinal(redirect); tk.State != task.Failed || tk.Attempt != 1 || !strings.Contains(tk.LastError, "redirect") {
		t.Errorf("302: %+v", tk)
	}
}

func TestHonoursRetryAfter(t *testing.T) {
	h := newHarness(t)
	var calls atomic.Int32
	var first, second atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			first.Store(time.Now().UnixNano())
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
		default:
			second.Store(time.Now().UnixNano())
		}
	}))
	defer srv.Close()
	// The backoff would be ≤ 50ms without Retry-After; the longest backoff
	// (5s) bounds how long a Retry-After may push the task.
	d := h.dispatcher(func(c *Config) { c.Backoff.Max = 5 * time.Second })
	defer stop(d)
	tk := h.waitFinal(h.enqueue(srv.URL, nil))
	gap := time.Duration(second.Load() - first.Load())
	if tk.State != task.Succeeded || gap < 900*time.Millisecond {
		t.Errorf("state %s, second attempt %s after the 429 with Retry-After: 1", tk.State, gap)
	}
}

func TestTimeoutRetries(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(nil)
	defer stop(d)
	id := h.enqueue(h.url+"/?delay=2s", func(nt *store.NewTask) { nt.Timeout = 100 * time.Millisecond; nt.MaxAttempts = 2 })
	tk := h.waitFinal(id)
	if tk.State != task.Failed || tk.Attempt != 2 || !strings.Contains(tk.LastError, "timeout") {
		t.Errorf("%+v", tk)
	}
}

func TestSSRFRefusedPermanently(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(func(c *Config) { c.Client = NewHTTPClient(Guard{}) })
	defer stop(d)
	tk := h.waitFinal(h.enqueue(h.url, nil))
	if tk.State != task.Failed || tk.Attempt != 1 || !strings.Contains(tk.LastError, "not allowed") {
		t.Errorf("%+v", tk)
	}
	if h.sink.Stats().Received != 0 {
		t.Errorf("the sink was reached")
	}
}

// Cancelling a running task takes its lease away: the heartbeat notices,
// the delivery is abandoned and nothing overwrites the cancellation.
func TestCancelWhileRunning(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(func(c *Config) { c.LeaseDuration = 300 * time.Millisecond })
	defer stop(d)
	id := h.enqueue(h.url+"/?delay=3s", nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		tk, _ := h.store.GetTask(context.Background(), id)
		if tk.State == task.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := h.store.CancelTask(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	tk, _ := h.store.GetTask(context.Background(), id)
	if tk.State != task.Cancelled {
		t.Errorf("state %s after cancel", tk.State)
	}
	if d.busy.Load() != 0 {
		t.Errorf("delivery still running after its lease was lost")
	}
}

// Stop past its deadline releases in-flight tasks: available again, the
// abandoned attempt not counted, nothing left running.
func TestStopReleasesInFlight(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(nil)
	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, h.enqueue(h.url+"/?delay=10s", nil))
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.busy.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	d.Stop(ctx)
	cancel()
	for _, id := range ids {
		tk, _ := h.store.GetTask(context.Background(), id)
		if tk.State != task.Available || tk.Attempt != 0 {
			t.Errorf("%s: %s attempt %d, want available attempt 0", id, tk.State, tk.Attempt)
		}
	}
}

// Stop with time to spare lets in-flight deliveries finish.
func TestStopFinishesInFlight(t *testing.T) {
	h := newHarness(t)
	d := h.dispatcher(nil)
	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, h.enqueue(h.url+"/?delay=300ms", nil))
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.busy.Load() < 10 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop(d)
	for _, id := range ids {
		if tk, _ := h.store.GetTask(context.Background(), id); tk.State != task.Succeeded {
			t.Errorf("%s: %s", id, tk.State)
		}
	}
}

func TestWorkersBound(t *testing.T) {
	h := newHarness(t)
	var cur, peak atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		cur.Add(-1)
	}))
	defer srv.Close()
	d := h.dispatcher(func(c *Config) { c.Workers = 4 })
	defer stop(d)
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, h.enqueue(srv.URL, nil))
	}
	for _, id := range ids {
		h.waitFinal(id)
	}
	if p := peak.Load(); p > 4 || p < 2 {
		t.Errorf("peak concurrency %d with 4 workers", p)
	}
}

func TestMaintainerRescuesAndPrunes(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id := h.enqueue(h.url, nil)
	leases, err := h.store.Lease(ctx, store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Millisecond}) // a worker that dies at once
	if err != nil || len(leases) != 1 {
		t.Fatalf("lease: %v %d", err, len(leases))
	}
	mctx, cancel := context.WithCancel(ctx)
	m := &Maintainer{Store: h.store, Owner: "test", Retention: time.Hour, Interval: 20 * time.Millisecond}
	done := make(chan struct{})
	go func() { m.Run(mctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tk, _ := h.store.GetTask(ctx, id)
		if tk.State == task.Retrying || tk.State == task.Available {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not rescued: %s", tk.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if acc, err := h.store.Complete(ctx, []store.Completion{{LeaseRef: store.LeaseRef{TaskID: id, Token: leases[0].Token}, Outcome: store.Succeeded}}); err != nil || acc[0] {
		t.Errorf("the dead worker's completion was accepted after rescue: %v %v", acc, err)
	}
}

func TestMaintainerExportsDepthOnlyWhileLeading(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.enqueue(h.url, nil)
	h.enqueue(h.url, nil)
	metrics := telemetry.NewMetrics("test", "test")
	mctx, cancel := context.WithCancel(ctx)
	m := &Maintainer{Store: h.store, Metrics: metrics, Owner: "a", Retention: time.Hour, Interval: 20 * time.Millisecond, StatsEvery: 20 * time.Millisecond}
	done := make(chan struct{})
	go func() { m.Run(mctx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(metrics.QueueDepth.WithLabelValues("q", "available")) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("depth never exported: %v", testutil.ToFloat64(metrics.QueueDepth.WithLabelValues("q", "available")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if testutil.ToFloat64(metrics.IsLeader) != 1 || testutil.ToFloat64(metrics.OldestDue.WithLabelValues("q")) <= 0 {
		t.Errorf("leader %v, oldest due %v", testutil.ToFloat64(metrics.IsLeader), testutil.ToFloat64(metrics.OldestDue.WithLabelValues("q")))
	}
	cancel()
	<-done
	if n := testutil.CollectAndCount(metrics.QueueDepth); n != 0 {
		t.Errorf("a resigned leader still exports %d depth series", n)
	}
}

// TestMaintainerRefreshesStats: the leader runs the store's statistics
// upkeep every tick, and a failing one does not stop the other duties.
func TestMaintainerRefreshesStats(t *testing.T) {
	h := newHarness(t)
	var calls atomic.Int64
	mctx, cancel := context.WithCancel(t.Context())
	m := &Maintainer{Store: h.store, Owner: "a", Retention: time.Hour, Interval: 20 * time.Millisecond,
		RefreshStats: func(context.Context) (bool, error) {
			calls.Add(1)
			return false, errors.New("refresh failed")
		}}
	done := make(chan struct{})
	go func() { m.Run(mctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("RefreshStats called %d times in 5 s of 20 ms ticks", calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// raceStore is the real store with one ordering forced: a completion is
// committed while the heartbeat's extension of that same lease is under way
// (after it took its list of leases, before it reached the database), and
// the dispatcher learns that the completion was stored only afterwards.
type raceStore struct {
	store.Store
	extending chan struct{} // closed when an extension with leases begins
	once      sync.Once
}

func (s *raceStore) ExtendLeases(ctx context.Context, refs []store.LeaseRef, d time.Duration) ([]store.LeaseRef, error) {
	if len(refs) > 0 {
		s.once.Do(func() { close(s.extending) })
		time.Sleep(100 * time.Millisecond) // the completion commits meanwhile
	}
	return s.Store.ExtendLeases(ctx, refs, d)
}

func (s *raceStore) Complete(ctx context.Context, cs []store.Completion) ([]bool, error) {
	select {
	case <-s.extending:
	case <-time.After(5 * time.Second):
	}
	accepted, err := s.Store.Complete(ctx, cs)
	// Committed; the dispatcher hears of it only after the extension has
	// come back without the lease.
	time.Sleep(400 * time.Millisecond)
	return accepted, err
}

// A completion committed while the heartbeat extends leases is not a lost
// lease: it is neither counted in spool_leases_lost_total nor logged as
// "will be delivered again".
func TestLostLeaseCounterIsExact(t *testing.T) {
	h := newHarness(t)
	metrics := telemetry.NewMetrics("test", "test")
	rs := &raceStore{Store: h.store, extending: make(chan struct{})}
	d := h.dispatcher(func(c *Config) {
		c.Store, c.Metrics, c.LeaseDuration = rs, metrics, 600*time.Millisecond
	})
	defer stop(d)
	tk := h.waitFinal(h.enqueue(h.url+"/ok", nil))
	time.Sleep(500 * time.Millisecond) // the extension that raced ends
	if tk.State != task.Succeeded {
		t.Fatalf("task %s: %s", tk.State, tk.LastError)
	}
	if lost := testutil.ToFloat64(metrics.LeasesLost); lost != 0 {
		t.Errorf("spool_leases_lost_total = %v for a completion that was committed", lost)
	}
}

// TestMaintainerReleasesIdempotencyKeys: the leader prunes a finished task
// and then releases its key once the key is older than the idempotency
// retention; the key of a task still stored stays reserved.
func TestMaintainerReleasesIdempotencyKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		ctx := t.Context()
		keyed := func(key string, fp string) store.NewTask {
			return store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: "q", IdempotencyKey: key, Fingerprint: []byte(fp),
				Target: task.Target{URL: "http://127.0.0.1:9/", Method: "POST"}, Priority: task.DefaultPriority}
		}
		enqueue := func(nt store.NewTask) (store.Enqueued, error) {
			res, err := st.Enqueue(ctx, []store.NewTask{nt})
			if err != nil {
				return store.Enqueued{}, err
			}
			return res[0], nil
		}
		gone, err := enqueue(keyed("gone", "A"))
		if err != nil {
			t.Fatal(err)
		}
		kept, err := enqueue(keyed("kept", "A"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CancelTask(ctx, gone.Task.ID); err != nil {
			t.Fatal(err)
		}
		mctx, cancel := context.WithCancel(ctx)
		m := &Maintainer{Store: st, Owner: "a", Retention: time.Millisecond, IdempotencyRetention: 50 * time.Millisecond,
			Interval: 20 * time.Millisecond, PruneEvery: 20 * time.Millisecond}
		done := make(chan struct{})
		go func() { m.Run(mctx); close(done) }()
		defer func() { cancel(); <-done }()

		deadline := time.Now().Add(10 * time.Second)
		for {
			again := keyed("gone", "B")
			res, err := enqueue(again)
			if err == nil {
				if res.Existing || res.Task.ID != again.ID {
					t.Fatalf("released key: Existing %v, task %s; want the new task %s", res.Existing, res.Task.ID, again.ID)
				}
				break
			}
			// ErrConflict: refused, then released before the refusal was
			// read (the leader is releasing keys meanwhile); retry.
			if !errors.Is(err, store.ErrIdempotencyPruned) && !errors.Is(err, store.ErrIdempotencyMismatch) && !errors.Is(err, store.ErrConflict) {
				t.Fatalf("enqueue under the pruned task's key: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("the key of a pruned task was never released: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := enqueue(keyed("kept", "B")); !errors.Is(err, store.ErrIdempotencyMismatch) {
			t.Errorf("the key of a stored task: %v, want ErrIdempotencyMismatch", err)
		}
		if res, err := enqueue(keyed("kept", "A")); err != nil || !res.Existing || res.Task.ID != kept.Task.ID {
			t.Errorf("replay of a stored task's key: %+v, %v", res, err)
		}
	})
}
