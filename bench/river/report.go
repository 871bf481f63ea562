package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/benchstat"
)

type results struct {
	Spool    string      `json:"spool,omitempty"` // `spool version` of the binary measured
	Started  time.Time   `json:"started"`
	Finished time.Time   `json:"finished,omitzero"`
	Params   params      `json:"params"`
	Machine  machine     `json:"machine"`
	Postgres string      `json:"postgres"`
	Go       string      `json:"go"`
	Runs     []runResult `json:"runs"`
	// Summary is every figure's median and range over the runs, by key
	// (see figures).
	Summary map[string]benchstat.Spread `json:"summary,omitempty"`
}

type runResult struct {
	Run         int                `json:"run"`
	Order       []string           `json:"order"`
	LoadBefore  float64            `json:"load_before"` // 1-minute load average
	LoadAfter   float64            `json:"load_after"`
	LoadAtStart []float64          `json:"load_at_start"` // of each system's turn, in Order
	River       *riverResult       `json:"river"`
	SpoolPG     *spoolResult       `json:"spool_postgres,omitempty"`
	SpoolSQLite *spoolResult       `json:"spool_sqlite,omitempty"`
	Ratios      map[string]float64 `json:"ratios"` // within this run
}

// ratios compares Spool with River within one run, so drift in the
// machine's load between runs cancels out.
func (r *runResult) ratios() {
	r.Ratios = map[string]float64{}
	rv := r.River
	if rv == nil {
		return
	}
	if rv.DrainDefault != nil && rv.DrainDefault.PerSecond > 0 {
		r.Ratios["river_tuned_vs_default_drain"] = rv.Drain.PerSecond / rv.DrainDefault.PerSecond
	}
	for _, s := range []struct {
		name string
		res  *spoolResult
	}{{"postgres", r.SpoolPG}, {"sqlite", r.SpoolSQLite}} {
		if s.res == nil {
			continue
		}
		r.Ratios[s.name+"_drain_vs_river"] = s.res.DrainPerSec / rv.Drain.PerSecond
		r.Ratios[s.name+"_drain_single_vs_river"] = s.res.DrainSinglePerSec / rv.DrainSingle.PerSecond
		r.Ratios[s.name+"_single_enqueue_vs_river_insert"] = s.res.SingleEnqueuePerSec / rv.Insert.PerSecond
		r.Ratios[s.name+"_batch_enqueue_vs_river_insert_many"] = s.res.BatchEnqueuePerSec / rv.BatchInsert.PerSecond
	}
}

// figure is one reported number: how to read it from a run.
type figure struct {
	key, label, unit string
	get              func(r *runResult) (float64, bool)
}

func riverFig(key, label, unit string, f func(*riverResult) float64) figure {
	return figure{key: "river." + key, label: label, unit: unit, get: func(r *runResult) (float64, bool) {
		if r.River == nil {
			return 0, false
		}
		v := f(r.River)
		return v, !math.IsNaN(v)
	}}
}

func spoolFig(store, key, label, unit string, f func(*spoolResult) float64) figure {
	return figure{key: store + "." + key, label: label, unit: unit, get: func(r *runResult) (float64, bool) {
		s := r.SpoolPG
		if store == "sqlite" {
			s = r.SpoolSQLite
			if unit == "xacts" || strings.Contains(key, "_pg_") {
				return 0, false // no PostgreSQL behind SQLite
			}
		}
		if s == nil {
			return 0, false
		}
		v := f(s)
		return v, !math.IsNaN(v)
	}}
}

func ratioFig(key, label string) figure {
	return figure{key: "ratio." + key, label: label, unit: "×", get: func(r *runResult) (float64, bool) {
		v, ok := r.Ratios[key]
		return v, ok
	}}
}

// perK is CPU seconds per 1,000 tasks.
func perK(cpu float64, tasks int) float64 {
	if tasks == 0 {
		return math.NaN()
	}
	return cpu / float64(tasks) * 1000
}

