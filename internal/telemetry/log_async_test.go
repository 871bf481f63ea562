package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/telemetry"
)

// lockedBuffer is a bytes.Buffer safe to read while the writer goroutine
// appends; delay slows each Write down, gate (when non-nil) holds every
// Write until it is closed.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	delay  time.Duration
	gate   chan struct{}
	writes atomic.Int64
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	if l.gate != nil {
		<-l.gate
	}
	if l.delay > 0 {
		time.Sleep(l.delay)
	}
	l.writes.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// blockedWriter never returns from Write until the test ends, like a stdout
// pipe nobody reads.
func blockedWriter(t *testing.T) *lockedBuffer {
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	return &lockedBuffer{gate: gate}
}

// within fails the test if f has not returned after d, without waiting for
// it: a regression that blocks must fail fast, not hang the suite.
func within(t *testing.T, d time.Duration, what string, f func()) time.Duration {
	t.Helper()
	done := make(chan time.Duration, 1)
	go func() { start := time.Now(); f(); done <- time.Since(start) }()
	select {
	case took := <-done:
		return took
	case <-time.After(d):
		t.Fatalf("%s still running after %s: the caller is blocked", what, d)
		return 0
	}
}

func seqs(t *testing.T, out, msg string) []int64 {
	t.Helper()
	var got []int64
	if out == "" {
		return nil
	}
	for _, m := range decodeLines(t, out) {
		if m["message"] != msg {
			continue
		}
		n, err := m["seq"].(json.Number).Int64()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	return got
}

// TestAsyncBlockedWriterDoesNotBlock: with stdout stuck, 10,000 log calls
// return at once; every line that did not fit is counted and OnDrop hears
// of each.
func TestAsyncBlockedWriterDoesNotBlock(t *testing.T) {
	t.Parallel()
	w := blockedWriter(t)
	var onDrop atomic.Int64
	log, aw := telemetry.NewAsyncLogger(w, telemetry.Options{
		Service: "spool", QueueLines: 64, CloseTimeout: 50 * time.Millisecond,
		OnDrop: func(n int) { onDrop.Add(int64(n)) },
	})
	const calls = 10000
	took := within(t, 10*time.Second, "10,000 log calls", func() {
		for i := range calls {
			log.Info("request", "seq", i, "spool.queue", "default")
		}
	})
	// ~1µs each in practice; the bound only has to tell "never waited"
	// from "waited on the writer", which would be forever.
	if took > 3*time.Second {
		t.Errorf("10,000 calls took %s", took)
	}
	// 64 queued plus at most one taken by the stuck writer goroutine.
	if d := aw.Dropped(); d < calls-65 || d > calls {
		t.Errorf("Dropped() = %d, want between %d and %d", d, calls-65, calls)
	}
	if got := onDrop.Load(); uint64(got) != aw.Dropped() {
		t.Errorf("OnDrop counted %d, Dropped() = %d", got, aw.Dropped())
	}
	// Close gives up after CloseTimeout rather than hang the exit.
	var err error
	within(t, 5*time.Second, "Close on a stuck writer", func() { err = aw.Close() })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close on a stuck writer: %v, want a deadline error", err)
	}
}

// TestAsyncOrderAndFlush: lines that are not dropped come out whole and in
// order, per goroutine, and Flush returns only once they are all written.
func TestAsyncOrderAndFlush(t *testing.T) {
	t.Parallel()
	w := &lockedBuffer{delay: 20 * time.Microsecond}
	log, aw := telemetry.NewAsyncLogger(w, telemetry.Options{Service: "spool", QueueLines: 32})
	defer aw.Close()
	const goroutines, per = 4, 1000
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := log.With("g", g)
			for i := range per {
				l.Info("line", "seq", i)
			}
		}()
	}
	wg.Wait()
	within(t, 10*time.Second, "Flush", func() {
		if err := aw.Flush(context.Background()); err != nil {
			t.Errorf("Flush: %v", err)
		}
	})
	// Everything queued before Flush is out: no write happens afterwards
	// unless something new is logged.
	writes := w.writes.Load()
	out := w.String()
	lines := decodeLines(t, out)
	last := make(map[string]int64)
	kept := 0
	for _, m := range lines {
		if m["message"] != "line" {
			continue
		}
		kept++
		g := m["g"].(json.Number).String()
		n, _ := m["seq"].(json.Number).Int64()
		if prev, ok := last[g]; ok && n <= prev {
			t.Fatalf("goroutine %s: seq %d after %d: order lost", g, n, prev)
		}
		last[g] = n
	}
	if uint64(kept)+aw.Dropped() != goroutines*per {
		t.Errorf("written %d + dropped %d != %d logged", kept, aw.Dropped(), goroutines*per)
	}
	if aw.Dropped() > 0 && !strings.Contains(out, "log lines dropped") && !strings.Contains(out, "log line dropped") {
		t.Errorf("%d lines dropped but Flush reported nothing", aw.Dropped())
	}
	time.Sleep(20 * time.Millisecond)
	if w.writes.Load() != writes {
		t.Errorf("writes went on after Flush returned: %d then %d", writes, w.writes.Load())
	}
}

