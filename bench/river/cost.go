package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/spoolhq/spool/internal/benchstat"
	"github.com/spoolhq/spool/internal/sink"
	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

// The cost scenario (issue 15): CPU per task far below saturation. For
// each system it starts the system fresh, leaves it idle for
// -idle-seconds, then runs each of -cost-rates for -cost-seconds:
// single-task enqueues (River: one job per insert transaction) released by
// an open-loop pacer, delivered meanwhile as signed HTTP POSTs to a
// receiver outside the measured process. It reads from /proc the CPU of
// the system's process (spool serve; the River child, see riverchild.go)
// and of every PostgreSQL process, and counts on PostgreSQL what each
// task cost: statements by kind (pg_stat_statements), transactions, WAL,
// and the system's own counters.
//
// Nothing else queries PostgreSQL while a phase is measured (the session
// sampler of the other scenarios is off here: its 100 queries a second
// would be a large part of PostgreSQL's CPU at 100 tasks/s); the counters
// are read just before and just after.

// Systems of the cost scenario.
const (
	sysRiver        = "river"         // River with its benchmark's fetch settings
	sysRiverDefault = "river-default" // River with its default fetch settings
	sysSpoolPG      = "postgres"
	sysSpoolSQLite  = "sqlite"
)

type costParams struct {
	Rates       []float64 `json:"rates"`
	Seconds     float64   `json:"seconds_per_rate"`
	IdleSeconds float64   `json:"idle_seconds"`
	Runs        int       `json:"runs"`
	Systems     []string  `json:"systems"`
	Concurrency int       `json:"concurrency"` // enqueue clients / inserting goroutines
	Counts      bool      `json:"counts"`      // pg_stat_statements loaded
	Durable     bool      `json:"durable"`
	Workers     int       `json:"workers"`
	RiverPool   int32     `json:"river_pool_size"`
	MaxLoad     float64   `json:"max_load"`
}

// costPhase is one system at one rate (or idle: rate 0).
type costPhase struct {
	Rate       float64 `json:"rate"` // requested tasks/s; 0 = idle
	Tasks      int     `json:"tasks"`
	Achieved   float64 `json:"achieved_per_second"`
	Seconds    float64 `json:"wall_seconds"`
	ProcessCPU float64 `json:"process_cpu_seconds"` // spool serve, or the River child
	// PostgresCPU is every PostgreSQL process's CPU; on SQLite the cluster
	// only idles (other databases of the harness), so it is not a cost.
	PostgresCPU float64 `json:"postgres_cpu_seconds"`
	// ClientCPU is `spool bench`'s (enqueue clients + receiver), not part
	// of Spool's cost; River's receiver runs in the harness and is not
	// measured.
	ClientCPU  float64            `json:"client_cpu_seconds,omitempty"`
	OtherCores float64            `json:"other_cores"`
	LatencyMS  *benchstat.Latency `json:"latency_ms,omitempty"`
	PG         *pgCounts          `json:"pg,omitempty"`
	WriteXacts int64              `json:"pg_write_xacts,omitempty"`
	// Counters: spool serve's /metrics counters (summed over labels), or
	// River's pool counters, added during the phase.
	Counters map[string]float64 `json:"counters,omitempty"`
}

type costSystem struct {
	System      string      `json:"system"`
	LoadAtStart float64     `json:"load_at_start"`
	Idle        costPhase   `json:"idle"`
	Rates       []costPhase `json:"rates"`
}

type costRun struct {
	Run     int          `json:"run"`
	Order   []string     `json:"order"`
	Systems []costSystem `json:"systems"`
}

type costResults struct {
	// Note is the operator's remark on the conditions (-note), shown at
	// the top of cost.md.
	Note     string     `json:"note,omitempty"`
	Spool    string     `json:"spool,omitempty"`
	Started  time.Time  `json:"started"`
	Finished time.Time  `json:"finished,omitzero"`
	Params   costParams `json:"params"`
	Machine  machine    `json:"machine"`
	Postgres string     `json:"postgres"`
	Go       string     `json:"go"`
	Runs     []costRun  `json:"runs"`
}

type costEnv struct {
	log      *slog.Logger
	pg       *testpg.Server
	spoolBin string
	key      string
	work     string
	profile  string // "" = no profiles, else their directory
	p        costParams
	loadWait time.Duration
}