func figures() []figure {
	fs := []figure{
		riverFig("insert", "River: one-job-per-transaction inserts, many goroutines", "/s", func(r *riverResult) float64 { return r.Insert.PerSecond }),
		riverFig("batch_insert", "River: InsertMany", "/s", func(r *riverResult) float64 { return r.BatchInsert.PerSecond }),
		riverFig("drain", "River (tuned): drain, HTTP POST per job", "/s", func(r *riverResult) float64 { return r.Drain.PerSecond }),
		riverFig("drain_single", "River (tuned): drain of the singly inserted jobs", "/s", func(r *riverResult) float64 { return r.DrainSingle.PerSecond }),
		riverFig("drain_default", "River (defaults): drain, HTTP POST per job", "/s", func(r *riverResult) float64 {
			if r.DrainDefault == nil {
				return math.NaN()
			}
			return r.DrainDefault.PerSecond
		}),
		riverFig("insert_cpu_per_1k", "River: insert CPU s/1k jobs (River process + PostgreSQL)", "s", func(r *riverResult) float64 {
			return perK(r.Insert.SelfCPU+r.Insert.PostgresCPU, r.Insert.Tasks)
		}),
		riverFig("insert_xacts_per_task", "River: PostgreSQL write transactions per job, one-job inserts", "xacts", func(r *riverResult) float64 {
			return float64(r.Insert.PGWriteXacts) / float64(max(r.Insert.Tasks, 1))
		}),
		riverFig("drain_xacts_per_task", "River: PostgreSQL write transactions per job, drain", "xacts", func(r *riverResult) float64 {
			return float64(r.Drain.PGWriteXacts) / float64(max(r.Drain.Tasks, 1))
		}),
		riverFig("drain_cpu_per_1k", "River: drain CPU s/1k jobs (River process incl. receiver + PostgreSQL)", "s", func(r *riverResult) float64 {
			return perK(r.Drain.SelfCPU+r.Drain.PostgresCPU, r.Drain.Tasks)
		}),
	}
	for _, st := range []string{"postgres", "sqlite"} {
		name := map[string]string{"postgres": "Spool/PostgreSQL", "sqlite": "Spool/SQLite"}[st]
		fs = append(fs,
			spoolFig(st, "single_enqueue", name+": single-task enqueues via the API, many clients", "/s", func(s *spoolResult) float64 { return s.SingleEnqueuePerSec }),
			spoolFig(st, "batch_enqueue", name+": batched enqueues via the API", "/s", func(s *spoolResult) float64 { return s.BatchEnqueuePerSec }),
			spoolFig(st, "drain", name+": drain, HTTP POST per task", "/s", func(s *spoolResult) float64 { return s.DrainPerSec }),
			spoolFig(st, "drain_single", name+": drain of the singly enqueued tasks", "/s", func(s *spoolResult) float64 { return s.DrainSinglePerSec }),
			spoolFig(st, "latency_p50", name+": enqueue→delivery p50 at the fixed rate", "ms", func(s *spoolResult) float64 { return s.LatencyMS.P50MS }),
			spoolFig(st, "latency_p95", name+": enqueue→delivery p95", "ms", func(s *spoolResult) float64 { return s.LatencyMS.P95MS }),
			spoolFig(st, "latency_p99", name+": enqueue→delivery p99", "ms", func(s *spoolResult) float64 { return s.LatencyMS.P99MS }),
			spoolFig(st, "latency_max", name+": enqueue→delivery max", "ms", func(s *spoolResult) float64 { return s.LatencyMS.MaxMS }),
			spoolFig(st, "latency_rate", name+": achieved rate of the latency scenario", "/s", func(s *spoolResult) float64 { return s.LatencyRatePerSec }),
			spoolFig(st, "idle_rss", name+": idle RSS after start", "MB", func(s *spoolResult) float64 { return s.IdleRSSMB }),
			spoolFig(st, "idle_rss_after", name+": idle RSS after the load", "MB", func(s *spoolResult) float64 { return s.IdleRSSAfterMB }),
			spoolFig(st, "peak_rss", name+": peak RSS", "MB", func(s *spoolResult) float64 { return s.PeakRSSMB }),
			spoolFig(st, "single_cpu_serve_per_1k", name+": single enqueue + drain CPU s/1k tasks, spool serve", "s", func(s *spoolResult) float64 {
				return perK(s.Single.ServeCPU, s.Single.Bench.Enqueue.Tasks)
			}),
			spoolFig(st, "single_cpu_pg_per_1k", name+": single enqueue + drain CPU s/1k tasks, PostgreSQL", "s", func(s *spoolResult) float64 {
				return perK(s.Single.PostgresCPU, s.Single.Bench.Enqueue.Tasks)
			}),
			spoolFig(st, "single_cpu_client_per_1k", name+": single enqueue + drain CPU s/1k tasks, spool bench (clients + receiver)", "s", func(s *spoolResult) float64 {
				return perK(s.Single.ClientCPU, s.Single.Bench.Enqueue.Tasks)
			}),
			spoolFig(st, "single_xacts_per_task", name+": PostgreSQL write transactions per task, single enqueue + drain", "xacts", func(s *spoolResult) float64 {
				return float64(s.Single.PGWriteXacts) / float64(max(s.Single.Bench.Enqueue.Tasks, 1))
			}),
			spoolFig(st, "batch_xacts_per_task", name+": PostgreSQL write transactions per task, batched enqueue + drain", "xacts", func(s *spoolResult) float64 {
				return float64(s.Batch.PGWriteXacts) / float64(max(s.Batch.Bench.Enqueue.Tasks, 1))
			}),
			spoolFig(st, "latency_xacts_per_task", name+": PostgreSQL write transactions per task at the fixed rate", "xacts", func(s *spoolResult) float64 {
				return float64(s.Latency.PGWriteXacts) / float64(max(s.Latency.Bench.Enqueue.Tasks, 1))
			}),
			spoolFig(st, "latency_cpu_serve_per_1k", name+": CPU s/1k tasks at the fixed rate, spool serve", "s", func(s *spoolResult) float64 {
				return perK(s.Latency.ServeCPU, s.Latency.Bench.Enqueue.Tasks)
			}),
			spoolFig(st, "latency_cpu_pg_per_1k", name+": CPU s/1k tasks at the fixed rate, PostgreSQL", "s", func(s *spoolResult) float64 {
				return perK(s.Latency.PostgresCPU, s.Latency.Bench.Enqueue.Tasks)
			}),
			spoolFig(st, "latency_request_p99", name+": enqueue request round trip p99 at the fixed rate", "ms", func(s *spoolResult) float64 {
				return s.Latency.Bench.Enqueue.RequestLatency.P99MS
			}),
			spoolFig(st, "batch_cpu_serve_per_1k", name+": batch enqueue + drain CPU s/1k tasks, spool serve", "s", func(s *spoolResult) float64 {
				return perK(s.Batch.ServeCPU, s.Batch.Bench.Enqueue.Tasks)
			}),
			spoolFig(st, "batch_cpu_pg_per_1k", name+": batch enqueue + drain CPU s/1k tasks, PostgreSQL", "s", func(s *spoolResult) float64 {
				return perK(s.Batch.PostgresCPU, s.Batch.Bench.Enqueue.Tasks)
			}),
			spoolFig(st, "batch_cpu_client_per_1k", name+": batch enqueue + drain CPU s/1k tasks, spool bench (clients + receiver)", "s", func(s *spoolResult) float64 {
				return perK(s.Batch.ClientCPU, s.Batch.Bench.Enqueue.Tasks)
			}),
			ratioFig(st+"_drain_vs_river", name+" drain ÷ River (tuned) drain"),
			ratioFig(st+"_drain_single_vs_river", name+" drain of singles ÷ River's"),
			ratioFig(st+"_single_enqueue_vs_river_insert", name+" single-task enqueue ÷ River one-job-per-transaction insert"),
			ratioFig(st+"_batch_enqueue_vs_river_insert_many", name+" batched enqueue ÷ River InsertMany"),
		)
	}
	fs = append(fs, ratioFig("river_tuned_vs_default_drain", "River tuned ÷ River defaults (drain)"))
	return fs
}

