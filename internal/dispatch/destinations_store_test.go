package dispatch

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

// eachStore runs f against a fresh embedded store and a fresh PostgreSQL
// database: the destination protection lives in the dispatcher, but its
// shared state goes through each driver.
func eachStore(t *testing.T, f func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		f(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		st, err := postgres.Open(ctx, testpg.Shared(t).CreateDB(t), postgres.Options{MaxConns: 8})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		f(t, st)
	})
}

func startDispatcher(t *testing.T, st store.Store, mod func(*Config)) *Dispatcher {
	t.Helper()
	cfg := Config{
		Store:         st,
		Client:        NewHTTPClient(Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
		Workers:       20,
		LeaseDuration: 5 * time.Second,
		PollInterval:  50 * time.Millisecond,
		Backoff:       task.Backoff{Min: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		Destinations:  DestinationPolicy{MinCooldown: 200 * time.Millisecond, MaxCooldown: 400 * time.Millisecond, SyncInterval: 100 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	d := New(cfg)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(d) })
	return d
}

func enqueueN(t *testing.T, st store.Store, queue, url string, n int) []string {
	t.Helper()
	var nts []store.NewTask
	for range n {
		id, _ := uuid.NewV7()
		nts = append(nts, store.NewTask{ID: id.String(), Queue: queue, Target: task.Target{URL: url}, Priority: 5, MaxAttempts: 25})
	}
	if _, err := st.Enqueue(context.Background(), nts); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i, nt := range nts {
		ids[i] = nt.ID
	}
	return ids
}

// waitSucceeded waits until every task succeeded and returns them.
func waitSucceeded(t *testing.T, st store.Store, ids []string, timeout time.Duration) []task.Task {
	t.Helper()
	deadline := time.Now().Add(timeout)
	out := make([]task.Task, 0, len(ids))
	for _, id := range ids {
		for {
			tk, err := st.GetTask(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if tk.State == task.Succeeded {
				out = append(out, tk)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s is %s after %s (%s)", id, tk.State, timeout, tk.LastError)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

// While a destination fails, its breaker opens: tasks wait as retrying,
// saying the destination is unavailable, without spending attempts, and
// only probes reach it; once it answers, everything is delivered.
func TestBreakerDefersWithoutSpendingAttempts(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		var down atomic.Bool
		down.Store(true)
		var requests atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			if down.Load() {
				w.WriteHeader(http.StatusBadGateway)
			}
		}))
		defer srv.Close()
		startDispatcher(t, st, nil)
		const n = 120
		ids := enqueueN(t, st, "q", srv.URL, n)
		time.Sleep(1500 * time.Millisecond)
		spent, waiting := 0, 0
		for _, id := range ids {
			tk, err := st.GetTask(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			if tk.State != task.Running { // a running task's attempt may not be sent yet
				spent += tk.Attempt
			}
			if tk.State == task.Retrying && strings.Contains(tk.LastError, "unavailable") {
				waiting++
			}
			if tk.State.Final() {
				t.Errorf("task %s is %s during the outage: %s", id, tk.State, tk.LastError)
			}
		}
		// Read after the tasks: probes go on meanwhile, and a request counted
		// before them could miss an attempt they show.
		sent := requests.Load()
		t.Logf("outage of 1.5 s, %d tasks: %d requests, %d attempts spent, %d waiting as unavailable", n, sent, spent, waiting)
		// The initial limit of 10 in flight, five failures to open, then a
		// probe every 200–400 ms: far fewer than one request per task.
		if sent > 30 {
			t.Errorf("%d requests reached a failing destination for %d tasks", sent, n)
		}
		if int64(spent) > sent {
			t.Errorf("%d attempts spent for %d requests sent: deferrals spent attempts", spent, sent)
		}
		if waiting < n/2 {
			t.Errorf("%d of %d tasks wait as retrying with the destination named unavailable", waiting, n)
		}
		dst, err := st.GetDestination(context.Background(), srv.URL, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if dst.Breaker == task.BreakerClosed {
			t.Errorf("breaker %s during the outage", dst.Breaker)
		}
		down.Store(false)
		waitSucceeded(t, st, ids, 10*time.Second)
		dst, _ = st.GetDestination(context.Background(), srv.URL, time.Minute)
		if dst.Breaker != task.BreakerClosed {
			t.Errorf("breaker %s after recovery", dst.Breaker)
		}
	})
}

// Two dispatchers on one store split a destination's operator ceiling:
// together they never have more requests in flight than max_concurrency.
func TestCeilingHoldsAcrossDispatchers(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		var mu sync.Mutex
		cur, peak := 0, 0
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			cur--
			mu.Unlock()
		}))
		defer srv.Close()
		name, _ := task.DestinationOf(srv.URL)
		three := 3
		if _, err := st.UpdateDestination(context.Background(), name, task.DestinationPatch{MaxConcurrency: &three}, time.Minute); err != nil {
			t.Fatal(err)
		}
		startDispatcher(t, st, func(c *Config) { c.Replica = "a" })
		startDispatcher(t, st, func(c *Config) { c.Replica = "b" })
		ids := enqueueN(t, st, "q", srv.URL, 150)
		// A replica learns of another one at its next sync: until then (one
		// SyncInterval, here 100 ms) both may use the whole ceiling. Count
		// from when both have synced.
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		early := peak
		peak = cur
		mu.Unlock()
		waitSucceeded(t, st, ids, 30*time.Second)
		mu.Lock()
		defer mu.Unlock()
		t.Logf("max_concurrency 3 over two dispatchers: peak %d in flight (%d while they first met)", peak, early)
		if peak > 3 {
			t.Errorf("peak %d requests in flight with max_concurrency 3 across two dispatchers", peak)
		}
	})
}