func runCost(ctx context.Context, ce costEnv, res *costResults, outDir string) error {
	for i := range ce.p.Runs {
		run := costRun{Run: i + 1}
		systems := append([]string(nil), ce.p.Systems...)
		off := i % len(systems)
		run.Order = append(systems[off:], systems[:off]...)
		for _, sys := range run.Order {
			if err := ctx.Err(); err != nil {
				return err
			}
			load := loadAvg()
			if ce.p.MaxLoad > 0 {
				load = waitForQuiet(ctx, ce.p.MaxLoad, ce.loadWait, ce.log.Info)
			}
			ce.log.Info("cost", "run", i+1, "system", sys, "load", load)
			var cs *costSystem
			var err error
			switch sys {
			case sysRiver, sysRiverDefault:
				cs, err = costRiver(ctx, ce, sys, i+1)
			default:
				cs, err = costSpool(ctx, ce, sys, i+1)
			}
			if err != nil {
				return fmt.Errorf("cost run %d: %s: %w", i+1, sys, err)
			}
			cs.LoadAtStart = load
			run.Systems = append(run.Systems, *cs)
			res.Runs = append(res.Runs[:i], run) // written after every system
			if err := res.write(outDir); err != nil {
				return err
			}
		}
	}
	res.Finished = time.Now().UTC()
	return res.write(outDir)
}

// settle is the pause after a start and between phases: backends publish
// their transaction counts to pg_stat_database at most once a second, and
// an idle one within about a second, so the counts of one phase do not
// spill into the next.
const settle = 3 * time.Second

// measured takes the CPU and counter snapshots around one phase.
type measured struct {
	pid               int
	pg                *testpg.Server
	db                string // "" on SQLite
	counts            bool
	proc0, pg0, busy0 time.Duration
	snap0             pgSnap
	xid0              int64
	start             time.Time
}

func (ce costEnv) begin(ctx context.Context, pid int, db string) (*measured, error) {
	m := &measured{pid: pid, pg: ce.pg, db: db, counts: ce.p.Counts && db != ""}
	if m.counts {
		var err error
		if m.snap0, err = snapPG(ctx, ce.pg, db); err != nil {
			return nil, err
		}
		m.xid0 = xidNow(ctx, ce.pg)
	}
	m.proc0, m.pg0, m.busy0 = cpuOf(pid), postgresCPU(ce.pg), machineBusy()
	m.start = time.Now()
	return m, nil
}

// end fills ph's CPU, wall time and PostgreSQL counts. extra is CPU of
// other measured processes (spool bench) for the other-cores estimate.
func (m *measured) end(ctx context.Context, ph *costPhase, extra time.Duration) error {
	wall := time.Since(m.start)
	proc, pgc, busy := cpuOf(m.pid)-m.proc0, postgresCPU(m.pg)-m.pg0, machineBusy()-m.busy0
	ph.Seconds, ph.ProcessCPU, ph.PostgresCPU = wall.Seconds(), proc.Seconds(), pgc.Seconds()
	ph.OtherCores = otherCores(busy, proc+pgc+extra, wall)
	if !m.counts {
		return nil
	}
	ph.WriteXacts = xidNow(ctx, m.pg) - m.xid0
	// Let the backends publish their transaction counts (see settle).
	time.Sleep(1500 * time.Millisecond)
	s, err := snapPG(ctx, m.pg, m.db)
	if err != nil {
		return err
	}
	c := s.diff(m.snap0)
	ph.PG = &c
	return nil
}

func xidNow(ctx context.Context, pg *testpg.Server) int64 {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return 0
	}
	defer conn.Close(context.Background())
	return nextXid(ctx, conn)
}

