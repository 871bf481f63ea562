package main

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/spoolhq/spool/internal/benchstat"
)

var systemNames = map[string]string{
	sysRiver:        "River (tuned fetch)",
	sysRiverDefault: "River (default fetch)",
	sysSpoolPG:      "Spool / PostgreSQL",
	sysSpoolSQLite:  "Spool / SQLite",
}

var systemColors = map[string]string{
	sysRiver:        serRiver.color,
	sysRiverDefault: serRiverDf.color,
	sysSpoolPG:      serPG.color,
	sysSpoolSQLite:  serSQLite.color,
}

// onPostgres says whether the system's tasks live in PostgreSQL, so that
// PostgreSQL's CPU is part of its cost.
func onPostgres(sys string) bool { return sys != sysSpoolSQLite }

// phases returns sys's phase at rate index ri (-1: idle) from every run.
func (r *costResults) phases(sys string, ri int) []costPhase {
	var out []costPhase
	for _, run := range r.Runs {
		for _, s := range run.Systems {
			if s.System != sys {
				continue
			}
			if ri < 0 {
				out = append(out, s.Idle)
			} else if ri < len(s.Rates) {
				out = append(out, s.Rates[ri])
			}
		}
	}
	return out
}

// med is the median and range of f over phases.
func med(ps []costPhase, f func(costPhase) float64) benchstat.Spread {
	var xs []float64
	for _, p := range ps {
		xs = append(xs, f(p))
	}
	s := benchstat.SpreadOf(xs)
	if s.N == 0 {
		return benchstat.Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	return s
}

func perTaskMS(cpu float64, p costPhase) float64 {
	if p.Tasks == 0 {
		return math.NaN()
	}
	return cpu / float64(p.Tasks) * 1000
}

func procMS(p costPhase) float64 { return perTaskMS(p.ProcessCPU, p) }
func pgMS(p costPhase) float64   { return perTaskMS(p.PostgresCPU, p) }

// totalMS is the system's CPU per task: its process, plus PostgreSQL's
// when its tasks live there.
func totalMS(sys string) func(costPhase) float64 {
	return func(p costPhase) float64 {
		if onPostgres(sys) {
			return perTaskMS(p.ProcessCPU+p.PostgresCPU, p)
		}
		return procMS(p)
	}
}

// cell renders a spread: the median, with the range when there are
// several runs.
func cell(s benchstat.Spread, format string) string {
	if math.IsNaN(s.Median) {
		return "–"
	}
	if s.N > 1 {
		return fmt.Sprintf(format+" ["+format+"–"+format+"]", s.Median, s.Min, s.Max)
	}
	return fmt.Sprintf(format, s.Median)
}

func (r *costResults) markdown() string {
	var b strings.Builder
	p := r.Params
	if r.Note != "" {
		fmt.Fprintf(&b, "**Note:** %s\n\n", r.Note)
	}
	if r.Spool != "" {
		fmt.Fprintf(&b, "Measured: %s.\n", r.Spool)
	}
	fmt.Fprintf(&b, "Machine: %s, %d cores, %d MB; kernel %s; PostgreSQL %s; %s.\n",
		r.Machine.CPU, r.Machine.Cores, r.Machine.MemoryMB, r.Machine.Kernel, r.Postgres, r.Go)
	durability := "fsync, full_page_writes and synchronous_commit off (the test cluster's settings)"
	if p.Durable {
		durability = "PostgreSQL's default durability (fsync, full_page_writes and synchronous_commit on)"
	}
	counts := "pg_stat_statements loaded (its own small cost is in PostgreSQL's CPU)"
	if !p.Counts {
		counts = "pg_stat_statements not loaded (no statement counts)"
	}
	fmt.Fprintf(&b, "%d run(s); rates %s tasks/s, %g s each, single-task enqueues (River: one job per insert transaction) from %d clients at the rate, delivered meanwhile; idle %g s; River MaxWorkers %d, pool %d; %s; %s.\n",
		len(r.Runs), joinRates(p.Rates), p.Seconds, p.Concurrency, p.IdleSeconds, p.Workers, p.RiverPool, durability, counts)
	var loads []string
	for _, run := range r.Runs {
		for _, s := range run.Systems {
			var oc []string
			for _, ph := range append([]costPhase{s.Idle}, s.Rates...) {
				oc = append(oc, fmt.Sprintf("%.2f", ph.OtherCores))
			}
			loads = append(loads, fmt.Sprintf("run %d %s: load %.2f, other cores %s", run.Run, s.System, s.LoadAtStart, strings.Join(oc, "/")))
		}
	}
	fmt.Fprintf(&b, "Load average (1 min) at each system's start, and cores kept busy by other processes in each phase (idle/rates): %s.\n\n", strings.Join(loads, "; "))

	// The table, side by side.
	b.WriteString("### Total CPU per task (ms): the system's process + PostgreSQL\n\n| rate (tasks/s) |")
	for _, sys := range p.Systems {
		what := "process + PostgreSQL"
		if !onPostgres(sys) {
			what = "spool serve"
		}
		fmt.Fprintf(&b, " %s (%s) |", systemNames[sys], what)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(p.Systems)) + "\n")
	notKept := false
	for ri, rate := range p.Rates {
		fmt.Fprintf(&b, "| %g |", rate)
		for _, sys := range p.Systems {
			ps := r.phases(sys, ri)
			mark := ""
			if a := med(ps, func(p costPhase) float64 { return p.Achieved }); a.Min < 0.95*rate {
				mark, notKept = " †", true
			}
			if onPostgres(sys) {
				fmt.Fprintf(&b, " %s + %s = **%s**%s |", cell(med(ps, procMS), "%.3f"), cell(med(ps, pgMS), "%.3f"), cell(med(ps, totalMS(sys)), "%.3f"), mark)
			} else {
				fmt.Fprintf(&b, " **%s**%s |", cell(med(ps, procMS), "%.3f"), mark)
			}
		}
		b.WriteString("\n")
	}
	if notKept {
		b.WriteString("\n† the rate was not kept (achieved below 95% of it in a run): a saturated phase, not a cost at that rate.\n")
	}

	b.WriteString("\n### Every phase\n\n| system | rate | achieved (tasks/s) | process CPU ms/task | PostgreSQL CPU ms/task | total ms/task | p50 ms | p99 ms | load generator CPU ms/task |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, sys := range p.Systems {
		for ri, rate := range p.Rates {
			ps := r.phases(sys, ri)
			if len(ps) == 0 {
				continue
			}
			pgc := cell(med(ps, pgMS), "%.3f")
			if !onPostgres(sys) {
				pgc = "(" + pgc + ", not its cost)"
			}
			gen := "in the process"
			if !strings.HasPrefix(sys, "river") {
				gen = cell(med(ps, func(p costPhase) float64 { return perTaskMS(p.ClientCPU, p) }), "%.3f")
			}
			achieved := med(ps, func(p costPhase) float64 { return p.Achieved })
			kept := cell(achieved, "%.0f")
			if achieved.Min < 0.95*rate {
				kept += " (rate not kept)"
			}
			fmt.Fprintf(&b, "| %s | %g | %s | %s | %s | %s | %s | %s | %s |\n", systemNames[sys], rate,
				kept,
				cell(med(ps, procMS), "%.3f"), pgc, cell(med(ps, totalMS(sys)), "%.3f"),
				cell(med(ps, latency(func(l benchstat.Latency) float64 { return l.P50MS })), "%.2f"),
				cell(med(ps, latency(func(l benchstat.Latency) float64 { return l.P99MS })), "%.2f"), gen)
		}
	}

	b.WriteString("\n### Idle: no tasks\n\n| system | process CPU ms/s | PostgreSQL CPU ms/s | statements/s | transactions/s | WAL bytes/s |\n|---|---|---|---|---|---|\n")
	for _, sys := range p.Systems {
		ps := r.phases(sys, -1)
		if len(ps) == 0 {
			continue
		}
		perSec := func(f func(costPhase) float64) func(costPhase) float64 {
			return func(p costPhase) float64 {
				if p.Seconds <= 0 {
					return math.NaN()
				}
				return f(p) / p.Seconds
			}
		}
		pgCol := func(f func(*pgCounts) float64) string {
			return cell(med(ps, perSec(func(p costPhase) float64 {
				if p.PG == nil {
					return math.NaN()
				}
				return f(p.PG)
			})), "%.1f")
		}
		pgc := cell(med(ps, perSec(func(p costPhase) float64 { return p.PostgresCPU * 1000 })), "%.1f")
		if !onPostgres(sys) {
			pgc = "(" + pgc + ", not its cost)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", systemNames[sys],
			cell(med(ps, perSec(func(p costPhase) float64 { return p.ProcessCPU * 1000 })), "%.1f"), pgc,
			pgCol(func(c *pgCounts) float64 { return float64(c.Statements) }),
			pgCol(func(c *pgCounts) float64 { return float64(c.XactCommit + c.XactRollback) }),
			pgCol(func(c *pgCounts) float64 { return float64(c.WALBytes) }))
	}

	r.countsMarkdown(&b)
	return b.String()
}