// A 429 with Retry-After holds the whole destination, on every replica:
// after one refusal with Retry-After: 2, neither of two dispatchers sends
// there again for about two seconds, and no attempt is spent meanwhile.
func TestRetryAfterHoldsTheDestinationAcrossDispatchers(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		var mu sync.Mutex
		var arrivals []time.Time
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			arrivals = append(arrivals, time.Now())
			first := len(arrivals) == 1
			mu.Unlock()
			if first {
				w.Header().Set("Retry-After", "2")
				w.WriteHeader(http.StatusTooManyRequests)
			}
		}))
		defer srv.Close()
		wide := func(c *Config) { c.Backoff.Max = 10 * time.Second }
		startDispatcher(t, st, func(c *Config) { wide(c); c.Replica = "a" })
		startDispatcher(t, st, func(c *Config) { wide(c); c.Replica = "b" })
		enqueueN(t, st, "q", srv.URL, 1)
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			n := len(arrivals)
			mu.Unlock()
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no request within 5 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		refused := arrivals[0]
		mu.Unlock()
		time.Sleep(300 * time.Millisecond) // three syncs: both dispatchers know the hold
		for _, tk := range waitSucceeded(t, st, enqueueN(t, st, "q", srv.URL, 20), 15*time.Second) {
			if tk.Attempt != 1 {
				t.Errorf("task %s took %d attempts: waiting for the hold spent some", tk.ID, tk.Attempt)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		next := arrivals[1].Sub(refused)
		t.Logf("after a 429 with Retry-After: 2, the next request came %s later (%d requests in all)", next.Round(time.Millisecond), len(arrivals))
		if next < 1800*time.Millisecond {
			t.Errorf("a request reached the destination %s after its 429 with Retry-After: 2", next)
		}
	})
}

