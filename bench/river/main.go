// Command river-vs-spool reproduces every figure of docs/benchmarks.md. It
// starts one throwaway PostgreSQL cluster (internal/testpg), and in each run
// measures, on fresh databases of that cluster:
//
//   - River (github.com/riverqueue/river with riverpgxv5), in this process,
//     with a worker that makes the same signed HTTP POST as Spool's
//     dispatcher (its own HTTP client, dispatch.NewHTTPClient) to a receiver
//     in this process (sink + benchstat.Recorder, the code of `spool bench`'s
//     built-in receiver): one-job-per-transaction inserts from many
//     goroutines, batched inserts, and the drain of pre-inserted jobs, with
//     its fetch loop tuned as River's own benchmark tunes it and, for
//     reference, with River's defaults;
//   - Spool on PostgreSQL and on SQLite: `spool serve` as a process, driven
//     by `spool bench` processes (single-task enqueues from many clients,
//     batched enqueues, drains, enqueue→delivery latency at a fixed rate),
//     plus its resident memory from /proc.
//
// The order of the three rotates from run to run, ratios are computed
// within a run, and the summary gives medians with their range.
//
// The cost scenario (cost.go; -only cost runs it alone) measures CPU per
// task far below saturation, at fixed rates and idle, for River (in a
// child process, riverchild.go) and Spool on both stores, with what each
// task costs PostgreSQL in statements, transactions and WAL.
//
// It is a module of its own (bench/river) so River never enters Spool's
// go.mod.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

// params are the sizes of every scenario; they are written into the results.
type params struct {
	Runs          int     `json:"runs"`
	InsertTasks   int     `json:"insert_tasks"`   // single-task enqueues / one-job inserts per run
	InsertClients int     `json:"insert_clients"` // concurrent clients for those
	DrainTasks    int     `json:"drain_tasks"`    // pre-inserted tasks drained (inserted in batches)
	Batch         int     `json:"batch"`          // tasks per batched insert
	BatchClients  int     `json:"batch_clients"`  // concurrent clients for batched inserts
	LatencyTasks  int     `json:"latency_tasks"`
	LatencyRate   float64 `json:"latency_rate"` // tasks/s
	Workers       int     `json:"workers"`      // River MaxWorkers (Spool's default SPOOL_WORKERS)
	RiverPoolSize int32   `json:"river_pool_size"`
	Stores        string  `json:"stores"`
	RiverDefaults bool    `json:"river_defaults"`
	MaxLoad       float64 `json:"max_load"` // wait for the 1-minute load to drop below this before each system
	// Durable: PostgreSQL ran with its default durability (fsync,
	// full_page_writes and synchronous_commit on), as in production,
	// instead of the test cluster's settings (all three off).
	Durable bool `json:"durable,omitempty"`
}