// otherCores is the mean, over every measured phase of a run, of the cores
// other processes kept busy.
func (r *runResult) otherCores() (mean, peak float64) {
	var xs []float64
	if rv := r.River; rv != nil {
		for _, p := range []riverPhase{rv.Insert, rv.BatchInsert, rv.DrainSingle, rv.Drain} {
			xs = append(xs, p.OtherCores)
		}
	}
	for _, s := range []*spoolResult{r.SpoolPG, r.SpoolSQLite} {
		if s != nil {
			xs = append(xs, s.Single.OtherCores, s.Batch.OtherCores, s.Latency.OtherCores)
		}
	}
	for _, x := range xs {
		mean += x / float64(len(xs))
		peak = max(peak, x)
	}
	return mean, peak
}

func (r *results) summarize() {
	r.Summary = map[string]benchstat.Spread{}
	for _, f := range figures() {
		var xs []float64
		for i := range r.Runs {
			if v, ok := f.get(&r.Runs[i]); ok {
				xs = append(xs, v)
			}
		}
		if s := benchstat.SpreadOf(xs); s.N > 0 {
			r.Summary[f.key] = s
		}
	}
}

func fmtNum(v float64, unit string) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case unit == "×":
		return fmt.Sprintf("%.2f", v)
	case unit == "s", unit == "xacts":
		return fmt.Sprintf("%.3f", v)
	case unit == "ms" && v < 100:
		return fmt.Sprintf("%.2f", v)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func fmtSpread(s benchstat.Spread, unit string) string {
	return fmt.Sprintf("%s [%s–%s]", fmtNum(s.Median, unit), fmtNum(s.Min, unit), fmtNum(s.Max, unit))
}

