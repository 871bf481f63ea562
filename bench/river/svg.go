package main

import (
	"fmt"
	"html"
	"math"
	"strings"

	"github.com/spoolhq/spool/internal/benchstat"
)

// A tiny SVG writer: horizontal grouped bars (median) with whiskers (range)
// and a dashed target line per group. Enough for two panels, and no
// plotting dependency.

type series struct {
	name, color string
}

var (
	serPG      = series{"Spool / PostgreSQL", "#2563eb"}
	serSQLite  = series{"Spool / SQLite", "#16a34a"}
	serRiver   = series{"River (tuned fetch)", "#ea580c"}
	serRiverDf = series{"River (defaults)", "#a8a29e"}
)

type bar struct {
	series
	s benchstat.Spread
}

type group struct {
	label       string
	bars        []bar
	target      float64 // 0 = none
	targetLabel string
}

type panel struct {
	title, unit string
	log         bool
	groups      []group
}

const (
	svgWidth   = 960
	labelWidth = 250
	plotLeft   = labelWidth + 10
	plotWidth  = svgWidth - plotLeft - 90
	barHeight  = 14
	barGap     = 3
	groupGap   = 16
)

type svgDoc struct{ b strings.Builder }

func (d *svgDoc) rect(x, y, w, h float64, fill string) {
	fmt.Fprintf(&d.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y, max(w, 0), h, fill)
}

