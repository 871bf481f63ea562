package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/internal/benchstat"
	"github.com/spoolhq/spool/internal/sink"
)

const benchUsage = `
Usage: spool bench [flags]

Measures a running Spool server. It enqueues --tasks tasks, one per request
or --batch per request, from --concurrency clients, flat out or at --rate
tasks per second, and reports the enqueue throughput.

By default the tasks are delivered to a receiver that bench runs itself on
127.0.0.1 (the code of 'spool sink', noting when each webhook-id arrives).
It then also reports the delivery throughput and the latency from the start
of each task's enqueue request to its arrival (p50, p95, p99, max). With
--target the tasks go to that URL instead, and only enqueue is measured.

The server must be allowed to deliver to that loopback receiver: start it
with SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8 (the SSRF guard refuses loopback
otherwise). If it signs deliveries, give bench the same SPOOL_SIGNING_KEYS
so the receiver verifies them, as a real receiver would.

--drain pauses the queue while enqueueing and resumes it once everything is
enqueued: the enqueue rate is then measured without deliveries competing
for the machine, and the delivery rate is that of draining a full queue
(timed from the resume; no latency is reported).

Examples:
  SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8 spool serve --http-addr 127.0.0.1:8000 &
  spool bench --tasks 10000 --concurrency 50
  spool bench --tasks 100000 --batch 100 --concurrency 4 --drain --output json
  spool bench --tasks 10000 --rate 1000
  spool bench --tasks 1000 --target https://staging.example.com/hook

Environment:
  SPOOL_SERVER        server URL (default ` + DefaultServer + `)
  SPOOL_API_KEY       API key sent as a bearer token
  SPOOL_SIGNING_KEYS  whsec_ keys the built-in receiver verifies (or _FILE)
`

// Bounds of bench's flags.
const (
	benchMaxTasks       = 10_000_000
	benchMaxBatch       = 1000 // the server's default batch limit
	benchMaxConcurrency = 10_000
)

type benchConfig struct {
	tasks       int
	batch       int
	concurrency int
	rate        float64 // tasks per second; 0 = flat out
	queue       string
	target      string // "" = the built-in receiver
	drain       bool
	wait        time.Duration
	sinkAddr    string
	progress    bool
}

// benchReport is what bench prints; --output json prints it as is.
type benchReport struct {
	Server      string  `json:"server"`
	Queue       string  `json:"queue"`
	Target      string  `json:"target"`
	Tasks       int     `json:"tasks"`
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate"` // requested tasks/s, 0 = flat out
	Drain       bool    `json:"drain"`

	Enqueue  enqueueReport   `json:"enqueue"`
	Delivery *deliveryReport `json:"delivery"` // null with --target
}

type enqueueReport struct {
	Tasks     int     `json:"tasks"`    // accepted by the server
	Requests  int     `json:"requests"` // answered 2xx
	Errors    int     `json:"errors"`   // failed requests
	Seconds   float64 `json:"seconds"`  // first request start to last answer
	PerSecond float64 `json:"per_second"`
	// RequestLatency is the round trip of each enqueue request.
	RequestLatency benchstat.Latency `json:"request_latency"`
}

type deliveryReport struct {
	Tasks      int   `json:"tasks"` // enqueued tasks that arrived
	Duplicates int64 `json:"duplicates"`
	// Seconds runs from the first enqueue request (the resume with
	// --drain) to the last arrival.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// Latency is arrival minus the start of the task's enqueue request;
	// null with --drain, where tasks wait for the resume.
	Latency *benchstat.Latency `json:"latency"`
}

