package ui

import (
	"context"
	"fmt"
	"html/template"
	"strings"
	"sync"
	"time"

	"github.com/spoolhq/spool/internal/store"
)

// Minute is one minute of a queue's finished tasks.
type Minute struct {
	Succeeded int64
	Failed    int64
}

// chartSlots is the chart's span: the last hour, a minute per slot.
const chartSlots = 60

// chartTTL is how long one reading of the last hour serves every page. A
// reading costs the hour's finished tasks (an index range: about 200 ms for
// 100,000 on PostgreSQL), so no page waits for one: a page renders with the
// reading at hand and, when it is older than chartTTL, starts the next one
// in the background (one at a time), which the next refresh shows.
const chartTTL = 15 * time.Second

// chartReadTimeout bounds one background reading.
const chartReadTimeout = 10 * time.Second

// series is the last hour's finished tasks by queue, oldest minute first.
type series struct {
	byQueue map[string][]Minute
	ok      bool
}

// throughputCache holds the last reading of Store.FinishedPerMinute.
type throughputCache struct {
	mu      sync.Mutex
	at      time.Time // when val was read
	val     series
	reading bool // a background reading is running
}

// throughput returns the last reading of the hour by queue (ok false
// before the first one is done), starting a new reading if it is stale.
func (s *Server) throughput() series {
	c := &s.tp
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.cfg.Now()
	if !c.reading && (!c.val.ok || now.Sub(c.at) >= chartTTL || now.Before(c.at)) {
		c.reading = true
		go s.readThroughput()
	}
	return c.val
}

func (s *Server) readThroughput() {
	ctx, cancel := context.WithTimeout(context.Background(), chartReadTimeout)
	defer cancel()
	rows, err := s.cfg.Store.FinishedPerMinute(ctx, store.MaxFinishedWindow)
	now := s.cfg.Now()
	c := &s.tp
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	if err != nil {
		// The overview keeps the previous chart (or none); the next page
		// view tries again once chartTTL has passed.
		c.at = now
		s.log.Warn("dashboard: reading the throughput chart", "error.message", err.Error())
		return
	}
	c.val, c.at = bucket(rows, now), now
}

// bucket places each row in its slot of the hour ending at now's minute.
func bucket(rows []store.FinishedMinute, now time.Time) series {
	last := now.UTC().Truncate(time.Minute)
	sr := series{byQueue: map[string][]Minute{}, ok: true}
	for _, r := range rows {
		i := chartSlots - 1 - int(last.Sub(r.Minute)/time.Minute)
		if i < 0 || i >= chartSlots {
			continue // a minute outside the hour (clocks apart)
		}
		ms := sr.byQueue[r.Queue]
		if ms == nil {
			ms = make([]Minute, chartSlots)
			sr.byQueue[r.Queue] = ms
		}
		ms[i].Succeeded += r.Succeeded
		ms[i].Failed += r.Failed
	}
	return sr
}

// chart is a queue's throughput and failure rate over the last hour as an
// inline SVG drawn on the server (no script, no chart library).
type chart struct {
	SVG       template.HTML
	Finished  int64
	Failed    int64
	Available bool
}

func (sr series) chart(queue string) chart {
	if !sr.ok {
		return chart{}
	}
	ms := sr.byQueue[queue]
	c := chart{Available: true}
	if ms == nil {
		ms = make([]Minute, chartSlots)
	}
	var peak int64 = 1
	for _, m := range ms {
		c.Finished += m.Succeeded + m.Failed
		c.Failed += m.Failed
		peak = max(peak, m.Succeeded+m.Failed)
	}
	const w, h, slots = 120, 28, chartSlots
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="spark" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%d finished, %d failed in the last hour">`,
		w, h, w, h, c.Finished, c.Failed)
	for i, m := range ms {
		if i >= slots {
			break
		}
		x := i * w / slots
		total := m.Succeeded + m.Failed
		th := int(total * h / peak)
		fh := int(m.Failed * h / peak)
		if th > 0 {
			fmt.Fprintf(&b, `<rect class="ok" x="%d" y="%d" width="2" height="%d"/>`, x, h-th, th-fh)
		}
		if fh > 0 {
			fmt.Fprintf(&b, `<rect class="bad" x="%d" y="%d" width="2" height="%d"/>`, x, h-fh, fh)
		}
	}
	b.WriteString(`</svg>`)
	c.SVG = template.HTML(b.String()) // built from numbers only
	return c
}

// FailureRate is the failed share of the hour's finished tasks.
func (c chart) FailureRate() float64 {
	if c.Finished == 0 {
		return 0
	}
	return float64(c.Failed) / float64(c.Finished)
}