func costSpool(ctx context.Context, ce costEnv, store string, run int) (*costSystem, error) {
	e := spoolEnv{bin: ce.spoolBin, pg: ce.pg, store: store, key: ce.key, work: ce.work, run: run}
	sp, err := startServe(ctx, &e, fmt.Sprintf("spool_cost_r%d", run))
	if err != nil {
		return nil, err
	}
	defer sp.stop()
	metricsURL := "http://" + sp.admin + "/metrics"
	cs := &costSystem{System: store}
	time.Sleep(settle)

	phase := func(ph *costPhase, f func() (time.Duration, error)) error {
		c0, err := scrapeCounters(metricsURL)
		if err != nil {
			return err
		}
		m, err := ce.begin(ctx, sp.pid, e.db)
		if err != nil {
			return err
		}
		extra, err := f()
		if err != nil {
			return err
		}
		if err := m.end(ctx, ph, extra); err != nil {
			return err
		}
		c1, err := scrapeCounters(metricsURL)
		if err != nil {
			return err
		}
		ph.Counters = counterDiff(c1, c0)
		return nil
	}
	if err := phase(&cs.Idle, func() (time.Duration, error) {
		return 0, sleepCtx(ctx, seconds(ce.p.IdleSeconds))
	}); err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	ce.log.Info("cost idle", "system", store, "serve_cpu_s", cs.Idle.ProcessCPU, "pg_cpu_s", cs.Idle.PostgresCPU)

	// db "" turns off the session sampler of spoolBench.run.
	sb := spoolBench{bin: ce.spoolBin, server: "http://" + sp.api, admin: "http://" + sp.admin, key: ce.key, pid: sp.pid, pg: ce.pg, log: ce.log}
	if ce.profile != "" {
		sb.profile = func(name string) string {
			return filepath.Join(ce.profile, fmt.Sprintf("cost-%s-r%d-%s.pprof", store, run, name))
		}
		sb.profileSeconds = int(min(max(ce.p.Seconds-2, 1), 30))
	}
	for _, rate := range ce.p.Rates {
		time.Sleep(settle)
		ph := costPhase{Rate: rate, Tasks: tasksAt(rate, ce.p.Seconds)}
		var out phaseResult
		if err := phase(&ph, func() (time.Duration, error) {
			var err error
			out, err = sb.run(ctx, strconv.FormatFloat(rate, 'f', -1, 64),
				"--tasks", strconv.Itoa(ph.Tasks), "--rate", strconv.FormatFloat(rate, 'f', -1, 64),
				"--concurrency", strconv.Itoa(ce.p.Concurrency), "--queue", "cost")
			return seconds(out.ClientCPU), err
		}); err != nil {
			return nil, fmt.Errorf("rate %g: %w", rate, err)
		}
		ph.ClientCPU = out.ClientCPU
		ph.Achieved = out.Bench.Enqueue.PerSecond
		ph.LatencyMS = out.Bench.Delivery.Latency
		cs.Rates = append(cs.Rates, ph)
		ce.log.Info("cost", "system", store, "rate", rate, "achieved", round(ph.Achieved),
			"serve_ms_per_task", ms3(ph.ProcessCPU, ph.Tasks), "pg_ms_per_task", ms3(ph.PostgresCPU, ph.Tasks), "p99_ms", ph.LatencyMS.P99MS)
	}
	return cs, nil
}