// Bench implements `spool bench`.
func Bench(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	env = getenv(env)
	cmd := newCommand("bench", benchUsage)
	fs := cmd.fs
	var cf clientFlags
	cf.register(fs)
	var cfg benchConfig
	fs.IntVar(&cfg.tasks, "tasks", 1000, "how many tasks to enqueue")
	fs.IntVar(&cfg.batch, "batch", 1, fmt.Sprintf("tasks per enqueue request (1 uses the single-task form; at most %d)", benchMaxBatch))
	fs.IntVar(&cfg.concurrency, "concurrency", 10, "enqueue requests in flight")
	fs.Float64Var(&cfg.rate, "rate", 0, "enqueue at this many tasks per second (0: as fast as possible)")
	fs.StringVar(&cfg.queue, "queue", "bench", "queue to enqueue on")
	fs.StringVar(&cfg.target, "target", "", "deliver to this URL instead of the built-in receiver (delivery is then not measured)")
	fs.BoolVar(&cfg.drain, "drain", false, "pause the queue while enqueueing, then resume it and time the drain")
	fs.DurationVar(&cfg.wait, "wait", 30*time.Second, "give up when no delivery arrives for this long")
	fs.StringVar(&cfg.sinkAddr, "sink-addr", "127.0.0.1:0", "listen address of the built-in receiver")
	noProgress := fs.Bool("no-progress", false, "no progress bar (it is shown only when stderr is a terminal)")

	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg.progress = !*noProgress && isTerminal(stderr)
	// cf.client validates --output and fills --server and --api-key from
	// the environment; bench then builds its own client with a transport
	// sized for its concurrency.
	if _, err := cf.client("bench", env); err != nil {
		return err
	}
	// The default transport keeps two idle connections per host: with more
	// clients than that, every request would open a new connection and the
	// benchmark would measure TCP handshakes and TIME_WAIT.
	// Retries off: a load generator reports the server's refusals and
	// latency as they are, not hidden behind the client's backoff.
	c, err := client.New(cf.server, cf.apiKey, client.WithUserAgent("spool-bench"),
		client.WithRetryPolicy(client.RetryPolicy{MaxAttempts: 1}),
		client.WithHTTPClient(&http.Client{
			Timeout: client.DefaultTimeout,
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConns:        cfg.concurrency,
				MaxIdleConnsPerHost: cfg.concurrency,
				IdleConnTimeout:     90 * time.Second,
			},
		}))
	if err != nil {
		return usagef("bench: --server/SPOOL_SERVER: %s", strings.TrimPrefix(err.Error(), "client: "))
	}

	var rep *benchReport
	if cfg.target != "" {
		rep, err = runBench(ctx, c, cfg, nil, stderr)
	} else {
		keys, kerr := sinkKeys(env)
		if kerr != nil {
			return fmt.Errorf("bench: %w", kerr)
		}
		rep, err = runBenchWithSink(ctx, c, cfg, keys, stderr)
	}
	if rep != nil {
		rep.Server = cf.server
		if perr := printBench(stdout, cf.output, rep); perr != nil {
			return errors.Join(err, perr)
		}
	}
	return err
}

func (cfg *benchConfig) validate() error {
	switch {
	case cfg.tasks < 1 || cfg.tasks > benchMaxTasks:
		return usagef("bench: --tasks must be 1-%d, got %d", benchMaxTasks, cfg.tasks)
	case cfg.batch < 1 || cfg.batch > benchMaxBatch:
		return usagef("bench: --batch must be 1-%d, got %d", benchMaxBatch, cfg.batch)
	case cfg.concurrency < 1 || cfg.concurrency > benchMaxConcurrency:
		return usagef("bench: --concurrency must be 1-%d, got %d", benchMaxConcurrency, cfg.concurrency)
	case cfg.rate < 0 || cfg.rate != cfg.rate || cfg.rate > 1e7:
		return usagef("bench: --rate must be between 0 (flat out) and 10000000 tasks/s, got %v", cfg.rate)
	case strings.TrimSpace(cfg.queue) == "":
		return usagef("bench: --queue is empty")
	case cfg.wait <= 0:
		return usagef("bench: --wait must be above 0, got %s", cfg.wait)
	}
	if cfg.target != "" {
		if u, err := url.Parse(cfg.target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef("bench: --target must be an absolute http or https URL, got %q", cfg.target)
		}
	}
	if _, _, err := net.SplitHostPort(cfg.sinkAddr); err != nil {
		return usagef("bench: --sink-addr must be host:port, got %q", cfg.sinkAddr)
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal), where
// a progress bar helps rather than litters a log.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// runBenchWithSink runs the built-in receiver around runBench.
func runBenchWithSink(ctx context.Context, c *client.Client, cfg benchConfig, keys [][]byte, stderr io.Writer) (*benchReport, error) {
	snk := sink.New(sink.Config{Keys: keys})
	rec := benchstat.NewRecorder(snk)
	ln, err := net.Listen("tcp", cfg.sinkAddr)
	if err != nil {
		return nil, fmt.Errorf("bench: receiver: listen %s: %w", cfg.sinkAddr, err)
	}
	srv := &http.Server{
		Handler:           rec,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut) // only our own receiver; nothing to report
		<-served
	}()

	addr := ln.Addr().(*net.TCPAddr)
	host := addr.IP
	if host.IsUnspecified() {
		host = net.IPv4(127, 0, 0, 1) // listening everywhere: deliver over loopback
	}
	cfg.target = "http://" + net.JoinHostPort(host.String(), strconv.Itoa(addr.Port)) + "/bench"
	return runBench(ctx, c, cfg, &receiver{rec: rec, sink: snk}, stderr)
}

