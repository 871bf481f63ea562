package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
)

// migrated opens a store with two connections on a fresh, migrated
// database of the shared cluster, closed with the test.
func migrated(t *testing.T) *Store {
	t.Helper()
	s, _ := migratedConns(t, 2)
	return s
}

// migratedConns is migrated with conns connections (one connection: one
// plan cache to inspect); it also returns the database's URL.
func migratedConns(t *testing.T, conns int32) (*Store, string) {
	t.Helper()
	dsn := testpg.Shared(t).CreateDB(t)
	s, err := Open(t.Context(), dsn, Options{MaxConns: conns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, dsn
}

// mustExec runs sql on s's pool, failing the test on an error.
func mustExec(t *testing.T, s *Store, sql string, args ...any) {
	t.Helper()
	if _, err := s.pool.Exec(t.Context(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// leaseAndComplete leases up to limit tasks and completes them as
// succeeded; it returns how many it leased.
func leaseAndComplete(t *testing.T, s *Store, limit int) int {
	t.Helper()
	ctx := t.Context()
	ls, err := s.Lease(ctx, store.LeaseRequest{Limit: limit, Shared: limit, LeaseFor: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cs := make([]store.Completion, len(ls))
	for i, l := range ls {
		cs[i] = store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: store.Succeeded}
	}
	if _, err := s.Complete(ctx, cs); err != nil {
		t.Fatal(err)
	}
	return len(ls)
}

// explained is the part of EXPLAIN (ANALYZE, FORMAT JSON)'s output these
// tests read.
type explained struct {
	Plan planNode        `json:"Plan"`
	JIT  json.RawMessage `json:"JIT"` // present when the execution was JIT-compiled
}

// explainJSON runs query (an EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE) in tx.
func explainJSON(t *testing.T, tx pgx.Tx, query string) explained {
	t.Helper()
	var out []byte
	if err := tx.QueryRow(t.Context(), query, pgx.QueryExecModeSimpleProtocol).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []explained
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("decode plan: %v\n%s", err, out)
	}
	return plans[0]
}

// planNode is the part of EXPLAIN (ANALYZE, FORMAT JSON) these tests read.
type planNode struct {
	NodeType        string     `json:"Node Type"`
	Relation        string     `json:"Relation Name"`
	Index           string     `json:"Index Name"`
	ActualRows      float64    `json:"Actual Rows"`
	ActualLoops     float64    `json:"Actual Loops"`
	RemovedByFilter float64    `json:"Rows Removed by Filter"`
	RemovedByRechk  float64    `json:"Rows Removed by Index Recheck"`
	RemovedByJoin   float64    `json:"Rows Removed by Join Filter"`
	Plans           []planNode `json:"Plans"`
}

// tasksRead sums the rows the plan's scans of spool_tasks produced or
// filtered out: how much of the table one execution touched.
func (n planNode) tasksRead() float64 {
	var sum float64
	if n.Relation == "spool_tasks" || (n.NodeType == "Bitmap Index Scan" && n.Index != "") {
		if n.NodeType != "ModifyTable" {
			sum += (n.ActualRows + n.RemovedByFilter + n.RemovedByRechk) * max(n.ActualLoops, 1)
		}
	}
	for _, c := range n.Plans {
		sum += c.tasksRead()
	}
	return sum
}

// joinRejects sums the row pairs the plan's joins examined and rejected: a
// nested loop that compares every row of one side with every row of the
// other rejects n×m pairs for the n it keeps.
func (n planNode) joinRejects() float64 {
	sum := n.RemovedByJoin * max(n.ActualLoops, 1)
	for _, c := range n.Plans {
		sum += c.joinRejects()
	}
	return sum
}

// has reports whether a node of type typ scans spool_tasks as alias-free
// target of the UPDATE (the outermost scan under ModifyTable).
func (n planNode) find(pred func(planNode) bool) bool {
	if pred(n) {
		return true
	}
	for _, c := range n.Plans {
		if c.find(pred) {
			return true
		}
	}
	return false
}

// explainLease runs the free lease statement once under EXPLAIN ANALYZE,
// as a prepared statement with the given plan_cache_mode (the generic plan
// is what Lease runs, with genericPlansSQL's settings), inside a transaction
// that is rolled back, and returns its plan and how many rows it leased.
func explainLease(t *testing.T, s *Store, mode string, limit int) (planNode, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	settings := "SET LOCAL plan_cache_mode = " + mode
	if mode == "force_generic_plan" {
		settings = genericPlansSQL // as Lease runs it
	}
	if _, err := tx.Exec(ctx, settings); err != nil {
		t.Fatal(err)
	}
	name := "lease_" + mode
	if _, err := tx.Exec(ctx, "PREPARE "+name+"(int, bigint, text[], int[], int) AS "+leaseFreeSQL); err != nil {
		t.Fatal(err)
	}
	defer tx.Exec(context.WithoutCancel(ctx), "DEALLOCATE "+name)
	plan := explainJSON(t, tx, fmt.Sprintf("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE %s(%d, 30000, '{}', '{}', %d)", name, limit, limit)).Plan
	return plan, int(plan.ActualRows)
}

func fill(t *testing.T, s *Store, queue string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for done := 0; done < n; {
		batch := make([]store.NewTask, min(500, n-done))
		for i := range batch {
			batch[i] = store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: queue, Target: task.Target{URL: "http://127.0.0.1:9/"}, Priority: 5}
		}
		if _, err := s.Enqueue(ctx, batch); err != nil {
			t.Fatal(err)
		}
		done += len(batch)
	}
}

// TestLeaseReadsOnlyWhatItLeases holds the free lease to its promise: one
// lease reads about as many tasks as it takes, with a backlog held back in
// a paused or rate-limited queue, and with planner statistics taken while
// the table was empty (as on a fresh install that then fills up), under
// both the custom and the generic plan. A lease that walked the held-back
// backlog, or answered the state re-check by scanning every available task
// (both seen before), reads thousands.
func TestLeaseReadsOnlyWhatItLeases(t *testing.T) {
	t.Parallel()
	s := migrated(t)
	// Statistics of an empty table, kept while it fills.
	mustExec(t, s, `ANALYZE spool_tasks; ALTER TABLE spool_tasks SET (autovacuum_enabled = false)`)
	const backlog, limit = 3000, 20
	setQueue := func(q, set string) {
		t.Helper()
		mustExec(t, s, `UPDATE spool_queues SET `+set+` WHERE name = $1`, q)
	}
	fill(t, s, "busy", backlog)
	fill(t, s, "held", backlog)
	fill(t, s, "free", 200)

	// With statistics of the empty table, the custom plan for the walk
	// may sort every available task instead of walking the index (the
	// planner believes there are a few dozen); the generic plan, which a
	// pgx connection's cached statement settles on, does not. Only the
	// generic plan is held to the bound then; both are once the table has
	// been analyzed (autovacuum does it within about a minute).
	stale := true
	check := func(name string) {
		t.Helper()
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			plan, leased := explainLease(t, s, mode, limit)
			if stale && mode == "force_custom_plan" {
				t.Logf("%s, %s, empty-table statistics: read %.0f rows (not held to the bound)", name, mode, plan.tasksRead())
				continue
			}
			if leased != limit {
				t.Errorf("%s, %s: leased %d, want %d", name, mode, leased, limit)
			}
			read := plan.tasksRead()
			t.Logf("%s, %s: leased %d, read %.0f rows of spool_tasks", name, mode, leased, read)
			// Each leased row is read by the pick, the lock and the update;
			// the heads of a few queues may add up to limit each.
			if read > 10*limit {
				out, _ := json.MarshalIndent(plan, "", " ")
				t.Errorf("%s, %s: read %.0f rows to lease %d (want at most %d)\n%s", name, mode, read, limit, 10*limit, out)
			}
			if !plan.find(func(n planNode) bool { return n.NodeType == "Tid Scan" }) {
				t.Errorf("%s, %s: the update does not find its rows by TID scan", name, mode)
			}
		}
	}
	// Every queue free: the global walk.
	check("all queues free")
	// A paused backlog beside free queues: the per-queue heads.
	setQueue("held", "paused = true")
	check("paused backlog")
	// A rate-limited queue out of tokens beside free queues.
	setQueue("held", "paused = false, rate_limit = 0.001, tokens = 0, tokens_at = now()")
	check("rate-limited backlog")
	// The busy queue paused too: only "free" is left.
	setQueue("busy", "paused = true")
	check("two held backlogs")

	// The same with statistics of the filled table, both plan kinds.
	mustExec(t, s, `ANALYZE spool_tasks`)
	stale = false
	setQueue("busy", "paused = false")
	setQueue("held", "paused = false, rate_limit = 0")
	check("all queues free, analyzed")
	setQueue("held", "paused = true")
	check("paused backlog, analyzed")
}

// TestRefreshStats: a table that filled up after its last analysis is
// analyzed (its estimate then counts the rows), and a fresh analysis is not
// repeated. PostgreSQL's activity counters reach pg_stat_user_tables up to
// a few seconds late, so the first check is polled.
func TestRefreshStats(t *testing.T) {
	t.Parallel()
	s := migrated(t)
	ctx := t.Context()
	mustExec(t, s, `ALTER TABLE spool_tasks SET (autovacuum_enabled = false)`)
	if ran, err := s.RefreshStats(ctx); err != nil || ran {
		t.Fatalf("empty table: RefreshStats = %v, %v; want false, nil", ran, err)
	}
	fill(t, s, "q", 3000)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ran, err := s.RefreshStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ran {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("3,000 new rows never made the statistics stale")
		}
		time.Sleep(200 * time.Millisecond)
	}
	var reltuples float64
	if err := s.pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'spool_tasks'::regclass`).Scan(&reltuples); err != nil {
		t.Fatal(err)
	}
	if reltuples < 2500 {
		t.Errorf("after RefreshStats, reltuples = %.0f, want about 3000", reltuples)
	}
	time.Sleep(1500 * time.Millisecond) // let the counters catch up
	if ran, err := s.RefreshStats(ctx); err != nil || ran {
		t.Errorf("just analyzed: RefreshStats = %v, %v; want false, nil", ran, err)
	}
}

// explainComplete runs completeSQL once under EXPLAIN ANALYZE as a
// prepared statement on its generic plan, completing ls as succeeded,
// inside a transaction that is rolled back. It returns the plan and the
// number of rows the statement changed.
func explainComplete(t *testing.T, s *Store, ls []store.Lease) (planNode, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, genericPlansSQL); err != nil { // as Complete runs it
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "PREPARE complete_generic(uuid[], bigint[], int[], timestamptz[], text[], int[], bigint[], "+
		"int[], text[], timestamptz[], timestamptz[], bigint[], int[], text[], text[], text[], text[], text[], text[]) AS "+completeSQL); err != nil {
		t.Fatal(err)
	}
	defer tx.Exec(context.WithoutCancel(ctx), "DEALLOCATE complete_generic")
	ids, tokens, outcomes := "", "", ""
	for i, l := range ls {
		sep := ","
		if i == 0 {
			sep = ""
		}
		ids += sep + l.Task.ID
		tokens += fmt.Sprintf("%s%d", sep, l.Token)
		outcomes += sep + fmt.Sprint(int(store.Succeeded))
	}
	n := len(ls)
	q := fmt.Sprintf(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE complete_generic('{%s}', '{%s}', '{%s}',
		array_fill(NULL::timestamptz, ARRAY[%d]), array_fill(''::text, ARRAY[%d]), array_fill(200, ARRAY[%d]),
		array_fill(0::bigint, ARRAY[%d]),
		array_fill(1, ARRAY[%[4]d]), array_fill('succeeded'::text, ARRAY[%[4]d]),
		array_fill(now(), ARRAY[%[4]d]), array_fill(now(), ARRAY[%[4]d]), array_fill(1000::bigint, ARRAY[%[4]d]),
		array_fill(200, ARRAY[%[4]d]), array_fill(NULL::text, ARRAY[%[4]d]), array_fill(NULL::text, ARRAY[%[4]d]),
		array_fill('ok'::text, ARRAY[%[4]d]), array_fill('{"Content-Type": "text/plain"}'::text, ARRAY[%[4]d]),
		array_fill('replica'::text, ARRAY[%[4]d]), array_fill('4bf92f3577b34da6a3ce929d0e0e4736'::text, ARRAY[%[4]d]))`,
		ids, tokens, outcomes, n, n, n, n)
	plan := explainJSON(t, tx, q).Plan
	return plan, int(plan.ActualRows)
}

// TestCompleteReadsOnlyWhatItCompletes: the generic plan of the completion
// statement (the one Complete runs, see genericPlansSQL) finds each task
// by its id, with statistics taken while the table was empty and with
// current ones, while many more tasks are running than the batch
// completes (100 workers, a completion batch of what finished in the
// window). A plan that hash-joined the ids with a scan of the table would
// read all of it at every completion; one that walked the running tasks
// (their partial index, whose predicate the statement's state test
// implies) and compared each with every completion of the batch did
// running × batch comparisons: twice the completion's cost in the drain.
func TestCompleteReadsOnlyWhatItCompletes(t *testing.T) {
	t.Parallel()
	const running, batch = 300, 50
	s, ls := runningOverBacklog(t, running)
	for i, stats := range []string{"empty-table statistics", "current statistics"} {
		if stats == "current statistics" {
			mustExec(t, s, `ANALYZE spool_tasks`)
		}
		plan, changed := explainComplete(t, s, ls[i*batch:(i+1)*batch])
		read, rejects := plan.tasksRead(), plan.joinRejects()
		t.Logf("%s: completed %d of %d running, read %.0f rows of spool_tasks, rejected %.0f joined pairs", stats, changed, running, read, rejects)
		if changed != batch {
			t.Errorf("%s: completed %d, want %d", stats, changed, batch)
		}
		if read > 3*batch || rejects > 3*batch {
			out, _ := json.MarshalIndent(plan, "", " ")
			t.Errorf("%s: read %.0f rows and rejected %.0f joined pairs to complete %d (want at most %d each)\n%s", stats, read, rejects, batch, 3*batch, out)
		}
	}
}

// runningOverBacklog fills a store whose statistics were taken while it
// was empty (and autovacuum will not refresh) with 3,000 tasks and leases
// running of them: the running tasks of the completion's and the
// extension's plan tests.
func runningOverBacklog(t *testing.T, running int) (*Store, []store.Lease) {
	t.Helper()
	s := migrated(t)
	mustExec(t, s, `ANALYZE spool_tasks; ALTER TABLE spool_tasks SET (autovacuum_enabled = false)`)
	fill(t, s, "q", 3000)
	ls, err := s.Lease(t.Context(), store.LeaseRequest{Limit: running, Shared: running, LeaseFor: time.Minute})
	if err != nil || len(ls) != running {
		t.Fatalf("Lease = %d, %v; want %d", len(ls), err, running)
	}
	return s, ls
}

// TestExtendLeasesReadsOnlyWhatItExtends: the generic plan of the
// heartbeat's lease extension (extendSQL, with genericPlansSQL's settings,
// as ExtendLeases runs it) finds each task by its id, with statistics
// taken while the table was empty and with current ones, while many more
// tasks are running than the batch extends. Without those settings it
// read the whole table on both kinds of plan. TestHotStatementsUseGenericPlans
// holds ExtendLeases to running it that way.
func TestExtendLeasesReadsOnlyWhatItExtends(t *testing.T) {
	t.Parallel()
	const running, batch = 300, 50
	s, ls := runningOverBacklog(t, running)
	ctx := t.Context()
	ids, tokens := "", ""
	for i, l := range ls[:batch] {
		sep := ","
		if i == 0 {
			sep = ""
		}
		ids += sep + l.Task.ID
		tokens += fmt.Sprintf("%s%d", sep, l.Token)
	}
	for _, stats := range []string{"empty-table statistics", "current statistics"} {
		if stats == "current statistics" {
			mustExec(t, s, `ANALYZE spool_tasks`)
		}
		plan := func() planNode {
			tx, err := s.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.WithoutCancel(ctx))
			if _, err := tx.Exec(ctx, genericPlansSQL); err != nil { // as ExtendLeases runs it
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "PREPARE extend(uuid[], bigint[], bigint) AS "+extendSQL); err != nil {
				t.Fatal(err)
			}
			defer tx.Exec(context.WithoutCancel(ctx), "DEALLOCATE extend")
			return explainJSON(t, tx, fmt.Sprintf(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE extend('{%s}', '{%s}', 30000)`, ids, tokens)).Plan
		}()
		read, rejects := plan.tasksRead(), plan.joinRejects()
		t.Logf("%s: extended %.0f of %d running, read %.0f rows of spool_tasks, rejected %.0f joined pairs", stats, plan.ActualRows, running, read, rejects)
		if int(plan.ActualRows) != batch {
			t.Errorf("%s: extended %.0f, want %d", stats, plan.ActualRows, batch)
		}
		if read > 3*batch || rejects > 3*batch {
			out, _ := json.MarshalIndent(plan, "", " ")
			t.Errorf("%s: read %.0f rows and rejected %.0f joined pairs to extend %d (want at most %d each)\n%s", stats, read, rejects, batch, 3*batch, out)
		}
	}
}

// TestHotStatementsUseGenericPlans: on a connection that has leased,
// completed and extended leases many times, the lease, the completion and
// the extension statements ran on their generic plans only (PostgreSQL counts both kinds per prepared
// statement), and the setting did not outlive their transactions.
func TestHotStatementsUseGenericPlans(t *testing.T) {
	t.Parallel()
	s, _ := migratedConns(t, 1)
	ctx := t.Context()
	const rounds = 12
	fill(t, s, "q", rounds*3+1) // and one to hold for the extensions
	for range rounds {
		if n := leaseAndComplete(t, s, 3); n != 3 {
			t.Fatalf("leased %d, want 3", n)
		}
	}
	// The heartbeat's extension, of leases held or not.
	held, err := s.Lease(ctx, store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Minute})
	if err != nil || len(held) != 1 {
		t.Fatalf("Lease = %d, %v", len(held), err)
	}
	for range rounds {
		if _, err := s.ExtendLeases(ctx, []store.LeaseRef{{TaskID: held[0].Task.ID, Token: held[0].Token}}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	var mode string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "auto" {
		t.Errorf("plan_cache_mode after the hot statements = %q, want auto (the setting is local to their transactions)", mode)
	}
	for name, sql := range map[string]string{"lease": leaseFreeSQL, "complete": completeSQL, "extend": extendSQL} {
		var generic, custom int64
		if err := s.pool.QueryRow(ctx, `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1`, sql).
			Scan(&generic, &custom); err != nil {
			t.Fatalf("%s: prepared statement not found: %v", name, err)
		}
		t.Logf("%s: %d generic plans, %d custom", name, generic, custom)
		if custom != 0 || generic < rounds {
			t.Errorf("%s: %d generic and %d custom plans in %d executions; want generic plans only", name, generic, custom, rounds)
		}
	}
}

// TestAnalyzeSamplesLittle: ANALYZE of spool_tasks, which RefreshStats runs
// every few seconds under a steady load, samples 3,000 rows rather than
// the default 30,000 (migration 00005). A column added without a
// statistics target would bring the default back and fail this.
func TestAnalyzeSamplesLittle(t *testing.T) {
	t.Parallel()
	s, dsn := migratedConns(t, 2)
	ctx := t.Context()
	const rows = 12000
	fill(t, s, "q", rows)

	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `ANALYZE VERBOSE spool_tasks`); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^"spool_tasks":.* (\d+) live rows.*; (\d+) rows in sample`)
	for _, msg := range notices {
		m := re.FindStringSubmatch(msg)
		if m == nil {
			continue
		}
		live, _ := strconv.Atoi(m[1])
		sample, _ := strconv.Atoi(m[2])
		t.Logf("%d live rows, %d in the sample", live, sample)
		if live < rows {
			t.Fatalf("ANALYZE saw %d live rows, want %d", live, rows)
		}
		if sample > 3000 {
			t.Errorf("ANALYZE sampled %d rows of spool_tasks, want at most 3,000 (a column without a statistics target?)", sample)
		}
		return
	}
	t.Fatalf("no sample line in ANALYZE VERBOSE's messages: %q", notices)
}

// TestLeasePlanMadeOnAnEmptyTable: a connection's first lease, on an empty
// table, makes the generic plan it keeps. Once thousands of finished tasks
// have piled up (with no ANALYZE in between), that cached plan still reads
// about what it leases, and is not JIT-compiled. Made with sequential scans
// allowed, it found the leased rows by ctid with a scan of the whole table
// (8,300 rows read to lease 100 here).
func TestLeasePlanMadeOnAnEmptyTable(t *testing.T) {
	t.Parallel()
	s, _ := migratedConns(t, 1)
	ctx := t.Context()
	mustExec(t, s, `ALTER TABLE spool_tasks SET (autovacuum_enabled = false)`)
	if ls, err := s.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute}); err != nil || len(ls) != 0 {
		t.Fatalf("Lease on an empty table = %d, %v", len(ls), err)
	}
	const limit = 100
	for range 40 {
		fill(t, s, "q", limit)
		if n := leaseAndComplete(t, s, limit); n != limit {
			t.Fatalf("leased %d, want %d", n, limit)
		}
	}
	fill(t, s, "q", limit)

	var name string
	if err := s.pool.QueryRow(ctx, `SELECT name FROM pg_prepared_statements WHERE statement = $1`, leaseFreeSQL).Scan(&name); err != nil {
		t.Fatalf("the lease's prepared statement: %v", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, genericPlansSQL); err != nil {
		t.Fatal(err)
	}
	res := explainJSON(t, tx, fmt.Sprintf(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE "%s"(%d, 30000, '{}', '{}', %d)`, name, limit, limit))
	plan := res.Plan
	if res.JIT != nil {
		// The seqscan penalty lifts the plan's cost above jit_above_cost;
		// compiling it took 250 ms at every lease.
		t.Errorf("the lease was JIT-compiled: %s", res.JIT)
	}
	read := plan.tasksRead()
	t.Logf("cached plan: leased %.0f, read %.0f rows of spool_tasks", plan.ActualRows, read)
	if int(plan.ActualRows) != limit {
		t.Errorf("leased %.0f, want %d", plan.ActualRows, limit)
	}
	if read > 10*limit {
		b, _ := json.MarshalIndent(plan, "", " ")
		t.Errorf("the plan cached on an empty table read %.0f rows to lease %d (want at most %d)\n%s", read, limit, 10*limit, b)
	}
}