func costRiver(ctx context.Context, ce costEnv, variant string, run int) (*costSystem, error) {
	name := fmt.Sprintf("river_cost_r%d_%s", run, map[string]string{sysRiver: "tuned", sysRiverDefault: "default"}[variant])
	dsn, err := createDB(ctx, ce.pg, name)
	if err != nil {
		return nil, err
	}
	defer dropDB(ce.pg, name)
	if err := riverMigrate(ctx, dsn); err != nil {
		return nil, err
	}

	keys, err := webhook.ParseKeys([]string{ce.key})
	if err != nil {
		return nil, err
	}
	rec := benchstat.NewRecorder(sink.New(sink.Config{Keys: keys}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with Shutdown below
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	target := "http://" + ln.Addr().String() + "/bench"

	ch, err := startRiverChild(ctx, ce, childConfig{DSN: dsn, Key: ce.key, Workers: ce.p.Workers, Pool: ce.p.RiverPool, Tuned: variant == sysRiver}, name)
	if err != nil {
		return nil, err
	}
	defer ch.close()
	cs := &costSystem{System: variant}
	time.Sleep(settle)

	// phase wraps f with the measurements; the report before it sets the
	// pool counters' baseline (and empties the child's job list).
	phase := func(ph *costPhase, f func() error) (childReport, error) {
		var r0, r1 childReport
		if err := ch.call(childCmd{Cmd: "report"}, &r0); err != nil {
			return r1, err
		}
		m, err := ce.begin(ctx, ch.pid(), name)
		if err != nil {
			return r1, err
		}
		if err := f(); err != nil {
			return r1, err
		}
		if err := m.end(ctx, ph, 0); err != nil {
			return r1, err
		}
		if err := ch.call(childCmd{Cmd: "report"}, &r1); err != nil {
			return r1, err
		}
		ph.Counters = map[string]float64{
			"pool_acquires":  float64(r1.PoolAcquires - r0.PoolAcquires),
			"pool_new_conns": float64(r1.PoolNewConns - r0.PoolNewConns),
		}
		return r1, nil
	}
	if _, err := phase(&cs.Idle, func() error { return sleepCtx(ctx, seconds(ce.p.IdleSeconds)) }); err != nil {
		return nil, fmt.Errorf("idle: %w", err)
	}
	ce.log.Info("cost idle", "system", variant, "river_cpu_s", cs.Idle.ProcessCPU, "pg_cpu_s", cs.Idle.PostgresCPU)

	for _, rate := range ce.p.Rates {
		time.Sleep(settle)
		ph := costPhase{Rate: rate, Tasks: tasksAt(rate, ce.p.Seconds)}
		var ran childRun
		rep, err := phase(&ph, func() error {
			base := rec.Len()
			cmd := childCmd{Cmd: "run", Rate: rate, Tasks: ph.Tasks, Concurrency: ce.p.Concurrency, Target: target}
			if ce.profile != "" {
				if err := os.MkdirAll(ce.profile, 0o755); err != nil {
					return err
				}
				cmd.Profile = filepath.Join(ce.profile, fmt.Sprintf("cost-%s-r%d-%g.pprof", variant, run, rate))
			}
			if err := ch.call(cmd, &ran); err != nil {
				return err
			}
			if ran.Errors > 0 {
				return fmt.Errorf("%d of %d inserts failed; the first: %s", ran.Errors, ph.Tasks, ran.FirstError)
			}
			return awaitCount(ctx, rec, base+ran.Inserted)
		})
		if err != nil {
			return nil, fmt.Errorf("rate %g: %w", rate, err)
		}
		lats := make([]time.Duration, 0, len(rep.IDs))
		for i, id := range rep.IDs {
			if at, ok := rec.Received(strconv.FormatInt(id, 10)); ok {
				lats = append(lats, at.Sub(time.Unix(0, rep.BeginNS[i])))
			}
		}
		if len(lats) != ph.Tasks {
			return nil, fmt.Errorf("rate %g: %d of %d jobs delivered", rate, len(lats), ph.Tasks)
		}
		l := benchstat.Summarize(lats)
		ph.LatencyMS = &l
		if ran.Seconds > 0 {
			ph.Achieved = float64(ran.Inserted) / ran.Seconds
		}
		cs.Rates = append(cs.Rates, ph)
		ce.log.Info("cost", "system", variant, "rate", rate, "achieved", round(ph.Achieved),
			"river_ms_per_task", ms3(ph.ProcessCPU, ph.Tasks), "pg_ms_per_task", ms3(ph.PostgresCPU, ph.Tasks), "p99_ms", l.P99MS)
	}
	return cs, nil
}

func riverMigrate(ctx context.Context, dsn string) error {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrate: %w", err)
	}
	return nil
}

// awaitCount waits until the receiver has seen n distinct ids, failing
// when nothing arrives for 30 s.
func awaitCount(ctx context.Context, rec *benchstat.Recorder, n int) error {
	last, progress := rec.Len(), time.Now()
	for {
		got := rec.Len()
		if got >= n {
			return nil
		}
		if got > last {
			last, progress = got, time.Now()
		}
		if time.Since(progress) > 30*time.Second {
			return fmt.Errorf("%d jobs not delivered; nothing arrived for 30s", n-got)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// riverChild is the parent's end of a River child process.
type riverChildProc struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	exited chan error
}

func startRiverChild(ctx context.Context, ce costEnv, cfg childConfig, name string) (*riverChildProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(ce.work, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = logf
	in, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	c := &riverChildProc{cmd: cmd, in: in, out: bufio.NewScanner(outp), exited: make(chan error, 1)}
	c.out.Buffer(make([]byte, 1<<20), 256<<20)
	go func() {
		err := cmd.Wait()
		logf.Close()
		c.exited <- err
	}()
	ready := make(chan error, 1)
	go func() {
		var r struct{ Ready bool }
		ready <- c.read(&r)
	}()
	select {
	case err = <-ready:
	case <-time.After(60 * time.Second):
		err = errors.New("not ready within 60s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		c.close()
		b, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("river child: %w\n%s", err, b)
	}
	return c, nil
}

func (c *riverChildProc) pid() int { return c.cmd.Process.Pid }

func (c *riverChildProc) read(v any) error {
	if !c.out.Scan() {
		if err := c.out.Err(); err != nil {
			return err
		}
		return errors.New("river child: output ended")
	}
	return json.Unmarshal(c.out.Bytes(), v)
}

func (c *riverChildProc) call(cmd childCmd, reply any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("river child: %w", err)
	}
	return c.read(reply)
}

func (c *riverChildProc) close() {
	_, _ = c.in.Write([]byte(`{"cmd":"stop"}` + "\n"))
	_ = c.in.Close()
	select {
	case <-c.exited:
	case <-time.After(45 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

func tasksAt(rate, secs float64) int { return max(1, int(rate*secs+0.5)) }

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// ms3 is CPU milliseconds per task, rounded for the log.
func ms3(cpu float64, tasks int) float64 {
	if tasks == 0 {
		return 0
	}
	return float64(int(cpu/float64(tasks)*1e6+0.5)) / 1000
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (r *costResults) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cost.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cost.md"), []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cost.svg"), r.svg(), 0o644)
}