// receiver is the built-in receiver as runBench sees it.
type receiver struct {
	rec  *benchstat.Recorder
	sink *sink.Sink
}

// enqueued is one accepted request's tasks and when the request started.
type enqueued struct {
	ids   []string
	start time.Time
}

// runBench enqueues and, when rcv is set, waits for the deliveries. It
// returns a report whenever something was measured, with an error if the
// run was not complete.
func runBench(ctx context.Context, c *client.Client, cfg benchConfig, rcv *receiver, stderr io.Writer) (rep *benchReport, err error) {
	rep = &benchReport{
		Queue: cfg.queue, Target: cfg.target, Tasks: cfg.tasks, Batch: cfg.batch,
		Concurrency: cfg.concurrency, Rate: cfg.rate, Drain: cfg.drain,
	}
	if rcv != nil {
		rep.Target = "built-in receiver " + cfg.target
	}

	// A paused queue would never deliver; with --drain bench pauses it
	// itself and always resumes it, even when the run fails.
	resumed := true
	if cfg.drain {
		if _, err := c.PauseQueue(ctx, cfg.queue); err != nil {
			return nil, fmt.Errorf("bench: pause queue: %w", err)
		}
		resumed = false
		defer func() {
			if resumed {
				return
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if _, rerr := c.ResumeQueue(rctx, cfg.queue); rerr != nil {
				err = errors.Join(err, fmt.Errorf("bench: resume queue %s: %w", cfg.queue, rerr))
			}
		}()
	} else {
		q, err := c.GetQueue(ctx, cfg.queue)
		switch {
		case err == nil && q.Paused:
			return nil, fmt.Errorf("bench: queue %q is paused: resume it (spool queues resume %s) or use --drain", cfg.queue, cfg.queue)
		case err != nil && client.StatusOf(err) != http.StatusNotFound:
			return nil, fmt.Errorf("bench: %w", err)
		}
	}

	var bar *progressBar
	if cfg.progress {
		bar = startProgress(stderr, cfg.tasks, rcv)
		defer bar.stop()
	}

	start := time.Now()
	res, enqErr := enqueueAll(ctx, c, cfg, bar)
	enqEnd := time.Now()
	if res.firstStart.IsZero() {
		res.firstStart = start
	}
	rep.Enqueue = enqueueReport{
		Tasks:          res.tasks,
		Requests:       res.requests,
		Errors:         res.errors,
		Seconds:        seconds(res.lastEnd.Sub(res.firstStart)),
		RequestLatency: benchstat.Summarize(res.roundTrips),
	}
	if res.lastEnd.IsZero() {
		rep.Enqueue.Seconds = seconds(enqEnd.Sub(res.firstStart))
	}
	rep.Enqueue.PerSecond = perSecond(res.tasks, rep.Enqueue.Seconds)
	if enqErr != nil && res.tasks == 0 {
		return nil, enqErr // nothing measured worth printing
	}

	deliverFrom := res.firstStart
	if cfg.drain {
		deliverFrom = time.Now()
		if _, err := c.ResumeQueue(ctx, cfg.queue); err != nil {
			return rep, errors.Join(enqErr, fmt.Errorf("bench: resume queue: %w", err))
		}
		resumed = true
	}
	if rcv == nil {
		return rep, enqErr
	}
	if bar != nil {
		bar.delivering()
	}
	d, waitErr := awaitDeliveries(ctx, cfg, rcv, res.batches, deliverFrom)
	rep.Delivery = d
	return rep, errors.Join(enqErr, waitErr)
}

func seconds(d time.Duration) float64 { return d.Seconds() }

func perSecond(n int, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

// enqueueResult is what the enqueue phase measured.
type enqueueResult struct {
	tasks, requests, errors int
	firstStart, lastEnd     time.Time
	roundTrips              []time.Duration
	batches                 []enqueued
}

// enqueueAll sends cfg.tasks tasks from cfg.concurrency goroutines. With a
// rate, request j is released at start + j*batch/rate (open loop: a slow
// server makes requests queue up, it does not slow the schedule). A 4xx
// answer (other than 429) ends the run: every request would get it.
func enqueueAll(ctx context.Context, c *client.Client, cfg benchConfig, bar *progressBar) (enqueueResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct{ seq, n int }
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		t0 := time.Now()
		var interval time.Duration
		if cfg.rate > 0 {
			interval = time.Duration(float64(cfg.batch) / cfg.rate * float64(time.Second))
		}
		for j, seq := 0, 0; seq < cfg.tasks; j++ {
			if interval > 0 {
				if wait := time.Until(t0.Add(time.Duration(j) * interval)); wait > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(wait):
					}
				}
			}
			n := min(cfg.batch, cfg.tasks-seq)
			select {
			case <-ctx.Done():
				return
			case jobs <- job{seq: seq, n: n}:
			}
			seq += n
		}
	}()

	var (
		mu       sync.Mutex
		res      enqueueResult
		firstErr error
		wg       sync.WaitGroup
	)
	for range cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for jb := range jobs {
				reqs := make([]client.EnqueueRequest, jb.n)
				for i := range reqs {
					reqs[i] = client.EnqueueRequest{
						Target:  client.Target{URL: cfg.target},
						Payload: []byte(`{"seq":` + strconv.Itoa(jb.seq+i) + `}`),
					}
				}
				begin := time.Now()
				var ids []string
				var err error
				if cfg.batch == 1 {
					var t *client.Task
					t, _, err = c.Enqueue(ctx, cfg.queue, reqs[0])
					if err == nil {
						ids = []string{t.ID}
					}
				} else {
					var ts []client.Task
					ts, err = c.EnqueueBatch(ctx, cfg.queue, reqs)
					for _, t := range ts {
						ids = append(ids, t.ID)
					}
				}
				end := time.Now()
				mu.Lock()
				if res.firstStart.IsZero() || begin.Before(res.firstStart) {
					res.firstStart = begin
				}
				if err != nil {
					if ctx.Err() != nil { // cancelled: not the server's failure
						mu.Unlock()
						return
					}
					res.errors++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					if st := client.StatusOf(err); st >= 400 && st < 500 && st != http.StatusTooManyRequests {
						cancel(err)
						return
					}
					continue
				}
				res.requests++
				res.tasks += len(ids)
				if end.After(res.lastEnd) {
					res.lastEnd = end
				}
				res.roundTrips = append(res.roundTrips, end.Sub(begin))
				res.batches = append(res.batches, enqueued{ids: ids, start: begin})
				mu.Unlock()
				if bar != nil {
					bar.enqueued.Add(int64(len(ids)))
				}
			}
		}()
	}
	wg.Wait()

	if firstErr != nil {
		err := fmt.Errorf("bench: %d of %d enqueue requests failed; the first: %w", res.errors, res.errors+res.requests, firstErr)
		if client.StatusOf(firstErr) == http.StatusUnprocessableEntity && strings.Contains(firstErr.Error(), "target") {
			err = fmt.Errorf("%w (does the server allow the target? SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8 for the built-in receiver)", err)
		}
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("bench: %w", context.Cause(ctx))
	}
	return res, nil
}