// TestAsyncNoDropWhenRoom: with a queue that fits the burst, nothing is
// dropped, order is exact and Close writes the tail.
func TestAsyncNoDropWhenRoom(t *testing.T) {
	t.Parallel()
	w := &lockedBuffer{delay: 10 * time.Microsecond}
	log, aw := telemetry.NewAsyncLogger(w, telemetry.Options{Service: "spool", QueueLines: 3000})
	for i := range 2000 {
		log.Info("line", "seq", i)
	}
	if err := aw.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := seqs(t, w.String(), "line")
	if len(got) != 2000 || aw.Dropped() != 0 {
		t.Fatalf("wrote %d lines, dropped %d; want 2000 and 0", len(got), aw.Dropped())
	}
	for i, n := range got {
		if n != int64(i) {
			t.Fatalf("line %d has seq %d", i, n)
		}
	}
	// After Close nothing more is queued: the line is counted, not lost
	// silently, and the call still returns at once.
	log.Info("late")
	if aw.Dropped() != 1 || strings.Contains(w.String(), "late") {
		t.Errorf("a line after Close: Dropped()=%d, written=%v", aw.Dropped(), strings.Contains(w.String(), "late"))
	}
	if err := aw.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := aw.Flush(context.Background()); !errors.Is(err, telemetry.ErrLogClosed) {
		t.Errorf("Flush after Close: %v, want ErrLogClosed", err)
	}
}

// TestAsyncDropReport: one warning per interval while drops grow, none
// while they do not, each an ECS line with the count.
func TestAsyncDropReport(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	w := &lockedBuffer{gate: gate}
	log, aw := telemetry.NewAsyncLogger(w, telemetry.Options{
		Service: "spool", Version: "dev", QueueLines: 8, ReportEvery: 30 * time.Millisecond,
	})
	defer aw.Close()
	for i := range 100 {
		log.Info("line", "seq", i)
	}
	dropped := aw.Dropped()
	if dropped < 100-9 {
		t.Fatalf("Dropped() = %d, want at least 91", dropped)
	}
	close(gate) // stdout unsticks
	reports := func() []map[string]any {
		var r []map[string]any
		out := w.String()
		if out == "" {
			return nil
		}
		for _, m := range decodeLines(t, out) {
			if strings.HasSuffix(m["message"].(string), "dropped") {
				r = append(r, m)
			}
		}
		return r
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(reports()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // five more intervals with no new drops
	r := reports()
	if len(r) != 1 {
		t.Fatalf("got %d drop reports, want exactly 1:\n%s", len(r), w.String())
	}
	m := r[0]
	n, _ := m["spool.log.dropped"].(json.Number).Int64()
	if uint64(n) != dropped || m["log.level"] != "warn" || m["service.name"] != "spool" || m["event.dataset"] != "spool.log" {
		t.Errorf("report line %v: want warn, spool.log.dropped=%d and the ECS base fields", m, dropped)
	}
	if want := strings.TrimSpace(jsonNumberString(n)) + " log lines dropped"; m["message"] != want {
		t.Errorf("message %q, want %q", m["message"], want)
	}
	// The lines that were kept come out in the order they were logged
	// (not necessarily contiguous: the writer may free a slot mid-burst).
	kept := seqs(t, w.String(), "line")
	if len(kept) == 0 || kept[0] != 0 || uint64(len(kept))+dropped != 100 {
		t.Errorf("kept %v with %d dropped, want 100 in all, starting at 0", kept, dropped)
	}
	for i := 1; i < len(kept); i++ {
		if kept[i] <= kept[i-1] {
			t.Fatalf("kept lines out of order: %v", kept)
		}
	}
}

func jsonNumberString(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestAsyncOnDropFeedsMetric wires OnDrop to the Prometheus counter the
// service exports, as serve does.
func TestAsyncOnDropFeedsMetric(t *testing.T) {
	t.Parallel()
	m := telemetry.NewMetrics("dev", "none")
	log, aw := telemetry.NewAsyncLogger(blockedWriter(t), telemetry.Options{
		QueueLines: 4, CloseTimeout: 10 * time.Millisecond,
		OnDrop: func(n int) { m.LogDropped.Add(float64(n)) },
	})
	defer aw.Close()
	for i := range 50 {
		log.Info("x", "seq", i)
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64 = -1
	for _, mf := range mfs {
		if mf.GetName() == "spool_log_lines_dropped_total" {
			got = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != float64(aw.Dropped()) || got < 45 {
		t.Errorf("spool_log_lines_dropped_total = %v, Dropped() = %d", got, aw.Dropped())
	}
}

// TestAsyncWriteErrorsCount: a writer that fails loses the line; that is a
// drop too.
func TestAsyncWriteErrorsCount(t *testing.T) {
	t.Parallel()
	aw := telemetry.NewAsyncWriter(failWriter{}, telemetry.AsyncOptions{})
	for range 3 {
		if _, err := aw.Write([]byte("x\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	if aw.Dropped() != 3 {
		t.Errorf("Dropped() = %d, want 3", aw.Dropped())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func BenchmarkAsyncLoggerInfo(b *testing.B) {
	log, aw := telemetry.NewAsyncLogger(discard{}, telemetry.Options{Service: "spool"})
	defer aw.Close()
	b.ReportAllocs()
	for b.Loop() {
		log.Info("http request", "http.request.method", "POST", "url.path", "/v1/tasks",
			"http.response.status_code", 201, "spool.task.id", "0192d0a4-7c1e-7a3b-9f00-3d2e1c0b5a69")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestAsyncDropReportAtErrorLevel: the report says lines are missing, so
// it is written even when only errors are logged.
func TestAsyncDropReportAtErrorLevel(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	w := &lockedBuffer{gate: gate}
	log, aw := telemetry.NewAsyncLogger(w, telemetry.Options{Level: "error", Service: "spool", QueueLines: 2})
	for range 20 {
		log.Error("boom")
	}
	log.Warn("filtered out")
	close(gate)
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	out := w.String()
	if !strings.Contains(out, "log lines dropped") || strings.Contains(out, "filtered out") {
		t.Errorf("want the drop report and no warn line at level error:\n%s", out)
	}
}
