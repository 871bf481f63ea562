package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// spanExporter sends batches of finished spans (otlpHTTPExporter).
type spanExporter interface {
	ExportSpans(ctx context.Context, spans []*spanData) error
	Shutdown(ctx context.Context) error
}

// batchConfig is the batch span processor's configuration
// (OTEL_BSP_*), with the specification's defaults.
type batchConfig struct {
	queueSize     int // spans buffered; beyond it new spans are dropped
	batchSize     int // spans per export at most
	delayMillis   int // longest wait before a partial batch goes
	timeoutMillis int // for one export
}

var defaultBatchConfig = batchConfig{queueSize: 2048, batchSize: 512, delayMillis: 5000, timeoutMillis: 30000}

// batchProcessor buffers ended spans and exports them from its own
// goroutine, in batches of batchSize or after delay, so that a slow or
// absent receiver never delays a request or a delivery: when the queue is
// full a span is dropped (and counted in the log), never waited for.
type batchProcessor struct {
	exp   spanExporter
	log   *slog.Logger
	cfg   batchConfig
	queue chan *spanData

	dropped    atomic.Int64
	lastReport time.Time // of dropped spans; only the worker goroutine uses it
	stopped    atomic.Bool
	stop       chan struct{} // closed by shutdown
	done       chan struct{} // closed once the last batch is exported
	stopOnce   sync.Once
}

func newBatchProcessor(exp spanExporter, cfg batchConfig, log *slog.Logger) *batchProcessor {
	b := &batchProcessor{
		exp: exp, log: log, cfg: cfg,
		queue: make(chan *spanData, cfg.queueSize),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go b.run()
	return b
}

// onEnd queues a sampled span for export, without ever blocking.
func (b *batchProcessor) onEnd(s *spanData) {
	if !s.sc.IsSampled() || b.stopped.Load() {
		return
	}
	select {
	case b.queue <- s:
	default:
		b.dropped.Add(1)
	}
}

func (b *batchProcessor) run() {
	defer close(b.done)
	delay := time.Duration(b.cfg.delayMillis) * time.Millisecond
	timer := time.NewTimer(delay)
	defer timer.Stop()
	batch := make([]*spanData, 0, b.cfg.batchSize)
	export := func() {
		if len(batch) > 0 {
			b.export(batch)
			clear(batch) // let the spans go
			batch = batch[:0]
		}
		timer.Reset(delay)
		if time.Since(b.lastReport) >= delay {
			b.reportDropped()
		}
	}
	for {
		select {
		case s := <-b.queue:
			if batch = append(batch, s); len(batch) >= b.cfg.batchSize {
				export()
			}
		case <-timer.C:
			export()
		case <-b.stop:
			// What was queued before shutdown, then the end.
			for {
				select {
				case s := <-b.queue:
					if batch = append(batch, s); len(batch) >= b.cfg.batchSize {
						export()
					}
				default:
					export()
					b.reportDropped()
					return
				}
			}
		}
	}
}

// export sends one batch; a failure is logged (the exporter has already
// retried what is worth retrying) and the batch is not kept.
func (b *batchProcessor) export(batch []*spanData) {
	ctx, cancel := context.WithTimeoutCause(context.Background(),
		time.Duration(b.cfg.timeoutMillis)*time.Millisecond, errors.New("OTEL_BSP_EXPORT_TIMEOUT reached"))
	defer cancel()
	if err := b.exp.ExportSpans(ctx, batch); err != nil {
		b.warn(err.Error())
	}
}

// reportDropped logs the spans dropped since the last report; the worker
// calls it at most once per schedule delay, so an overload logs a line
// every few seconds, not one per span.
func (b *batchProcessor) reportDropped() {
	if n := b.dropped.Swap(0); n > 0 {
		b.lastReport = time.Now()
		b.warn(fmt.Sprintf("%d spans dropped: the span queue (OTEL_BSP_MAX_QUEUE_SIZE=%d) was full", n, b.cfg.queueSize))
	}
}

// warn logs a tracing problem as the official SDK's error handler did in
// Spool: at warn, with the message "opentelemetry".
func (b *batchProcessor) warn(msg string) {
	if b.log != nil {
		b.log.Warn("opentelemetry", "error.message", msg)
	}
}

// shutdown exports what is queued and shuts the exporter down, giving up
// (and abandoning the export in flight) when ctx ends. Spans ended later
// are dropped.
func (b *batchProcessor) shutdown(ctx context.Context) error {
	var err error // nil on a second call, as the SDK's
	b.stopOnce.Do(func() {
		b.stopped.Store(true)
		close(b.stop)
		select {
		case <-b.done:
			err = b.exp.Shutdown(ctx)
		case <-ctx.Done():
			err = context.Cause(ctx)
			_ = b.exp.Shutdown(ctx) // abandons the export in flight
		}
	})
	return err
}