func (d *svgDoc) line(x1, y1, x2, y2 float64, stroke string, width float64, dash string) {
	extra := ""
	if dash != "" {
		extra = fmt.Sprintf(` stroke-dasharray="%s"`, dash)
	}
	fmt.Fprintf(&d.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"%s/>`+"\n", x1, y1, x2, y2, stroke, width, extra)
}

func (d *svgDoc) text(x, y float64, s, anchor string, size int, weight string) {
	fmt.Fprintf(&d.b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" font-weight="%s">%s</text>`+"\n", x, y, anchor, size, weight, html.EscapeString(s))
}

// scale maps a value to an x offset within the plot.
type scale struct {
	log      bool
	lo, hi   float64
	ticks    []float64
	tickText func(float64) string
}

func (s scale) x(v float64) float64 {
	if s.log {
		v = math.Max(v, s.lo)
		return plotLeft + plotWidth*(math.Log10(v)-math.Log10(s.lo))/(math.Log10(s.hi)-math.Log10(s.lo))
	}
	return plotLeft + plotWidth*(v-s.lo)/(s.hi-s.lo)
}

func newScale(p panel) scale {
	top := 0.0
	for _, g := range p.groups {
		top = math.Max(top, g.target)
		for _, b := range g.bars {
			if !math.IsNaN(b.s.Max) {
				top = math.Max(top, b.s.Max)
			}
		}
	}
	if top <= 0 {
		top = 1
	}
	if p.log {
		s := scale{log: true, lo: 0.1, hi: math.Pow(10, math.Ceil(math.Log10(top*1.05)))}
		for v := s.lo; v <= s.hi*1.0001; v *= 10 {
			s.ticks = append(s.ticks, v)
		}
		s.tickText = func(v float64) string { return trimNum(v) + " " + p.unit }
		return s
	}
	step := niceStep(top * 1.1 / 6)
	s := scale{lo: 0, hi: math.Ceil(top*1.1/step) * step}
	for v := 0.0; v <= s.hi+step/2; v += step {
		s.ticks = append(s.ticks, v)
	}
	s.tickText = func(v float64) string {
		if v >= 1000 {
			return trimNum(v/1000) + "k"
		}
		return trimNum(v)
	}
	return s
}

func niceStep(raw float64) float64 {
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

func trimNum(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	return strings.TrimSuffix(s, ".0")
}

// draw renders p from y and returns the y below it.
func (d *svgDoc) draw(p panel, y float64) float64 {
	d.text(10, y+16, p.title, "start", 15, "bold")
	y += 30
	sc := newScale(p)
	height := 0.0
	for _, g := range p.groups {
		height += float64(len(g.bars))*(barHeight+barGap) + groupGap
	}
	// Grid and ticks.
	for _, t := range sc.ticks {
		x := sc.x(t)
		d.line(x, y, x, y+height, "#e5e7eb", 1, "")
		d.text(x, y+height+14, sc.tickText(t), "middle", 11, "normal")
	}
	gy := y
	for _, g := range p.groups {
		gh := float64(len(g.bars)) * (barHeight + barGap)
		d.text(labelWidth, gy+gh/2+4, g.label, "end", 12, "bold")
		for i, b := range g.bars {
			by := gy + float64(i)*(barHeight+barGap)
			if math.IsNaN(b.s.Median) {
				continue
			}
			x0 := sc.x(sc.lo)
			d.rect(x0, by, sc.x(b.s.Median)-x0, barHeight, b.color)
			mid := by + barHeight/2
			d.line(sc.x(b.s.Min), mid, sc.x(b.s.Max), mid, "#111827", 1.2, "")
			d.line(sc.x(b.s.Min), mid-4, sc.x(b.s.Min), mid+4, "#111827", 1.2, "")
			d.line(sc.x(b.s.Max), mid-4, sc.x(b.s.Max), mid+4, "#111827", 1.2, "")
			label := trimNum(b.s.Median)
			if b.s.Median >= 100 {
				label = fmt.Sprintf("%.0f", b.s.Median)
			}
			if p.log {
				label = fmt.Sprintf("%.2f %s", b.s.Median, p.unit)
			}
			d.text(sc.x(b.s.Max)+5, mid+4, label, "start", 11, "normal")
		}
		if g.target > 0 {
			x := sc.x(g.target)
			d.line(x, gy-3, x, gy+gh, "#dc2626", 1.5, "5,3")
			d.text(x+3, gy+gh+9, g.targetLabel, "start", 10, "normal")
		}
		gy += gh + groupGap
	}
	return y + height + 30
}

func (d *svgDoc) legend(y float64, ss []series) float64 {
	x := 10.0
	for _, s := range ss {
		d.rect(x, y, 14, 14, s.color)
		d.text(x+20, y+12, s.name, "start", 12, "normal")
		x += 30 + 7.5*float64(len(s.name))
	}
	d.text(10, y+32, "bars: median; whiskers: range over the runs; red dashes: the issue's target", "start", 11, "normal")
	return y + 44
}

// svg draws throughput and latency from the summary.
func (r *results) svg() []byte {
	get := func(k string) benchstat.Spread {
		if s, ok := r.Summary[k]; ok {
			return s
		}
		return benchstat.Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	riverDrain, riverInsert := get("river.drain"), get("river.insert")
	thr := panel{title: "Throughput (tasks/s, higher is better)", unit: "/s", groups: []group{
		{label: "Drain, HTTP POST per task", bars: []bar{
			{serPG, get("postgres.drain")}, {serSQLite, get("sqlite.drain")},
			{serRiver, riverDrain}, {serRiverDf, get("river.drain_default")},
		}, target: 1.5 * riverDrain.Median, targetLabel: "1.5× River"},
		{label: "Single-task enqueue, many clients", bars: []bar{
			{serPG, get("postgres.single_enqueue")}, {serSQLite, get("sqlite.single_enqueue")},
			{serRiver, riverInsert},
		}, target: 2 * riverInsert.Median, targetLabel: "2× River"},
		{label: "Batched enqueue", bars: []bar{
			{serPG, get("postgres.batch_enqueue")}, {serSQLite, get("sqlite.batch_enqueue")},
			{serRiver, get("river.batch_insert")},
		}, target: 10000, targetLabel: "10k/s"},
	}}
	lat := panel{title: fmt.Sprintf("Enqueue→delivery latency at %g tasks/s (ms, log scale, lower is better)", r.Params.LatencyRate), unit: "ms", log: true}
	for _, q := range []string{"p50", "p95", "p99", "max"} {
		g := group{label: q, bars: []bar{{serPG, get("postgres.latency_" + q)}, {serSQLite, get("sqlite.latency_" + q)}}}
		if q == "p99" {
			g.target, g.targetLabel = 10, "10 ms"
		}
		lat.groups = append(lat.groups, g)
	}

	var d svgDoc
	body := func() float64 {
		y := 10.0
		y = d.legend(y, []series{serPG, serSQLite, serRiver, serRiverDf})
		y = d.draw(thr, y)
		y = d.draw(lat, y)
		note := fmt.Sprintf("%d runs, %s, %d cores; 1-minute load average at the start of each system's turn %s", len(r.Runs), r.Machine.CPU, r.Machine.Cores, loadRange(r.Runs))
		d.text(10, y, note, "start", 11, "normal")
		return y + 10
	}
	h := body()
	out := fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%.0f" viewBox="0 0 %d %.0f" font-family="sans-serif">`+"\n"+
		`<rect width="100%%" height="100%%" fill="white"/>`+"\n", svgWidth, h, svgWidth, h)
	return []byte(out + d.b.String() + "</svg>\n")
}

func loadRange(runs []runResult) string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range runs {
		vs := r.LoadAtStart
		if len(vs) == 0 {
			vs = []float64{r.LoadBefore, r.LoadAfter}
		}
		for _, v := range vs {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 0) {
		return "unknown"
	}
	return fmt.Sprintf("%.2f–%.2f", lo, hi)
}