// awaitDeliveries waits until every enqueued task has arrived, or until
// nothing has arrived for cfg.wait, and measures.
func awaitDeliveries(ctx context.Context, cfg benchConfig, rcv *receiver, batches []enqueued, from time.Time) (*deliveryReport, error) {
	type pending struct {
		id    string
		start time.Time
	}
	var todo []pending
	for _, b := range batches {
		for _, id := range b.ids {
			todo = append(todo, pending{id: id, start: b.start})
		}
	}
	total := len(todo)
	lats := make([]time.Duration, 0, total)
	var last time.Time
	lastProgress := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var err error
	for len(todo) > 0 {
		kept := todo[:0]
		for _, p := range todo {
			at, ok := rcv.rec.Received(p.id)
			if !ok {
				kept = append(kept, p)
				continue
			}
			lats = append(lats, at.Sub(p.start))
			if at.After(last) {
				last = at
			}
		}
		if len(kept) < len(todo) {
			lastProgress = time.Now()
		}
		todo = kept
		if len(todo) == 0 {
			break
		}
		if st := rcv.sink.Stats(); st.BadSignatures > 0 {
			err = fmt.Errorf("bench: %d deliveries failed signature verification: give bench the server's SPOOL_SIGNING_KEYS (or none)", st.BadSignatures)
			break
		}
		if time.Since(lastProgress) > cfg.wait {
			err = fmt.Errorf("bench: %d of %d tasks not delivered; nothing arrived for %s", len(todo), total, cfg.wait)
			break
		}
		select {
		case <-ctx.Done():
			err = fmt.Errorf("bench: waiting for deliveries: %w", context.Cause(ctx))
		case <-tick.C:
		}
		if err != nil {
			break
		}
	}
	d := &deliveryReport{Tasks: len(lats), Duplicates: rcv.rec.Duplicates()}
	if !last.IsZero() {
		d.Seconds = seconds(last.Sub(from))
		d.PerSecond = perSecond(d.Tasks, d.Seconds)
	}
	if !cfg.drain {
		l := benchstat.Summarize(lats)
		d.Latency = &l
	}
	return d, err
}

