package ui

import (
	"context"
	"fmt"
	"html/template"
	"strings"
	"time"
)

// Minute is one minute of a queue's finished tasks.
type Minute struct {
	Start     time.Time
	Succeeded int64
	Failed    int64
}

// series is the last hour's finished tasks by queue, a minute per slot.
type series struct {
	byQueue map[string][]Minute
	ok      bool
}

// throughput reads the last hour from Config.Throughput; without one the
// overview shows no chart.
func (s *Server) throughput(ctx context.Context) (series, error) {
	if s.cfg.Throughput == nil {
		return series{}, nil
	}
	m, err := s.cfg.Throughput(ctx, time.Hour)
	if err != nil {
		return series{}, fmt.Errorf("throughput: %w", err)
	}
	return series{byQueue: m, ok: true}, nil
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
	var peak int64 = 1
	for _, m := range ms {
		c.Finished += m.Succeeded + m.Failed
		c.Failed += m.Failed
		peak = max(peak, m.Succeeded+m.Failed)
	}
	const w, h, slots = 120, 28, 60
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
