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

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
)

// statementCounter counts the statements a PostgreSQL store sends, by kind,
// whether sent alone or in a batch, and the round trips that lease
// without enqueueing ("own lease": the dispatcher's own).
type statementCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// batchKinds collects the kinds of one batch's statements.
type batchKinds struct {
	mu    sync.Mutex
	kinds map[string]bool
}

type batchKey struct{}

// statementKinds names the statements of a task's life by a fragment of
// their text.
var statementKinds = []struct{ kind, fragment string }{
	{"enqueue", "INSERT INTO spool_tasks "},
	{"lease", "WITH ranked AS"},
	{"promote", "WITH due AS"},
	{"complete", "WITH done AS"},
}

// count counts sql and returns its kind ("" for none of statementKinds).
func (c *statementCounter) count(sql string) string {
	for _, k := range statementKinds {
		if strings.Contains(sql, k.fragment) {
			c.mu.Lock()
			c.n[k.kind]++
			c.mu.Unlock()
			return k.kind
		}
	}
	return ""
}

func (c *statementCounter) get(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[kind]
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if c.count(d.SQL) == "lease" {
		c.mu.Lock()
		c.n["own lease"]++
		c.mu.Unlock()
	}
	return ctx
}
func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *statementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return context.WithValue(ctx, batchKey{}, &batchKinds{kinds: map[string]bool{}})
}
func (c *statementCounter) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	kind := c.count(d.SQL)
	if b, ok := ctx.Value(batchKey{}).(*batchKinds); ok && kind != "" {
		b.mu.Lock()
		b.kinds[kind] = true
		b.mu.Unlock()
	}
}
func (c *statementCounter) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchEndData) {
	b, ok := ctx.Value(batchKey{}).(*batchKinds)
	if !ok {
		return
	}
	b.mu.Lock()
	own := b.kinds["lease"] && !b.kinds["enqueue"]
	b.mu.Unlock()
	if own {
		c.mu.Lock()
		c.n["own lease"]++
		c.mu.Unlock()
	}
}

// TestStatementsPerTask counts what one task costs PostgreSQL at a
// moderate rate (100 tasks/s, enqueued through the same store as the
// dispatcher's, as in spool serve), so that a regression in the cost per
// task shows as a count, not as a timing: one enqueue, about one lease
// (the NOTIFY's echo used to add a second, empty one), no PromoteDue on
// the leases a wake-up starts, and completions sharing statements. With
// the dispatcher leasing in the enqueues' transactions (as spool serve
// runs), the lease rides in the enqueue's round trip: the dispatcher's own
// leases are the polls' alone.
func TestStatementsPerTask(t *testing.T) {
	t.Run("OwnLeases", func(t *testing.T) { statementsPerTask(t, false) })
	t.Run("LeaseOnEnqueue", func(t *testing.T) { statementsPerTask(t, true) })
}

