package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Errors an AsyncWriter's Write returns for a line it did not queue. slog
// discards a handler's error, so these matter only to direct callers.
var (
	ErrLogDropped = errors.New("log line dropped: queue full")
	ErrLogClosed  = errors.New("log writer closed")
)

// AsyncOptions configures an AsyncWriter. Zero values take the defaults.
type AsyncOptions struct {
	// QueueLines bounds the lines waiting to be written; default 8192.
	QueueLines int
	// ReportEvery is the least time between two drop reports; default 10s.
	ReportEvery time.Duration
	// OnDrop is called with the number of lines just lost (dropped for lack
	// of room, written after Close, or refused by the underlying writer).
	// It runs on the logging goroutine or the writer goroutine: it must be
	// safe for concurrent use, cheap, and must not log.
	OnDrop func(n int)
	// OnReport is called on the writer goroutine, at most once per
	// ReportEvery and at Flush and Close, when lines were dropped since the
	// last report: n since then, total since start. It may write to the
	// underlying writer (nothing else does at that moment).
	OnReport func(n, total uint64)
	// CloseTimeout bounds Close's wait for queued lines; default 5s.
	CloseTimeout time.Duration
}

// AsyncWriter is an io.Writer that never blocks: each Write copies its line
// into a bounded queue that one goroutine drains to the underlying writer.
// When the queue is full the line is dropped and counted, so a slow or
// stuck stdout (a full pipe, a paused container log driver) costs log lines,
// never a request or a delivery — the job aiologger does in the guide.
//
// One Write is one line: slog's JSON handler writes each record with a
// single call under its own lock, so lines keep their order.
type AsyncWriter struct {
	w     io.Writer
	o     AsyncOptions
	queue chan asyncItem
	pool  sync.Pool // *[]byte line buffers

	dropped  atomic.Uint64
	reported uint64 // writer goroutine only
	closed   atomic.Bool

	closeOnce sync.Once
	closeErr  error
	stop      chan struct{} // closed by Close after the final flush
	exited    chan struct{} // closed when the writer goroutine returns
}

// asyncItem is a line to write, or (flush non-nil) a marker closed once
// every line queued before it has been written.
type asyncItem struct {
	line  *[]byte
	flush chan struct{}
}

// maxPooledLine: buffers that grew past this are not kept, so one huge
// line (a stack trace) does not pin its memory forever.
const maxPooledLine = 64 << 10

// NewAsyncWriter starts the writer goroutine; Close stops it.
func NewAsyncWriter(w io.Writer, o AsyncOptions) *AsyncWriter {
	if o.QueueLines <= 0 {
		o.QueueLines = 8192
	}
	if o.ReportEvery <= 0 {
		o.ReportEvery = 10 * time.Second
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 5 * time.Second
	}
	a := &AsyncWriter{
		w: w, o: o,
		queue:  make(chan asyncItem, o.QueueLines),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	a.pool.New = func() any { b := make([]byte, 0, 512); return &b }
	go a.run()
	return a
}

// Write queues a copy of p, or drops it when the queue is full. It never
// blocks on the underlying writer.
func (a *AsyncWriter) Write(p []byte) (int, error) {
	if a.closed.Load() {
		a.drop(1)
		return 0, ErrLogClosed
	}
	bp := a.pool.Get().(*[]byte)
	*bp = append((*bp)[:0], p...)
	select {
	case a.queue <- asyncItem{line: bp}:
		return len(p), nil
	default:
		a.release(bp)
		a.drop(1)
		return 0, ErrLogDropped
	}
}

// Dropped returns the number of lines lost since start.
func (a *AsyncWriter) Dropped() uint64 { return a.dropped.Load() }

// Flush waits until every line queued before the call has been written, or
// ctx ends. Pending drops are reported first.
func (a *AsyncWriter) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case a.queue <- asyncItem{flush: done}:
	case <-a.exited:
		return ErrLogClosed
	case <-ctx.Done():
		return fmt.Errorf("flush log: %w", ctx.Err())
	}
	select {
	case <-done:
		return nil
	case <-a.exited:
		return ErrLogClosed
	case <-ctx.Done():
		return fmt.Errorf("flush log: %w", ctx.Err())
	}
}

// Close refuses further lines (they count as dropped), writes the queued
// ones (waiting at most CloseTimeout, in case stdout is stuck) and stops the
// writer goroutine. Call it last at exit, after the final log line. It is
// safe to call more than once.
func (a *AsyncWriter) Close() error {
	a.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), a.o.CloseTimeout)
		defer cancel()
		// Flush before refusing writes: lines logged by other goroutines
		// while Close runs still go out in order.
		a.closeErr = a.Flush(ctx)
		a.closed.Store(true)
		close(a.stop)
		if a.closeErr == nil {
			select {
			case <-a.exited:
			case <-ctx.Done():
				a.closeErr = fmt.Errorf("close log: %w", ctx.Err())
			}
		}
	})
	return a.closeErr
}

func (a *AsyncWriter) run() {
	defer close(a.exited)
	tick := time.NewTicker(a.o.ReportEvery)
	defer tick.Stop()
	for {
		select {
		case it := <-a.queue:
			a.handle(it)
		case <-tick.C:
			a.report()
		case <-a.stop:
			// Lines that raced with Close are written, not lost.
			for {
				select {
				case it := <-a.queue:
					a.handle(it)
				default:
					a.report()
					return
				}
			}
		}
	}
}

func (a *AsyncWriter) handle(it asyncItem) {
	if it.flush != nil {
		a.report()
		close(it.flush)
		return
	}
	if _, err := a.w.Write(*it.line); err != nil {
		// Nowhere to say so but the counter: the writer is the log.
		a.drop(1)
	}
	a.release(it.line)
}

func (a *AsyncWriter) release(bp *[]byte) {
	if cap(*bp) <= maxPooledLine {
		a.pool.Put(bp)
	}
}

func (a *AsyncWriter) drop(n int) {
	a.dropped.Add(uint64(n))
	if a.o.OnDrop != nil {
		a.o.OnDrop(n)
	}
}

// report tells OnReport about drops since the last report.
func (a *AsyncWriter) report() {
	total := a.dropped.Load()
	if total == a.reported {
		return
	}
	n := total - a.reported
	a.reported = total
	if a.o.OnReport != nil {
		a.o.OnReport(n, total)
	}
}

func formatDropped(n uint64) string {
	if n == 1 {
		return "1 log line dropped"
	}
	return fmt.Sprintf("%d log lines dropped", n)
}