func latency(f func(benchstat.Latency) float64) func(costPhase) float64 {
	return func(p costPhase) float64 {
		if p.LatencyMS == nil {
			return math.NaN()
		}
		return f(*p.LatencyMS)
	}
}

func joinRates(rs []float64) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("%g", r))
	}
	return strings.Join(s, ", ")
}

// countsMarkdown renders the counts of the first run (counts hardly vary
// from run to run, and statements are matched by text across rates).
func (r *costResults) countsMarkdown(b *strings.Builder) {
	if len(r.Runs) == 0 {
		return
	}
	p := r.Params
	first := map[string]costSystem{}
	for _, s := range r.Runs[0].Systems {
		first[s.System] = s
	}
	if p.Counts {
		b.WriteString("\n### Counts per task on PostgreSQL (run 1)\n\n")
		b.WriteString("Statements from pg_stat_statements (the system's database only; execution time is the statements' own, without parsing, planning of unprepared statements, the protocol or commit); transactions from pg_stat_database (xact_commit + xact_rollback, published by backends up to a second late); write transactions from the advance of the transaction id; WAL from the cluster's WAL position.\n\n")
		b.WriteString("| system | rate | statements | by kind | statement execution ms | transactions | write xacts | WAL bytes | pool acquires |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, sys := range p.Systems {
			s, ok := first[sys]
			if !ok || !onPostgres(sys) {
				continue
			}
			for _, ph := range s.Rates {
				if ph.PG == nil || ph.Tasks == 0 {
					continue
				}
				n := float64(ph.Tasks)
				acq := ph.Counters["pool_acquires"] + ph.Counters["spool_db_pool_acquires_total"]
				fmt.Fprintf(b, "| %s | %g | %.2f | %s | %.3f | %.2f | %.2f | %.0f | %.2f |\n", systemNames[sys], ph.Rate,
					float64(ph.PG.Statements)/n, kinds(ph.PG.ByKind, n), ph.PG.ExecMS/n, float64(ph.PG.XactCommit+ph.PG.XactRollback)/n,
					float64(ph.WriteXacts)/n, float64(ph.PG.WALBytes)/n, acq/n)
			}
		}
		for _, sys := range p.Systems {
			s, ok := first[sys]
			if !ok || !onPostgres(sys) || len(s.Rates) == 0 || s.Rates[0].PG == nil {
				continue
			}
			fmt.Fprintf(b, "\n#### Top statements per task: %s\n\n| statement |", systemNames[sys])
			for _, ph := range s.Rates {
				fmt.Fprintf(b, " %g/s |", ph.Rate)
			}
			fmt.Fprintf(b, " idle, per s |\n|---|%s---|\n", strings.Repeat("---|", len(s.Rates)))
			// The union of each rate's top statements, ordered by calls at
			// the lowest rate, where the per-task cost is highest.
			var order []string
			seen := map[string]bool{}
			for _, ph := range s.Rates {
				for _, st := range ph.PG.Top {
					if !seen[st.Query] {
						seen[st.Query] = true
						order = append(order, st.Query)
					}
				}
			}
			calls := func(ph costPhase, q string) (float64, bool) {
				if ph.PG == nil {
					return 0, false
				}
				for _, st := range ph.PG.Top {
					if st.Query == q {
						return float64(st.Calls), true
					}
				}
				return 0, false
			}
			sort.SliceStable(order, func(i, j int) bool {
				a, _ := calls(s.Rates[0], order[i])
				c, _ := calls(s.Rates[0], order[j])
				return a > c
			})
			for _, q := range order {
				fmt.Fprintf(b, "| `%s` |", strings.ReplaceAll(q, "|", `\|`))
				for _, ph := range s.Rates {
					if c, ok := calls(ph, q); ok {
						fmt.Fprintf(b, " %.3f |", c/float64(ph.Tasks))
					} else {
						b.WriteString(" (not in top) |")
					}
				}
				if c, ok := calls(s.Idle, q); ok && s.Idle.Seconds > 0 {
					fmt.Fprintf(b, " %.2f |\n", c/s.Idle.Seconds)
				} else {
					b.WriteString(" – |\n")
				}
			}
		}
	}

	// Spool's own counters.
	for _, sys := range p.Systems {
		s, ok := first[sys]
		if !ok || strings.HasPrefix(sys, "river") || len(s.Rates) == 0 {
			continue
		}
		names := map[string]bool{}
		for _, ph := range append([]costPhase{s.Idle}, s.Rates...) {
			for k := range ph.Counters {
				names[k] = true
			}
		}
		if len(names) == 0 {
			continue
		}
		var sorted []string
		for k := range names {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		fmt.Fprintf(b, "\n#### spool serve's counters (/metrics, summed over labels) per task: %s\n\n| counter |", systemNames[sys])
		for _, ph := range s.Rates {
			fmt.Fprintf(b, " %g/s |", ph.Rate)
		}
		fmt.Fprintf(b, " idle, per s |\n|---|%s---|\n", strings.Repeat("---|", len(s.Rates)))
		for _, k := range sorted {
			fmt.Fprintf(b, "| %s |", k)
			for _, ph := range s.Rates {
				fmt.Fprintf(b, " %.3f |", ph.Counters[k]/float64(max(ph.Tasks, 1)))
			}
			if s.Idle.Seconds > 0 {
				fmt.Fprintf(b, " %.2f |\n", s.Idle.Counters[k]/s.Idle.Seconds)
			} else {
				b.WriteString(" – |\n")
			}
		}
	}
}

func kinds(m map[string]int64, n float64) string {
	type kv struct {
		k string
		v int64
	}
	var xs []kv
	for k, v := range m {
		xs = append(xs, kv{k, v})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].v > xs[j].v || (xs[i].v == xs[j].v && xs[i].k < xs[j].k) })
	var s []string
	for _, x := range xs {
		if v := float64(x.v) / n; v >= 0.005 {
			s = append(s, fmt.Sprintf("%s %.2f", x.k, v))
		}
	}
	return strings.Join(s, ", ")
}