func statementsPerTask(t *testing.T, leaseOnEnqueue bool) {
	t.Parallel()
	const tasks = 100
	counter := &statementCounter{n: make(map[string]int)}
	ctx := context.Background()
	st, err := postgres.Open(ctx, testpg.Shared(t).CreateDB(t), postgres.Options{MaxConns: 8, Tracer: counter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var received atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
	}))
	t.Cleanup(srv.Close)
	d := startDispatcher(t, st, func(c *Config) { c.PollInterval = time.Second })
	if leaseOnEnqueue {
		st.SetEnqueueLeaser(d)
	}
	time.Sleep(200 * time.Millisecond) // the first poll's lease
	kinds := []string{"own lease"}
	for _, k := range statementKinds {
		kinds = append(kinds, k.kind)
	}
	before := map[string]int{}
	for _, k := range kinds {
		before[k] = counter.get(k)
	}
	start := time.Now()
	for i := range tasks {
		nt := store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: "q", Target: task.Target{URL: srv.URL, Method: "POST"}}
		if _, err := st.Enqueue(ctx, []store.NewTask{nt}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 10 * time.Millisecond)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for received.Load() < tasks && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := received.Load(); got < tasks {
		t.Fatalf("%d of %d tasks delivered", got, tasks)
	}
	time.Sleep(2 * completionWindow) // the last completions
	elapsed := time.Since(start)
	per := map[string]float64{}
	for _, k := range kinds {
		per[k] = float64(counter.get(k)-before[k]) / tasks
	}
	t.Logf("statements per task at 100 tasks/s over %v: %v", elapsed.Round(time.Millisecond), per)
	if per["enqueue"] != 1 {
		t.Errorf("enqueue statements per task = %.2f; want 1", per["enqueue"])
	}
	if per["lease"] > 1.3 {
		t.Errorf("lease statements per task = %.2f; want about 1 (at most 1.3)", per["lease"])
	}
	// The polls lease on their own, about once a second.
	if n := per["own lease"] * tasks; leaseOnEnqueue && n > elapsed.Seconds()+3 {
		t.Errorf("%.0f leases of the dispatcher's own in %v; want only the polls' (one a second): the enqueues lease", n, elapsed)
	}
	// Polls promote (about one a second here); wake-up leases do not.
	if n := per["promote"] * tasks; n > elapsed.Seconds()+3 {
		t.Errorf("%.0f PromoteDue statements in %v; want only the polls' (one a second)", n, elapsed)
	}
	if per["complete"] > 0.8 {
		t.Errorf("completion statements per task = %.2f; want them shared (at most 0.8)", per["complete"])
	}
}

// TestShortRetryNotLeftToThePoll: wake-up leases skip PromoteDue, so a
// task this process retries with a short backoff must still be looked for
// as it falls due, not at the next poll (1 s here, and no leader runs to
// promote it): its second attempt follows the first by about the backoff.
func TestShortRetryNotLeftToThePoll(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		var mu sync.Mutex
		var at []time.Time
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			at = append(at, time.Now())
			n := len(at)
			mu.Unlock()
			if n == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}))
		t.Cleanup(srv.Close)
		startDispatcher(t, st, func(c *Config) {
			c.PollInterval = time.Second
			c.Backoff = task.Backoff{Min: 50 * time.Millisecond, Max: 50 * time.Millisecond}
		})
		time.Sleep(1200 * time.Millisecond) // past the first poll
		nt := store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: "q", Target: task.Target{URL: srv.URL, Method: "POST"}}
		if _, err := st.Enqueue(context.Background(), []store.NewTask{nt}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			n := len(at)
			mu.Unlock()
			if n >= 2 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(at) < 2 {
			t.Fatalf("%d attempts in 10s; want 2", len(at))
		}
		gap := at[1].Sub(at[0])
		t.Logf("second attempt %v after the first (backoff 50ms, poll 1s)", gap)
		if gap > 600*time.Millisecond {
			t.Errorf("second attempt %v after the first; want about the 50ms backoff, not the next poll", gap)
		}
	})
}

// TestDrainDoesNotWaitForPolls: a backlog bigger than the workers drains
// lease after lease as deliveries free their slots, not one lease per poll
// (the wake-up after each completion write it used to rely on is gone).
// 300 tasks, 10 workers and a 2 s poll: at one lease per poll this took
// about a minute.
func TestDrainDoesNotWaitForPolls(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		var received atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			received.Add(1)
		}))
		t.Cleanup(srv.Close)
		startDispatcher(t, st, func(c *Config) {
			c.PollInterval = 2 * time.Second
			c.Workers = 10
		})
		const tasks = 300
		nts := make([]store.NewTask, tasks)
		for i := range nts {
			nts[i] = store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: "q", Target: task.Target{URL: srv.URL, Method: "POST"}}
		}
		start := time.Now()
		if _, err := st.Enqueue(context.Background(), nts); err != nil {
			t.Fatal(err)
		}
		deadline := start.Add(20 * time.Second)
		for received.Load() < tasks && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		t.Logf("%d of %d tasks delivered in %v", received.Load(), tasks, took.Round(time.Millisecond))
		if received.Load() < tasks || took > 10*time.Second {
			t.Errorf("%d of %d tasks in %v; want all well before 10s (a lease per 2s poll takes a minute)", received.Load(), tasks, took)
		}
	})
}