func main() {
	if spec := os.Getenv(childEnv); spec != "" {
		// The River process of the cost scenario (riverchild.go).
		if err := riverChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, "river child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var p params
	var spoolBin, outDir string
	var profile bool
	flag.IntVar(&p.Runs, "runs", 3, "runs; the summary gives medians and ranges")
	flag.IntVar(&p.InsertTasks, "insert-tasks", 10000, "single-task enqueues (River: one-job-per-transaction inserts) per run")
	flag.IntVar(&p.InsertClients, "insert-clients", 50, "concurrent clients for single-task enqueues")
	flag.IntVar(&p.DrainTasks, "drain-tasks", 20000, "tasks inserted in batches, then drained")
	flag.IntVar(&p.Batch, "batch", 100, "tasks per batched insert")
	flag.IntVar(&p.BatchClients, "batch-clients", 4, "concurrent clients for batched inserts")
	flag.IntVar(&p.LatencyTasks, "latency-tasks", 10000, "tasks of the fixed-rate latency scenario")
	flag.Float64Var(&p.LatencyRate, "latency-rate", 1000, "tasks/s of the latency scenario")
	flag.IntVar(&p.Workers, "workers", 100, "River MaxWorkers (Spool runs with its default SPOOL_WORKERS=100)")
	pool := flag.Int("river-pool", 4*runtime.GOMAXPROCS(0), "River's pgxpool MaxConns (Spool's default pool is max(4, 4*GOMAXPROCS))")
	flag.StringVar(&p.Stores, "stores", "postgres,sqlite", "Spool stores to measure")
	flag.BoolVar(&p.RiverDefaults, "river-defaults", true, "also drain with River's default fetch settings, for reference")
	flag.StringVar(&spoolBin, "spool", "", "spool binary (default: build ../../cmd/spool)")
	flag.StringVar(&outDir, "out", "../results", "where results.json, summary.md and benchmarks.svg go")
	flag.Float64Var(&p.MaxLoad, "max-load", 2, "before each system's turn, wait (up to -load-wait) for the 1-minute load average to drop below this; 0 = never wait")
	loadWait := flag.Duration("load-wait", 5*time.Minute, "longest wait for -max-load")
	report := flag.String("report", "", "only re-render summary.md and benchmarks.svg in -out from this results.json")
	flag.BoolVar(&p.Durable, "durable", false, "run PostgreSQL with its default durability (fsync, full_page_writes, synchronous_commit on), as in production; default: the test cluster's settings, all three off")
	flag.BoolVar(&profile, "profile", false, "save CPU profiles of spool serve (run 1; in the cost scenario, of spool serve and River at each rate) under OUT/profiles")
	only := flag.String("only", "", "run only this scenario: main (throughput, drains, latency: results.json) or cost (CPU per task at fixed rates: cost.json); default both")
	costRates := flag.String("cost-rates", "100,1000,3000", "cost scenario: enqueue rates, tasks/s")
	var cp costParams
	flag.Float64Var(&cp.Seconds, "cost-seconds", 20, "cost scenario: seconds at each rate")
	flag.Float64Var(&cp.IdleSeconds, "idle-seconds", 60, "cost scenario: seconds each system is left idle (no tasks) after its start")
	flag.IntVar(&cp.Runs, "cost-runs", 1, "cost scenario: runs; the tables give medians and ranges")
	costSystems := flag.String("cost-systems", "river,river-default,postgres,sqlite", "cost scenario: systems (river = River with its benchmark's fetch settings, river-default = its defaults, postgres and sqlite = Spool's stores)")
	flag.IntVar(&cp.Concurrency, "cost-concurrency", 20, "cost scenario: enqueue clients (River: inserting goroutines) sharing the paced requests")
	flag.BoolVar(&cp.Counts, "cost-counts", true, "cost scenario: load pg_stat_statements (restarts the cluster) and count statements, transactions and WAL per task")
	costReport := flag.String("cost-report", "", "only re-render cost.md and cost.svg in -out from this cost.json")
	note := flag.String("note", "", "cost scenario: a remark on the conditions (a loaded machine, say), kept in cost.json and shown atop cost.md; with -cost-report, replaces the saved one")
	flag.Parse()
	p.RiverPoolSize = int32(*pool)
	if *report != "" {
		return rerender(*report, outDir)
	}
	if *costReport != "" {
		return rerenderCost(*costReport, outDir, *note)
	}
	runMain, runCostScenario := *only == "" || *only == "main", *only == "" || *only == "cost"
	if !runMain && !runCostScenario {
		return fmt.Errorf("-only must be main or cost, got %q", *only)
	}
	if p.Runs < 1 || p.InsertTasks < 1 || p.DrainTasks < 1 || p.LatencyTasks < 1 || p.Batch < 1 || p.Batch > 1000 {
		return errors.New("sizes must be positive, -batch at most 1000")
	}
	if runCostScenario {
		if err := parseCostFlags(&cp, *costRates, *costSystems); err != nil {
			return err
		}
		cp.Durable, cp.Workers, cp.RiverPool, cp.MaxLoad = p.Durable, p.Workers, p.RiverPoolSize, p.MaxLoad
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "spool-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if spoolBin == "" {
		spoolBin = filepath.Join(work, "spool")
		log.Info("building spool")
		build := exec.Command("go", "build", "-trimpath", "-o", spoolBin, "./cmd/spool")
		build.Dir = "../.."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build spool: %v\n%s", err, out)
		}
	}
	key, err := webhook.GenerateKey()
	if err != nil {
		return err
	}

	pg, err := testpg.Start()
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	defer pg.Close()
	if p.Durable {
		if err := makeDurable(ctx, pg); err != nil {
			return err
		}
	}
	pgVersion, err := serverVersion(ctx, pg)
	if err != nil {
		return err
	}
	log.Info("postgres started", "port", pg.Port(), "version", pgVersion)

	ver, err := exec.Command(spoolBin, "version").Output()
	if err != nil {
		return fmt.Errorf("%s version: %w", spoolBin, err)
	}
	res := &results{
		Spool:    strings.TrimSpace(string(ver)),
		Started:  time.Now().UTC(),
		Params:   p,
		Machine:  describeMachine(),
		Postgres: pgVersion,
		Go:       runtime.Version(),
	}
	var stores []string
	for _, s := range strings.Split(p.Stores, ",") {
		if s = strings.TrimSpace(s); s == "postgres" || s == "sqlite" {
			stores = append(stores, s)
		} else if s != "" {
			return fmt.Errorf("unknown store %q", s)
		}
	}

	if !runMain {
		p.Runs = 0
	}
	for i := range p.Runs {
		r := runResult{Run: i + 1, LoadBefore: loadAvg()}
		systems := append([]string{"river"}, stores...)
		// Rotate the order so neither system always runs first (warm
		// caches) or last (after the other's leftovers).
		off := i % len(systems)
		systems = append(systems[off:], systems[:off]...)
		r.Order = systems
		for _, sys := range systems {
			if err := ctx.Err(); err != nil {
				return err
			}
			load := loadAvg()
			if p.MaxLoad > 0 {
				load = waitForQuiet(ctx, p.MaxLoad, *loadWait, log.Info)
			}
			r.LoadAtStart = append(r.LoadAtStart, load)
			log.Info("run", "n", i+1, "system", sys, "load", load)
			switch sys {
			case "river":
				rr, err := benchRiver(ctx, log, pg, p, key, i+1)
				if err != nil {
					return fmt.Errorf("run %d: river: %w", i+1, err)
				}
				r.River = rr
			default:
				sr, err := benchSpool(ctx, log, spoolEnv{
					bin: spoolBin, pg: pg, store: sys, key: key, work: work, run: i + 1,
					profileDir: profileDir(profile && i == 0, outDir),
				}, p)
				if err != nil {
					return fmt.Errorf("run %d: spool on %s: %w", i+1, sys, err)
				}
				if sys == "postgres" {
					r.SpoolPG = sr
				} else {
					r.SpoolSQLite = sr
				}
			}
		}
		r.LoadAfter = loadAvg()
		r.ratios()
		res.Runs = append(res.Runs, r)
		// Written after every run, so an interrupted series keeps its data.
		if err := res.write(outDir); err != nil {
			return err
		}
	}
	if runMain {
		res.Finished = time.Now().UTC()
		res.summarize()
		if err := res.write(outDir); err != nil {
			return err
		}
		fmt.Print(res.markdown())
	}
	if !runCostScenario {
		return nil
	}
	if cp.Counts {
		// Loaded only now, so the other scenarios run without it.
		log.Info("loading pg_stat_statements (restarts postgres)")
		if err := enableStatements(ctx, pg); err != nil {
			return err
		}
		if p.Durable { // checks that the restart kept them (ALTER SYSTEM's file outranks testpg's)
			if err := makeDurable(ctx, pg); err != nil {
				return err
			}
		}
	}
	cres := &costResults{Note: *note, Spool: res.Spool, Started: time.Now().UTC(), Params: cp, Machine: res.Machine, Postgres: pgVersion, Go: res.Go}
	if err := runCost(ctx, costEnv{log: log, pg: pg, spoolBin: spoolBin, key: key, work: work,
		profile: profileDir(profile, outDir), p: cp, loadWait: *loadWait}, cres, outDir); err != nil {
		return err
	}
	fmt.Print(cres.markdown())
	return nil
}