// svg plots total CPU per task against the rate (log x axis), one line per
// system, with the 0.5 ms goal dashed.
func (r *costResults) svg() []byte {
	const (
		w, h                 = 760, 460
		left, right          = 70, 200
		top, bottom          = 50, 60
		plotW, plotH float64 = w - left - right, h - top - bottom
	)
	p := r.Params
	type pt struct {
		x, y, lo, hi float64
		saturated    bool // the rate was not kept in some run
	}
	lines := map[string][]pt{}
	ymax := 0.5
	for _, sys := range p.Systems {
		for ri, rate := range p.Rates {
			ps := r.phases(sys, ri)
			s := med(ps, totalMS(sys))
			if math.IsNaN(s.Median) {
				continue
			}
			a := med(ps, func(p costPhase) float64 { return p.Achieved })
			lines[sys] = append(lines[sys], pt{rate, s.Median, s.Min, s.Max, a.Min < 0.95*rate})
			ymax = math.Max(ymax, s.Max)
		}
	}
	xlo, xhi := math.Inf(1), math.Inf(-1)
	for _, rate := range p.Rates {
		xlo, xhi = math.Min(xlo, rate), math.Max(xhi, rate)
	}
	if math.IsInf(xlo, 0) || xlo <= 0 {
		xlo, xhi = 1, 10
	}
	lx0, lx1 := math.Log10(xlo)-0.15, math.Log10(xhi)+0.15
	X := func(v float64) float64 { return left + plotW*(math.Log10(v)-lx0)/(lx1-lx0) }
	step := niceStep(ymax * 1.1 / 6)
	yTop := math.Ceil(ymax*1.1/step) * step
	Y := func(v float64) float64 { return top + plotH*(1-v/yTop) }

	var d svgDoc
	d.text(10, 22, "CPU per task against the enqueue rate (ms, lower is better)", "start", 15, "bold")
	d.text(10, 40, "the system's process + PostgreSQL (Spool/SQLite: spool serve alone); median, whiskers: range over runs; hollow: rate not kept", "start", 11, "normal")
	for v := 0.0; v <= yTop+step/2; v += step {
		d.line(left, Y(v), left+plotW, Y(v), "#e5e7eb", 1, "")
		d.text(left-6, Y(v)+4, trimNum2(v), "end", 11, "normal")
	}
	for _, rate := range p.Rates {
		d.line(X(rate), top, X(rate), top+plotH, "#e5e7eb", 1, "")
		d.text(X(rate), top+plotH+16, fmt.Sprintf("%g/s", rate), "middle", 11, "normal")
	}
	d.text(left+plotW/2, h-14, "enqueue rate (tasks/s, log scale)", "middle", 12, "normal")
	d.line(left, Y(0.5), left+plotW, Y(0.5), "#dc2626", 1.5, "5,3")
	d.text(left+plotW+4, Y(0.5)+4, "goal 0.5 ms", "start", 10, "normal")
	ly := float64(top)
	for _, sys := range p.Systems {
		pts := lines[sys]
		color := systemColors[sys]
		for i, q := range pts {
			if i > 0 {
				d.line(X(pts[i-1].x), Y(pts[i-1].y), X(q.x), Y(q.y), color, 2, "")
			}
			fill := color
			if q.saturated {
				fill = "white"
			}
			fmt.Fprintf(&d.b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n", X(q.x), Y(q.y), fill, color)
			if q.hi > q.lo {
				d.line(X(q.x), Y(q.lo), X(q.x), Y(q.hi), color, 1, "")
			}
			d.text(X(q.x)+6, Y(q.y)-5, fmt.Sprintf("%.2f", q.y), "start", 10, "normal")
		}
		d.rect(left+plotW+20, ly+20, 14, 14, color)
		d.text(left+plotW+40, ly+32, systemNames[sys], "start", 12, "normal")
		ly += 22
	}
	note := fmt.Sprintf("%d run(s), %s, %d cores", len(r.Runs), r.Machine.CPU, r.Machine.Cores)
	d.text(10, h-2, note, "start", 10, "normal")
	out := fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n"+
		`<rect width="100%%" height="100%%" fill="white"/>`+"\n", w, h+6, w, h+6)
	return []byte(out + d.b.String() + "</svg>\n")
}

func trimNum2(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