// A healthy receiver that takes long to answer is not held at the initial
// limit until its first answers: slow start also doubles with time, so
// every worker is in flight within a few hundred milliseconds.
func TestSlowStartGrowsWithoutAnswers(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		var mu sync.Mutex
		cur, peak := 0, 0
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			cur++
			peak = max(peak, cur)
			mu.Unlock()
			<-release
			mu.Lock()
			cur--
			mu.Unlock()
		}))
		defer srv.Close()
		defer close(release)
		startDispatcher(t, st, func(c *Config) { c.Workers = 40 })
		enqueueN(t, st, "q", srv.URL, 40)
		deadline := time.Now().Add(3 * time.Second)
		for {
			mu.Lock()
			p := peak
			mu.Unlock()
			if p >= 40 {
				t.Logf("40 requests in flight to a receiver that has not answered yet")
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d of 40 requests in flight after 3 s to a healthy, slow receiver (initial limit %v)", p, DestinationPolicy{}.withDefaults().InitialLimit)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// A queue's retry_statuses decide which answers retry; the others fail the
// task at once. The default retries 408 and not 404.
func TestRetryStatusesDecide(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
			w.WriteHeader(code)
		}))
		defer srv.Close()
		only503 := task.MustRetryStatuses("503")
		if _, err := st.UpdateQueue(context.Background(), "narrow", task.QueuePatch{RetryStatuses: &only503}); err != nil {
			t.Fatal(err)
		}
		startDispatcher(t, st, func(c *Config) { c.Destinations.BreakerThreshold = 1000 })
		cases := []struct {
			queue, path string
			retries     bool
		}{
			{"narrow", "/500", false}, {"narrow", "/503", true},
			{"q", "/404", false}, {"q", "/408", true}, {"q", "/500", true},
		}
		ids := make([]string, len(cases))
		for i, c := range cases {
			ids[i] = enqueueN(t, st, c.queue, srv.URL+c.path, 1)[0]
		}
		deadline := time.Now().Add(10 * time.Second)
		for i, c := range cases {
			for {
				tk, err := st.GetTask(context.Background(), ids[i])
				if err != nil {
					t.Fatal(err)
				}
				if c.retries && tk.Attempt >= 2 {
					break
				}
				if !c.retries && tk.State == task.Failed {
					if tk.Attempt != 1 {
						t.Errorf("%s %s: failed after %d attempts, want 1", c.queue, c.path, tk.Attempt)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s %s: %s after %d attempts (retries: %v)", c.queue, c.path, tk.State, tk.Attempt, c.retries)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
}

// A dispatcher whose clock is an hour behind (or ahead) retries a failed
// attempt after its backoff as the store counts it (the database's now()
// on PostgreSQL): not at once, not an hour late.
func TestRetryIgnoresTheDispatcherClock(t *testing.T) {
	for _, skew := range []time.Duration{-time.Hour, time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			eachStore(t, func(t *testing.T, st store.Store) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.WriteHeader(http.StatusServiceUnavailable)
				}))
				defer srv.Close()
				startDispatcher(t, st, func(c *Config) {
					c.Now = func() time.Time { return time.Now().Add(skew) }
					c.Backoff = task.Backoff{Min: 60 * time.Second, Max: 60 * time.Second} // waits of 30-60 s
				})
				before := time.Now()
				id := enqueueN(t, st, "q", srv.URL, 1)[0]
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					tk, err := st.GetTask(context.Background(), id)
					if err != nil {
						t.Fatal(err)
					}
					if tk.Attempt >= 1 && tk.State != task.Running {
						break
					}
				}
				time.Sleep(300 * time.Millisecond) // time for a retry due at once to be taken
				tk, err := st.GetTask(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				after := time.Now()
				if tk.State != task.Retrying || tk.Attempt != 1 ||
					tk.RunAt.Before(before.Add(30*time.Second)) || tk.RunAt.After(after.Add(60*time.Second)) {
					t.Errorf("after a 503 the task is %s at attempt %d, due in %s; want retrying at attempt 1, due in 30-60 s",
						tk.State, tk.Attempt, tk.RunAt.Sub(after).Round(time.Millisecond))
				}
			})
		})
	}
}

// slowSyncs is a store whose SyncDestinations takes a while and is counted.
type slowSyncs struct {
	store.Store
	calls atomic.Int64
}

func (s *slowSyncs) SyncDestinations(ctx context.Context, replica string, live time.Duration, reports []store.DestinationReport,
	apply func(d *task.Destination, r store.DestinationReport, now time.Time) bool) ([]store.DestinationSync, error) {
	s.calls.Add(1)
	time.Sleep(50 * time.Millisecond)
	return s.Store.SyncDestinations(ctx, replica, live, reports, apply)
}

// TestNewDestinationSyncsOnce: the first tasks for a destination this
// process has not seen all wait for one sync, then go. Each used to start
// a sync of its own until the first had landed: at 1,000 tasks/s to a new
// receiver, dozens of transactions queued on the destination's row lock,
// each holding a pool connection, and the enqueues waiting for a
// connection behind them stalled for a quarter of a second.
func TestNewDestinationSyncsOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		counted := &slowSyncs{Store: st}
		ds := newDestinations(counted, "r1", DestinationPolicy{}, 100, slog.New(slog.DiscardHandler), nil)
		const tasks = 50
		var wg sync.WaitGroup
		synced := make(chan bool, tasks)
		for range tasks {
			wg.Go(func() {
				if err := ds.ensure(t.Context(), "http://127.0.0.1:9"); err != nil {
					t.Error(err)
				}
				ds.mu.Lock()
				synced <- ds.m["http://127.0.0.1:9"].synced
				ds.mu.Unlock()
			})
		}
		wg.Wait()
		close(synced)
		for s := range synced {
			if !s {
				t.Fatal("ensure returned before the destination's first sync landed")
			}
		}
		if n := counted.calls.Load(); n != 1 {
			t.Errorf("%d tasks for a new destination made %d syncs, want 1", tasks, n)
		}
	})
}
