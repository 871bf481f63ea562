package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/migrate"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/store/storetest"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// open opens a store on dsn, closed with the test.
func open(t *testing.T, dsn string, opts postgres.Options) *postgres.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fresh returns a migrated store on a new database, and the database's DSN
// for opening more stores on it (replicas).
func fresh(t *testing.T) (*postgres.Store, string) {
	t.Helper()
	dsn := testpg.Shared(t).CreateDB(t)
	s := open(t, dsn, postgres.Options{MaxConns: 8})
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s, dsn
}

// twoReplicas returns a fresh migrated store and, as two replicas, it and
// a second store on its database.
func twoReplicas(t *testing.T) (*postgres.Store, []store.Store) {
	t.Helper()
	first, dsn := fresh(t)
	return first, []store.Store{first, open(t, dsn, postgres.Options{MaxConns: 4})}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := fresh(t)
		return s
	})
}

// TestPingNeedsTheSchema: Ping reports ErrNotMigrated until Migrate ran.
func TestPingNeedsTheSchema(t *testing.T) {
	t.Parallel()
	storetest.PingNeedsTheSchema(t, open(t, testpg.Shared(t).CreateDB(t), postgres.Options{MaxConns: 2}))
}

// TestConformanceGroupCommit: the store as `spool serve` uses it, with
// concurrent enqueues combined into shared transactions.
func TestConformanceGroupCommit(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := fresh(t)
		return store.GroupCommit(s, store.GroupCommitOptions{})
	})
}

func newTask(queue string) store.NewTask {
	return store.NewTask{
		ID:          uuid.Must(uuid.NewV7()).String(),
		Queue:       queue,
		Target:      task.Target{URL: "http://127.0.0.1:9/hook", Method: "POST"},
		Payload:     []byte(`{}`),
		ContentType: "application/json",
		Priority:    task.DefaultPriority,
	}
}

func enqueueN(t *testing.T, s store.Store, queue string, n int) []string {
	t.Helper()
	var ids []string
	for n > 0 {
		batch := make([]store.NewTask, min(n, 1000))
		for i := range batch {
			batch[i] = newTask(queue)
			ids = append(ids, batch[i].ID)
		}
		if _, err := s.Enqueue(t.Context(), batch); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		n -= len(batch)
	}
	return ids
}