// target is one goal of issue 6, item 9.
type target struct {
	what    string
	key     string
	atLeast bool
	value   float64
	unit    string
}

func targets(store string) []target {
	return []target{
		{"drain with an HTTP POST per task ≥ 1.5× River (tuned)", "ratio." + store + "_drain_vs_river", true, 1.5, "×"},
		{"single-task enqueues via the API ≥ 2× River one-job-per-transaction inserts", "ratio." + store + "_single_enqueue_vs_river_insert", true, 2, "×"},
		{"batched enqueue via the API ≥ 10,000 tasks/s", store + ".batch_enqueue", true, 10000, "/s"},
		{"enqueue→delivery p99 ≤ 10 ms at 1,000 tasks/s", store + ".latency_p99", false, 10, "ms"},
		{"idle RSS ≤ 30 MB", store + ".idle_rss", false, 30, "MB"},
	}
}

// markdown renders the summary tables that docs/benchmarks.md quotes.
func (r *results) markdown() string {
	var b strings.Builder
	if r.Spool != "" {
		fmt.Fprintf(&b, "Measured: %s.\n", r.Spool)
	}
	fmt.Fprintf(&b, "Machine: %s, %d cores, %d MB; kernel %s; PostgreSQL %s; %s.\n",
		r.Machine.CPU, r.Machine.Cores, r.Machine.MemoryMB, r.Machine.Kernel, r.Postgres, r.Go)
	var loads []string
	for _, run := range r.Runs {
		var at []string
		for i, sys := range run.Order {
			if i < len(run.LoadAtStart) {
				at = append(at, fmt.Sprintf("%s %.2f", sys, run.LoadAtStart[i]))
			}
		}
		loads = append(loads, fmt.Sprintf("run %d: %.2f → %.2f (at each start: %s)", run.Run, run.LoadBefore, run.LoadAfter, strings.Join(at, ", ")))
	}
	fmt.Fprintf(&b, "Load average (1 min) before → after each run: %s.\n", strings.Join(loads, "; "))
	var other []string
	for _, run := range r.Runs {
		mean, peak := run.otherCores()
		other = append(other, fmt.Sprintf("run %d: %.2f (peak %.2f)", run.Run, mean, peak))
	}
	fmt.Fprintf(&b, "Cores kept busy by other processes during the measured phases, mean over phases: %s.\n\n", strings.Join(other, "; "))
	p := r.Params
	durability := "fsync, full_page_writes and synchronous_commit off (the test cluster's settings)"
	if p.Durable {
		durability = "PostgreSQL's default durability (fsync, full_page_writes and synchronous_commit on)"
	}
	fmt.Fprintf(&b, "%d runs; %d single-task enqueues from %d clients; %d tasks drained (enqueued in batches of %d by %d clients); latency: %d tasks at %g/s; River MaxWorkers %d, pool %d; %s.\n\n",
		p.Runs, p.InsertTasks, p.InsertClients, p.DrainTasks, p.Batch, p.BatchClients, p.LatencyTasks, p.LatencyRate, p.Workers, p.RiverPoolSize, durability)

	b.WriteString("### Targets (issue 6, item 9)\n\n| target | Spool/PostgreSQL | met | Spool/SQLite | met |\n|---|---|---|---|---|\n")
	pgT, sqT := targets("postgres"), targets("sqlite")
	for i := range pgT {
		fmt.Fprintf(&b, "| %s |", pgT[i].what)
		for _, t := range []target{pgT[i], sqT[i]} {
			s, ok := r.Summary[t.key]
			if !ok {
				b.WriteString(" – | – |")
				continue
			}
			met := (t.atLeast && s.Median >= t.value) || (!t.atLeast && s.Median <= t.value)
			mark := "**no**"
			if met {
				mark = "yes"
			}
			fmt.Fprintf(&b, " %s %s | %s |", fmtSpread(s, t.unit), unitText(t.unit), mark)
		}
		b.WriteString("\n")
	}

	b.WriteString("\n### Every figure: median [min–max]\n\n| figure | median [range] | unit |\n|---|---|---|\n")
	for _, f := range figures() {
		s, ok := r.Summary[f.key]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", f.label, fmtSpread(s, f.unit), unitText(f.unit))
	}
	return b.String()
}

func unitText(unit string) string {
	switch unit {
	case "/s":
		return "tasks/s"
	case "s":
		return "CPU s per 1k tasks"
	case "xacts":
		return "write transactions per task"
	}
	return unit
}