func printBench(w io.Writer, format string, r *benchReport) error {
	if format == "json" {
		return writeJSON(w, r)
	}
	mode := "flat out"
	if r.Rate > 0 {
		mode = fmt.Sprintf("at %g tasks/s", r.Rate)
	}
	if r.Drain {
		mode += ", drain"
	}
	fmt.Fprintf(w, "%d tasks to queue %s on %s (batch %d, concurrency %d, %s)\n", r.Tasks, r.Queue, r.Server, r.Batch, r.Concurrency, mode)
	fmt.Fprintf(w, "target: %s\n\n", r.Target)
	tw := newTable(w)
	e := r.Enqueue
	fmt.Fprintf(tw, "ENQUEUE\t%d tasks\t%.2fs\t%.0f tasks/s\t%d errors\trequest p50 %s p99 %s\n",
		e.Tasks, e.Seconds, e.PerSecond, e.Errors, fmtMS(e.RequestLatency.P50MS), fmtMS(e.RequestLatency.P99MS))
	if d := r.Delivery; d != nil {
		fmt.Fprintf(tw, "DELIVERY\t%d tasks\t%.2fs\t%.0f tasks/s\t%d duplicates\t\n", d.Tasks, d.Seconds, d.PerSecond, d.Duplicates)
		if l := d.Latency; l != nil && l.N > 0 {
			fmt.Fprintf(tw, "LATENCY\tp50 %s\tp95 %s\tp99 %s\tmax %s\t(enqueue request start to arrival)\n",
				fmtMS(l.P50MS), fmtMS(l.P95MS), fmtMS(l.P99MS), fmtMS(l.MaxMS))
		}
	}
	return tw.Flush()
}

func fmtMS(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0fms", v)
	}
	return fmt.Sprintf("%.1fms", v)
}

// progressBar redraws one line on a terminal every 100ms: a small \r bar
// rather than a dependency.
type progressBar struct {
	w        io.Writer
	total    int
	rcv      *receiver
	enqueued atomic.Int64
	phase    atomic.Int32 // 0 enqueue, 1 deliver
	done     chan struct{}
	stopped  chan struct{}
	once     sync.Once
}

func startProgress(w io.Writer, total int, rcv *receiver) *progressBar {
	b := &progressBar{w: w, total: total, rcv: rcv, done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(b.stopped)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.done:
				b.draw()
				fmt.Fprintln(b.w)
				return
			case <-t.C:
				b.draw()
			}
		}
	}()
	return b
}

func (b *progressBar) delivering() { b.phase.Store(1) }

func (b *progressBar) draw() {
	const width = 30
	enq := int(b.enqueued.Load())
	n, label := enq, "enqueued "
	delivered := -1
	if b.rcv != nil {
		delivered = min(b.rcv.rec.Len(), b.total)
	}
	if b.phase.Load() == 1 && delivered >= 0 {
		n, label = delivered, "delivered"
	}
	fill := width * n / max(b.total, 1)
	bar := strings.Repeat("=", fill) + strings.Repeat(" ", width-fill)
	line := fmt.Sprintf("\r%s [%s] %d/%d", label, bar, n, b.total)
	if delivered >= 0 {
		line += fmt.Sprintf("  (enqueued %d, delivered %d)", enq, delivered)
	}
	fmt.Fprint(b.w, line)
}

func (b *progressBar) stop() {
	b.once.Do(func() { close(b.done) })
	<-b.stopped
}