// TestMigrate: several replicas migrating at once all succeed, the schema
// is applied once, and migrating again changes nothing.
func TestMigrate(t *testing.T) {
	t.Parallel()
	dsn := testpg.Shared(t).CreateDB(t)
	stores := make([]*postgres.Store, 4)
	for i := range stores {
		stores[i] = open(t, dsn, postgres.Options{MaxConns: 2})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	for i, s := range stores {
		wg.Go(func() { errs[i] = s.Migrate(t.Context()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Migrate %d: %v", i, err)
		}
	}
	versions := func() (n int, max int64) {
		err := stores[0].Pool().QueryRow(t.Context(),
			`SELECT count(*), max(version_id) FROM spool_goose_db_version WHERE version_id > 0`).Scan(&n, &max)
		if err != nil {
			t.Fatalf("read versions: %v", err)
		}
		return n, max
	}
	// Versions may have gaps (branches reserve numbers), so compare with
	// the files rather than with the highest version.
	files, err := migrate.Load(os.DirFS("migrations"))
	if err != nil {
		t.Fatal(err)
	}
	n1, v1 := versions()
	if n1 != len(files) || v1 != migrate.Latest(files) {
		t.Errorf("after migrating: %d versions recorded, max %d; want each of the %d migrations once, max %d",
			n1, v1, len(files), migrate.Latest(files))
	}
	if err := stores[1].Migrate(t.Context()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if n2, v2 := versions(); n2 != n1 || v2 != v1 {
		t.Errorf("second Migrate changed versions: %d/%d -> %d/%d", n1, v1, n2, v2)
	}
	var tables int
	if err := stores[0].Pool().QueryRow(t.Context(), `SELECT count(*) FROM pg_tables
		WHERE tablename IN ('spool_tasks', 'spool_queues', 'spool_leader')`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 3 {
		t.Errorf("%d spool tables, want 3", tables)
	}
}

// TestLeaseReplicasNeverShare: four replicas (separate pools) lease 2,000
// tasks concurrently; each task is leased exactly once.
func TestLeaseReplicasNeverShare(t *testing.T) {
	t.Parallel()
	first, dsn := fresh(t)
	const n = 2000
	ids := enqueueN(t, first, "q", n)
	var (
		mu    sync.Mutex
		seen  = make(map[string]int, n)
		total atomic.Int64
		wg    sync.WaitGroup
	)
	deadline := time.Now().Add(60 * time.Second)
	for r := range 4 {
		s := store.Store(first)
		if r > 0 {
			s = open(t, dsn, postgres.Options{MaxConns: 4})
		}
		wg.Go(func() {
			for total.Load() < n && time.Now().Before(deadline) {
				ls, err := s.Lease(t.Context(), store.LeaseRequest{Limit: 25, Shared: 25, LeaseFor: time.Minute})
				if err != nil {
					t.Errorf("Lease: %v", err)
					return
				}
				mu.Lock()
				for _, l := range ls {
					seen[l.Task.ID]++
				}
				mu.Unlock()
				total.Add(int64(len(ls)))
			}
		})
	}
	wg.Wait()
	if total.Load() != n || len(seen) != n {
		t.Fatalf("%d leases of %d distinct tasks; want %d of %d", total.Load(), len(seen), n, n)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("task %s leased %d times", id, seen[id])
		}
	}
}

// TestConcurrencyLimitAcrossReplicas: two replicas with four workers each
// never run more than the queue's concurrency at once, and finish it all.
func TestConcurrencyLimitAcrossReplicas(t *testing.T) {
	t.Parallel()
	first, dsn := fresh(t)
	const limit, n = 3, 60
	conc := limit
	if _, err := first.UpdateQueue(t.Context(), "c", task.QueuePatch{Concurrency: &conc}); err != nil {
		t.Fatal(err)
	}
	enqueueN(t, first, "c", n)
	replicas := []store.Store{first, open(t, dsn, postgres.Options{MaxConns: 6})}

	var (
		inflight, peak, done atomic.Int64
		wg                   sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// Independently of the workers' view, sample the database.
	var dbPeak atomic.Int64
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		for done.Load() < n && ctx.Err() == nil {
			var running int64
			if err := first.Pool().QueryRow(ctx, `SELECT count(*) FROM spool_tasks WHERE queue = 'c' AND state = 'running'`).Scan(&running); err == nil {
				if running > dbPeak.Load() {
					dbPeak.Store(running)
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for _, s := range replicas {
		for range 4 {
			wg.Go(func() {
				for done.Load() < n && ctx.Err() == nil {
					ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 2, Shared: 2, LeaseFor: time.Minute})
					if err != nil {
						t.Errorf("Lease: %v", err)
						return
					}
					if len(ls) == 0 {
						time.Sleep(time.Millisecond)
						continue
					}
					// Counted after Lease returns and uncounted before Complete
					// is sent, so this undercounts the database's view: any
					// excess seen here is real.
					now := inflight.Add(int64(len(ls)))
					for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
					}
					time.Sleep(3 * time.Millisecond) // "deliver"
					inflight.Add(-int64(len(ls)))
					var cs []store.Completion
					for _, l := range ls {
						cs = append(cs, store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded})
					}
					acc, err := s.Complete(ctx, cs)
					if err != nil {
						t.Errorf("Complete: %v", err)
						return
					}
					for i, ok := range acc {
						if !ok {
							t.Errorf("completion of %s refused", cs[i].TaskID)
						}
					}
					done.Add(int64(len(ls)))
				}
			})
		}
	}
	wg.Wait()
	<-sampler
	if done.Load() != n {
		t.Fatalf("finished %d tasks, want %d", done.Load(), n)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("workers held %d leases at once, concurrency is %d", p, limit)
	}
	if p := dbPeak.Load(); p > limit {
		t.Errorf("database showed %d running at once, concurrency is %d", p, limit)
	}
	t.Logf("peak in flight: workers %d, database %d (limit %d)", peak.Load(), dbPeak.Load(), limit)
}

// TestRateLimitAcrossReplicas: the token bucket is shared by replicas.
func TestRateLimitAcrossReplicas(t *testing.T) {
	t.Parallel()
	first, dsn := fresh(t)
	rate := 10.0
	if _, err := first.UpdateQueue(t.Context(), "r", task.QueuePatch{RateLimit: &rate}); err != nil {
		t.Fatal(err)
	}
	enqueueN(t, first, "r", 200)
	replicas := []store.Store{first, open(t, dsn, postgres.Options{MaxConns: 4})}
	var started atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range replicas {
		for range 2 {
			wg.Go(func() {
				for time.Since(start) < 1500*time.Millisecond {
					ls, err := s.Lease(t.Context(), store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Minute})
					if err != nil {
						t.Errorf("Lease: %v", err)
						return
					}
					started.Add(int64(len(ls)))
					time.Sleep(2 * time.Millisecond)
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Burst of 10 plus 10/s; one start of slack for float rounding.
	allowed := int64(10+rate*elapsed.Seconds()) + 1
	t.Logf("%d starts in %v at 10/s across 2 replicas (at most %d)", started.Load(), elapsed, allowed)
	if got := started.Load(); got > allowed || got < 15 {
		t.Errorf("%d starts in %v under rate_limit 10/s; want 15..%d", got, elapsed, allowed)
	}
}

// TestIdempotencyAcrossReplicas: replicas racing one key, half of them
// with another request, store one task, in a queue they create at once:
// one call creates it, every call with its request gets it, every call
// with the other request is refused whole.
func TestIdempotencyAcrossReplicas(t *testing.T) {
	t.Parallel()
	first, replicas := twoReplicas(t)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners = map[string]string{} // fingerprint → task id
		created int
		served  int
		refused = map[string]int{}
	)
	for i := range 12 {
		s := replicas[i%2]
		fp := []string{"A", "B"}[i/2%2]
		wg.Go(func() {
			nt := newTask("fresh-queue") // the queue row is created concurrently too
			nt.IdempotencyKey, nt.Fingerprint = "order-1", []byte(fp)
			res, err := s.Enqueue(t.Context(), []store.NewTask{newTask("fresh-queue"), nt})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !errors.Is(err, store.ErrIdempotencyMismatch) {
					t.Errorf("Enqueue: %v", err)
				}
				refused[fp]++
				return
			}
			served++
			if !res[1].Existing {
				created++
			}
			if id, ok := winners[fp]; ok && id != res[1].Task.ID {
				t.Errorf("request %s got tasks %s and %s", fp, id, res[1].Task.ID)
			}
			winners[fp] = res[1].Task.ID
		})
	}
	wg.Wait()
	if len(winners) != 1 || created != 1 || refused["A"]+refused["B"] != 6 || refused["A"]*refused["B"] != 0 {
		t.Fatalf("requests that got a task: %v, %d created it; refused: %v; want one request served 6 times and created once, the other refused 6 times",
			winners, created, refused)
	}
	q, err := first.GetQueue(t.Context(), "fresh-queue")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(served) + 1; q.Counts[task.Available] != want {
		t.Errorf("queue holds %d tasks, want %d (the keyed one and the plain task of each call that was not refused)", q.Counts[task.Available], want)
	}
}

// TestIdempotencyKeyOfAnOlderReplica: a keyed task stored without a
// reservation (by a replica older than migration 00008, during a rolling
// upgrade) still answers a replay, and its key is released after it is
// pruned like any other.
func TestIdempotencyKeyOfAnOlderReplica(t *testing.T) {
	t.Parallel()
	s, dsn := fresh(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	old := uuid.Must(uuid.NewV7()).String()
	if _, err := conn.Exec(ctx, `INSERT INTO spool_tasks (id, queue, state, priority, run_at, max_attempts, timeout_ms,
			target_url, target_method, idempotency_key)
		VALUES ($1, 'q', 'available', 5, now(), 3, 1000, 'http://127.0.0.1:9/', 'POST', 'k')`, old); err != nil {
		t.Fatal(err)
	}
	replay := newTask("q")
	replay.IdempotencyKey, replay.Fingerprint = "k", []byte("A")
	res, err := s.Enqueue(ctx, []store.NewTask{replay})
	if err != nil || !res[0].Existing || res[0].Task.ID != old {
		t.Fatalf("replay of an older replica's key: %+v, %v; want the task %s", res, err, old)
	}
	if _, err := s.CancelTask(ctx, old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if n, err := s.Prune(ctx, 0, 10); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	_, err = s.Enqueue(ctx, []store.NewTask{replay})
	var ie *store.IdempotencyError
	if !errors.As(err, &ie) || !errors.Is(err, store.ErrIdempotencyPruned) || ie.TaskID != old {
		t.Fatalf("after the prune: %v; want ErrIdempotencyPruned naming task %s", err, old)
	}
	if n, err := s.PruneIdempotencyKeys(ctx, 0, 10); err != nil || n != 1 {
		t.Fatalf("PruneIdempotencyKeys = %d, %v; want 1", n, err)
	}
	fresh := newTask("q")
	fresh.IdempotencyKey = "k"
	if res, err := s.Enqueue(ctx, []store.NewTask{fresh}); err != nil || res[0].Existing {
		t.Errorf("after the release: %+v, %v; want a new task", res, err)
	}
}

// TestCompletionRefusedAfterRescue: a worker whose lease expired and was
// rescued cannot overwrite the task, even after the new holder finished.
func TestCompletionRefusedAfterRescue(t *testing.T) {
	t.Parallel()
	s, dsn := fresh(t)
	other := open(t, dsn, postgres.Options{MaxConns: 2})
	id := enqueueN(t, s, "q", 1)[0]
	ls, err := s.Lease(t.Context(), store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: 20 * time.Millisecond})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease = %v, %v", ls, err)
	}
	stale := ls[0]
	time.Sleep(50 * time.Millisecond)
	if n, err := other.RescueExpired(t.Context()); err != nil || n != 1 {
		t.Fatalf("RescueExpired = %d, %v; want 1", n, err)
	}
	lost, err := s.ExtendLeases(t.Context(), []store.LeaseRef{{TaskID: id, Token: stale.Token}}, time.Minute)
	if err != nil || len(lost) != 1 {
		t.Errorf("ExtendLeases of a rescued lease: lost %v, %v; want it lost", lost, err)
	}
	ls, err = other.Lease(t.Context(), store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Minute})
	if err != nil || len(ls) != 1 {
		t.Fatalf("re-Lease = %v, %v", ls, err)
	}
	fresh := ls[0]
	if fresh.Token == stale.Token || fresh.Task.Attempt != 2 {
		t.Fatalf("re-lease token %d attempt %d; want a new token and attempt 2", fresh.Token, fresh.Task.Attempt)
	}
	acc, err := other.Complete(t.Context(), []store.Completion{{LeaseRef: store.LeaseRef{TaskID: id, Token: fresh.Token}, Outcome: store.Succeeded, LastStatus: 200}})
	if err != nil || !acc[0] {
		t.Fatalf("holder's Complete = %v, %v", acc, err)
	}
	acc, err = s.Complete(t.Context(), []store.Completion{{LeaseRef: store.LeaseRef{TaskID: id, Token: stale.Token}, Outcome: store.Fail, LastError: "stale"}})
	if err != nil || acc[0] {
		t.Fatalf("stale Complete = %v, %v; want refused", acc, err)
	}
	got, err := s.GetTask(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != task.Succeeded || got.LastStatus != 200 || got.LastError != "" {
		t.Errorf("task = %s status %d error %q; want succeeded 200 and no error", got.State, got.LastStatus, got.LastError)
	}
}

// TestWakeupsAcrossReplicas: an enqueue on one replica wakes another's
// listener.
func TestWakeupsAcrossReplicas(t *testing.T) {
	t.Parallel()
	s, dsn := fresh(t)
	listener := open(t, dsn, postgres.Options{MaxConns: 2})
	ch, err := listener.Wakeups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	enqueueN(t, s, "q", 1)
	select {
	case <-ch:
		t.Logf("woken %v after enqueue on another replica", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up within 5s of an enqueue on another replica")
	}
	// A scheduled task does not signal.
	nt := newTask("q")
	nt.RunAt = time.Now().Add(time.Hour)
	if _, err := s.Enqueue(t.Context(), []store.NewTask{nt}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Error("woken by a task scheduled an hour ahead")
	case <-time.After(300 * time.Millisecond):
	}
	// Closing the store closes the channel.
	listener.Close()
	select {
	case _, ok := <-ch:
		if ok {
			if _, ok := <-ch; ok {
				t.Error("Wakeups channel still open after Close")
			}
		}
	case <-time.After(5 * time.Second):
		t.Error("Wakeups channel not closed by Close")
	}
}

// roundTrips counts queries sent.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestBatchesAreFewRoundTrips: enqueueing, leasing and completing 1,000
// tasks each takes a handful of statements, not one per task.
func TestBatchesAreFewRoundTrips(t *testing.T) {
	t.Parallel()
	_, dsn := fresh(t)
	var rt roundTrips
	s := open(t, dsn, postgres.Options{Tracer: &rt})
	// Key half of them, with a few repeats of stored keys, to exercise the
	// conflict path too.
	seed := newTask("q")
	seed.IdempotencyKey = "k-0"
	if _, err := s.Enqueue(t.Context(), []store.NewTask{seed}); err != nil {
		t.Fatal(err)
	}
	batch := make([]store.NewTask, 1000)
	for i := range batch {
		batch[i] = newTask("q")
		if i%2 == 0 {
			batch[i].IdempotencyKey = fmt.Sprintf("k-%d", i%500)
		}
	}
	rt.n.Store(0)
	start := time.Now()
	res, err := s.Enqueue(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Enqueue(1000): %d statements, %v", rt.n.Load(), time.Since(start))
	if n := rt.n.Load(); n > 8 {
		t.Errorf("Enqueue of 1000 tasks sent %d statements; want a handful", n)
	}
	if !res[0].Existing || res[0].Task.ID != seed.ID {
		t.Errorf("key k-0 did not resolve to the stored task")
	}

	rt.n.Store(0)
	ls, err := s.Lease(t.Context(), store.LeaseRequest{Limit: 1000, Shared: 1000, LeaseFor: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load(); n > 4 {
		t.Errorf("Lease(1000) sent %d statements", n)
	}
	cs := make([]store.Completion, len(ls))
	for i, l := range ls {
		cs[i] = store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded}
	}
	rt.n.Store(0)
	acc, err := s.Complete(t.Context(), cs)
	if err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load(); n > 2 {
		t.Errorf("Complete(%d) sent %d statements", len(cs), n)
	}
	for i, ok := range acc {
		if !ok {
			t.Fatalf("completion %d refused", i)
		}
	}
}

// TestUnavailable: with the server down, calls fail with ErrUnavailable
// (not a hang, not a generic error); after a restart the same store
// recovers, data intact, and the LISTEN loop reconnects.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	if _, err := testpg.FindBinDir(); err != nil {
		t.Skip(err)
	}
	srv, err := testpg.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	dsn := srv.CreateDB(t)
	s := open(t, dsn, postgres.Options{MaxConns: 4})
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := enqueueN(t, s, "q", 1)[0]
	ch, err := s.Wakeups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	drainFor(ch, 100*time.Millisecond)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	calls := map[string]func() error{
		"Ping":    func() error { return s.Ping(ctx) },
		"GetTask": func() error { _, err := s.GetTask(ctx, id); return err },
		"Lease": func() error {
			_, err := s.Lease(ctx, store.LeaseRequest{Limit: 10, Shared: 10, LeaseFor: time.Minute})
			return err
		},
		"Enqueue": func() error { _, err := s.Enqueue(ctx, []store.NewTask{newTask("q")}); return err },
		"Complete": func() error {
			_, err := s.Complete(ctx, []store.Completion{{LeaseRef: store.LeaseRef{TaskID: id, Token: 1}, Outcome: store.Succeeded}})
			return err
		},
		"ListQueues": func() error { _, err := s.ListQueues(ctx); return err },
	}
	for name, call := range calls {
		// Twice: the first call may meet a pooled connection the shutdown
		// killed, the second must dial and fail.
		for i := range 2 {
			err := call()
			if !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s (call %d) with the server down: %v, want ErrUnavailable", name, i+1, err)
			}
		}
	}
	if _, err := postgres.Open(ctx, dsn, postgres.Options{Logger: quiet}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open with the server down: %v, want ErrUnavailable", err)
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("calls against a stopped server took too long: %v", err)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("store did not recover within 10s of the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := s.GetTask(ctx, id); err != nil || got.State != task.Available {
		t.Fatalf("after restart: GetTask = %v, %v", got.State, err)
	}
	// The listener reconnects and signals (notifications may have been
	// missed), then carries new ones again.
	select {
	case <-ch:
	case <-time.After(15 * time.Second):
		t.Fatal("no wake-up after the LISTEN connection came back")
	}
	drainFor(ch, 100*time.Millisecond)
	enqueueN(t, s, "q", 1)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up for an enqueue after reconnecting")
	}
}

func drainFor(ch <-chan struct{}, d time.Duration) {
	timer := time.After(d)
	for {
		select {
		case <-ch:
		case <-timer:
			return
		}
	}
}

// benchStore is a migrated store on a fresh database for a benchmark.
func benchStore(b *testing.B) *postgres.Store {
	b.Helper()
	dsn := testpg.Shared(b).CreateDB(b)
	s, err := postgres.Open(b.Context(), dsn, postgres.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Migrate(b.Context()); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkEnqueueBatch1000 measures the API's batch enqueue.
func BenchmarkEnqueueBatch1000(b *testing.B) {
	s := benchStore(b)
	batch := make([]store.NewTask, 1000)
	for b.Loop() {
		for i := range batch {
			batch[i] = newTask("bench")
		}
		if _, err := s.Enqueue(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkLeaseComplete measures the worker's round trip: lease 100 tasks
// from a backlog, complete them in one call.
func BenchmarkLeaseComplete(b *testing.B) { benchLeaseComplete(b, false) }

// BenchmarkLeaseCompleteWithAttempts is BenchmarkLeaseComplete with an
// attempt record on every completion, as the dispatcher sends them: the
// cost of the attempt history.
func BenchmarkLeaseCompleteWithAttempts(b *testing.B) { benchLeaseComplete(b, true) }

// benchAttempt is a successful attempt's record as the dispatcher makes it.
func benchAttempt(l store.Lease) *task.Attempt {
	now := time.Now()
	excerpt := `{"ok":true,"id":"` + l.Task.ID + `"}`
	return &task.Attempt{Attempt: l.Task.Attempt, Outcome: task.AttemptSucceeded, StartedAt: now.Add(-3 * time.Millisecond), FinishedAt: now,
		Duration: 3 * time.Millisecond, Status: 200, ResponseExcerpt: &excerpt, ResponseHeaders: map[string]string{"Content-Type": "application/json"},
		Replica: "bench-replica-1234-abcd", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"}
}

func benchLeaseComplete(b *testing.B, attempts bool) {
	s := benchStore(b)
	batch := make([]store.NewTask, 100)
	for b.Loop() {
		b.StopTimer()
		for i := range batch {
			batch[i] = newTask("bench")
		}
		if _, err := s.Enqueue(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		ls, err := s.Lease(b.Context(), store.LeaseRequest{Limit: len(batch), Shared: len(batch), LeaseFor: time.Minute})
		if err != nil || len(ls) != len(batch) {
			b.Fatalf("Lease: %d, %v", len(ls), err)
		}
		cs := make([]store.Completion, len(ls))
		for i, l := range ls {
			cs[i] = store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded, LastStatus: 200}
			if attempts {
				cs[i].Attempt = benchAttempt(l)
			}
		}
		if _, err := s.Complete(b.Context(), cs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "tasks/s")
}

// TestCompleteWrongThenRightTokenInOneBatch: a stale report and the
// holder's report of one task in the same batch; the holder's applies.
func TestCompleteWrongThenRightTokenInOneBatch(t *testing.T) {
	t.Parallel()
	s, _ := fresh(t)
	id := enqueueN(t, s, "q", 1)[0]
	ls, err := s.Lease(t.Context(), store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Minute})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease = %v, %v", ls, err)
	}
	l := ls[0]
	acc, err := s.Complete(t.Context(), []store.Completion{
		{LeaseRef: store.LeaseRef{TaskID: id, Token: l.Token - 1}, Outcome: store.Fail, LastError: "stale"},
		{LeaseRef: store.LeaseRef{TaskID: id, Token: l.Token}, Outcome: store.Succeeded},
	})
	if err != nil {
		t.Fatal(err)
	}
	if acc[0] || !acc[1] {
		t.Errorf("accepted = %v, want [false true]", acc)
	}
	if got, err := s.GetTask(t.Context(), id); err != nil || got.State != task.Succeeded || got.LastError != "" {
		t.Errorf("task = %s %q, %v; want succeeded without error", got.State, got.LastError, err)
	}
}