func parseCostFlags(cp *costParams, rates, systems string) error {
	for _, f := range strings.Split(rates, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || !(v > 0) || v > 1e6 {
			return fmt.Errorf("-cost-rates: %q is not a rate between 0 and 1000000 tasks/s", f)
		}
		cp.Rates = append(cp.Rates, v)
	}
	for _, f := range strings.Split(systems, ",") {
		switch f = strings.TrimSpace(f); f {
		case sysRiver, sysRiverDefault, sysSpoolPG, sysSpoolSQLite:
			cp.Systems = append(cp.Systems, f)
		case "":
		default:
			return fmt.Errorf("-cost-systems: unknown system %q (river, river-default, postgres, sqlite)", f)
		}
	}
	switch {
	case len(cp.Rates) == 0:
		return errors.New("-cost-rates: give at least one rate")
	case len(cp.Systems) == 0:
		return errors.New("-cost-systems: give at least one system")
	case !(cp.Seconds > 0):
		return errors.New("-cost-seconds must be positive")
	case !(cp.IdleSeconds > 0):
		return errors.New("-idle-seconds must be positive")
	case cp.Runs < 1:
		return errors.New("-cost-runs must be at least 1")
	case cp.Concurrency < 1:
		return errors.New("-cost-concurrency must be at least 1")
	}
	return nil
}

func rerenderCost(path, out, note string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r costResults
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if note != "" {
		r.Note = note
	}
	if err := r.write(out); err != nil {
		return err
	}
	fmt.Print(r.markdown())
	return nil
}

// rerender rewrites the summary and the plot from saved results, so a
// change of presentation needs no new measurements.
func rerender(path, out string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	r.summarize()
	if err := r.write(out); err != nil {
		return err
	}
	fmt.Print(r.markdown())
	return nil
}

func profileDir(on bool, out string) string {
	if !on {
		return ""
	}
	return filepath.Join(out, "profiles")
}

func (r *results) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if len(r.Summary) == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "benchmarks.svg"), r.svg(), 0o644)
}
