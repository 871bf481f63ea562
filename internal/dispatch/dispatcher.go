// Package dispatch delivers tasks. It leases due tasks from the store in
// batches, sends each as a signed HTTP request through an SSRF-guarded
// client, keeps leases alive while requests run, and writes completions back
// in batches. It also runs the elected leader's maintenance. It talks to the
// database only through store.Store.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/telemetry"
)

// Config configures a Dispatcher. Zero values take the defaults noted.
type Config struct {
	Store         store.Store
	Logger        *slog.Logger
	Metrics       *telemetry.Metrics // nil: none recorded
	Client        *http.Client       // default: NewHTTPClient(Guard{})
	SigningKeys   [][]byte           // each delivery is signed with every key (rotation); none: unsigned
	Workers       int                // default 100
	LeaseDuration time.Duration      // default 30s
	PollInterval  time.Duration      // default 1s
	Backoff       task.Backoff       // default task.DefaultBackoff
	UserAgent     string             // default "spool"
	// Replica names this process among the replicas sharing destinations'
	// limits and breakers (default: host name, pid and a random suffix).
	// Each attempt's record names it too.
	Replica string
	// AttemptBodyBytes is how much of each response body an attempt's
	// record keeps as its excerpt (at most task.MaxAttemptBodyBytes); 0
	// keeps none. spool serve passes SPOOL_ATTEMPT_BODY_BYTES (default
	// task.DefaultAttemptBodyBytes).
	AttemptBodyBytes int
	// Destinations tunes the per-destination protection (zero: defaults).
	Destinations DestinationPolicy
	// Now is this process's clock (default time.Now). It reads a
	// Retry-After given as a date; due times never come from it: a retry
	// or a deferral goes to the store as a wait (Completion.RetryIn), timed
	// by the store's clock (the database's on PostgreSQL).
	Now func() time.Time
	// TracerProvider starts the lease, delivery and HTTP client spans.
	// Default: the no-op provider, under which a task's stored traceparent
	// is still what the target receives.
	TracerProvider trace.TracerProvider
}

var (
	errShutdown  = errors.New("dispatcher shutting down")
	errLeaseLost = errors.New("lease lost")
)

// maxLeaseBatch bounds one Lease call so a huge worker pool does not hold
// one enormous transaction.
const maxLeaseBatch = 500

// Dispatcher runs deliveries. Start it once; Stop it once.
type Dispatcher struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer
	dests  *destinations

	settingsMu sync.RWMutex
	statuses   map[string]task.RetryStatuses // by queue; refreshed by watchSettings
	limited    map[string]bool               // queues with a concurrency limit; refreshed by watchSettings

	busy    atomic.Int64 // deliveries running
	reserve int          // slots beyond Workers for queues with nothing running here (reserveSlots)

	runMu     sync.Mutex
	running   map[string]int // deliveries running, by queue (the fair lease's Running)
	slotFreed chan struct{}  // a delivery ended (buffered 1)
	storeWoke atomic.Bool    // the store signalled due work since the last lease
	// soonDue is the latest time (unix ns) at which a task this process
	// deferred or retried with a short wait falls due; until it passes,
	// the fetch loop looks every promoteGap and its leases promote.
	soonDue atomic.Int64
	// backlog: the last lease filled every position it was given, so
	// more is probably due; the fetch loop then leases again as soon as
	// deliveries free slots (those that end while a lease runs share the
	// next one), and a draining queue does not wait for the next poll.
	backlog atomic.Bool
	wake    chan struct{} // something may be due (buffered 1)
	// fetching: the fetch loop is in a Lease call; an enqueue's lease
	// (EnqueueLease) stands aside meanwhile, for the two would compete for
	// the same tasks.
	fetching atomic.Bool
	// gate orders the leases made in enqueues' transactions against the
	// start and end of leasing: each holds it for reading from
	// EnqueueLease to Leased; Start opens it and StopLeasing closes it, so
	// that no delivery is launched once Stop waits for them.
	gate     sync.RWMutex
	gateOpen bool // under gate

	mu       sync.Mutex
	inflight map[string]*flight // by task id, until the completion is stored

	completions chan store.Completion

	fetchCancel   context.CancelFunc
	fetchDone     chan struct{}
	deliverCtx    context.Context
	deliverCancel context.CancelCauseFunc
	deliveries    sync.WaitGroup
	completerDone chan struct{}
	hbCancel      context.CancelFunc
	hbDone        chan struct{}
	syncCancel    context.CancelFunc
	syncDone      chan struct{}
}

type flight struct {
	lease  store.Lease
	cancel context.CancelCauseFunc
	done   atomic.Bool // the attempt ended; its completion is not stored yet
}

// New returns a Dispatcher with cfg's defaults filled in.
func New(cfg Config) *Dispatcher {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Client == nil {
		cfg.Client = NewHTTPClient(Guard{})
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 100
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = 30 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Backoff.Min <= 0 {
		cfg.Backoff = task.DefaultBackoff
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "spool"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.Replica == "" {
		cfg.Replica = DefaultReplica()
	}
	cfg.AttemptBodyBytes = min(max(cfg.AttemptBodyBytes, 0), task.MaxAttemptBodyBytes)
	if cfg.Destinations.MaxBackoff <= 0 {
		cfg.Destinations.MaxBackoff = cfg.Backoff.Max
	}
	return &Dispatcher{
		dests:       newDestinations(cfg.Store, cfg.Replica, cfg.Destinations, cfg.Workers+reserveSlots(cfg.Workers), cfg.Logger, cfg.Metrics),
		cfg:         cfg,
		log:         cfg.Logger,
		tracer:      cfg.TracerProvider.Tracer(tracerName),
		reserve:     reserveSlots(cfg.Workers),
		running:     make(map[string]int),
		slotFreed:   make(chan struct{}, 1),
		wake:        make(chan struct{}, 1),
		inflight:    make(map[string]*flight),
		completions: make(chan store.Completion, cfg.Workers),
	}
}

// Start launches the fetch loop, the lease heartbeat and the completion
// writer. They run until Stop.
func (d *Dispatcher) Start(ctx context.Context) error {
	wakeups, err := d.cfg.Store.Wakeups(ctx)
	if err != nil {
		return err
	}
	if m := d.cfg.Metrics; m != nil {
		m.WorkersMax.Set(float64(d.cfg.Workers + d.reserve)) // every slot, the reserve's too
	}
	// Deliveries and the heartbeat outlive ctx's cancellation on purpose:
	// Stop decides when they end, so in-flight tasks are finished or released.
	d.deliverCtx, d.deliverCancel = context.WithCancelCause(context.WithoutCancel(ctx))
	var hbCtx context.Context
	hbCtx, d.hbCancel = context.WithCancel(context.WithoutCancel(ctx))
	d.hbDone = make(chan struct{})
	go d.heartbeat(hbCtx)
	d.completerDone = make(chan struct{})
	go d.completer()
	// Destination syncs go on while deliveries finish at shutdown.
	var syncCtx context.Context
	syncCtx, d.syncCancel = context.WithCancel(context.WithoutCancel(ctx))
	d.syncDone = make(chan struct{})
	d.refreshSettings(ctx)
	go func() {
		defer close(d.syncDone)
		var wg sync.WaitGroup
		wg.Go(func() { d.dests.run(syncCtx) })
		wg.Go(func() { d.watchSettings(syncCtx) })
		wg.Wait()
	}()

	var fetchCtx context.Context
	fetchCtx, d.fetchCancel = context.WithCancel(ctx)
	d.fetchDone = make(chan struct{})
	go func() {
		for range wakeups {
			d.storeWoke.Store(true)
			d.kick()
		}
	}()
	go d.fetchLoop(fetchCtx)
	d.gate.Lock()
	d.gateOpen = true
	d.gate.Unlock()
	return nil
}

// Stop ends dispatching in the order that loses nothing: stop leasing; let
// in-flight deliveries finish until ctx ends, then cancel the rest and
// release them for another worker; write every completion; stop renewing
// leases. It returns once all of that is done.
func (d *Dispatcher) Stop(ctx context.Context) {
	// 1. Stop leasing new tasks (if StopLeasing has not already).
	d.StopLeasing()

	// 2. Let deliveries finish; past the deadline, abandon them as releases.
	done := make(chan struct{})
	go func() { d.deliveries.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.log.Warn("shutdown timeout: releasing in-flight tasks", "tasks", d.busy.Load())
		d.deliverCancel(errShutdown)
		<-done
	}

	// 3. Write the remaining completions (the writer drains, then exits).
	close(d.completions)
	<-d.completerDone

	// 4. Only now stop renewing leases: anything still unrecorded will be
	// rescued by the leader after its lease expires.
	d.hbCancel()
	<-d.hbDone
	d.syncCancel()
	<-d.syncDone
	d.deliverCancel(errShutdown)
}

// settingsInterval is how often the dispatcher rereads the queues'
// settings it applies itself (retry_statuses): a PATCH takes effect on
// every replica within it.
const settingsInterval = 5 * time.Second

// watchSettings rereads the queues' settings every settingsInterval.
func (d *Dispatcher) watchSettings(ctx context.Context) {
	t := time.NewTicker(settingsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.refreshSettings(ctx)
		}
	}
}

// refreshSettings reads every queue's settings (one small query, no count)
// and keeps their retry_statuses; on an error the last ones stay.
func (d *Dispatcher) refreshSettings(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, settingsInterval)
	defer cancel()
	qs, err := d.cfg.Store.ListQueueSettings(rctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("read queue settings; keeping the last ones", "error.message", err.Error())
		}
		return
	}
	statuses := make(map[string]task.RetryStatuses, len(qs))
	limited := make(map[string]bool)
	for _, q := range qs {
		statuses[q.Name] = q.RetryStatuses
		if q.Concurrency > 0 {
			limited[q.Name] = true
		}
	}
	d.settingsMu.Lock()
	d.statuses, d.limited = statuses, limited
	d.settingsMu.Unlock()
}

// StopLeasing stops taking new tasks and returns once the fetch loop has
// ended; deliveries in flight go on. serve calls it at the first SIGTERM,
// so that nothing is leased during the drain delay only to be released at
// the shutdown timeout. Stop calls it too; calling it twice is harmless.
func (d *Dispatcher) StopLeasing() {
	d.gate.Lock() // waits for the enqueues' leases under way to be handed over
	d.gateOpen = false
	d.gate.Unlock()
	d.fetchCancel()
	<-d.fetchDone
}

// EnqueueLease implements store.EnqueueLeaser: an enqueue that makes due
// tasks may lease up to one more than that, in the fair order, in its own
// transaction, into this process's free shared slots (never the
// reserve's). It stands aside while the fetch loop leases or works
// through a backlog (it then leases as slots free, in batches), and once
// leasing stopped. The slots are counted busy from here, so the fetch
// loop cannot hand them out meanwhile.
func (d *Dispatcher) EnqueueLease(due int) (store.LeaseRequest, bool) {
	if due <= 0 || d.fetching.Load() || d.backlog.Load() {
		return store.LeaseRequest{}, false
	}
	d.gate.RLock()
	if !d.gateOpen {
		d.gate.RUnlock()
		return store.LeaseRequest{}, false
	}
	for {
		busy := d.busy.Load()
		// One position more than the enqueue made due: a lease that then
		// comes back short shows that nothing else was due (the store
		// wakes nobody), one that fills up may have left work behind.
		n := min(int64(due)+1, int64(d.cfg.Workers)-busy, maxLeaseBatch)
		if n <= 0 {
			d.gate.RUnlock()
			return store.LeaseRequest{}, false
		}
		if d.busy.CompareAndSwap(busy, busy+n) {
			// The gate stays held until Leased.
			return store.LeaseRequest{
				Limit:         int(n),
				Shared:        int(n),
				LeaseFor:      d.cfg.LeaseDuration,
				Running:       d.runningCopy(),
				AvailableOnly: true,
			}, true
		}
	}
}

// Leased implements store.EnqueueLeaser: it launches what an enqueue's
// transaction leased into the slots EnqueueLease reserved and frees the
// rest.
func (d *Dispatcher) Leased(req store.LeaseRequest, ls []store.Lease) {
	defer d.gate.RUnlock()
	if unused := req.Limit - len(ls); unused > 0 {
		d.freeSlots(unused)
	}
	if len(ls) == 0 {
		return
	}
	if m := d.cfg.Metrics; m != nil {
		m.EnqueueLeased.Add(float64(len(ls)))
	}
	now := time.Now()
	span := d.traceLease(d.deliverCtx, now, now, req.Limit, ls)
	for _, l := range ls {
		d.start(l, now, span)
	}
}

// DefaultReplica names this process: host name, pid and a random suffix
// (a restarted pod with the same name is another replica).
func DefaultReplica() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "spool"
	}
	return fmt.Sprintf("%s-%d-%04x", host, os.Getpid(), rand.Uint32()&0xffff)
}

// kick asks the fetch loop to look for due tasks now.
func (d *Dispatcher) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// reserveSlots is how many delivery slots the fetch loop keeps, on top of
// workers, for queues with nothing running here: min(workers-1,
// max(1, workers/10)), none with one worker. The store's fair order
// already gives the next slot to the queue with the fewest running; the
// reserve makes sure there is a slot to give even when one queue's tasks
// hold every one of the workers until their timeout, so a task due in
// another queue starts within one lease. It comes on top rather than out
// of workers so that a single busy queue still has all of them: carved
// out of 100 workers, the 10 reserved slots cost a lone draining queue
// about a tenth of its rate (BenchmarkDrain).
func reserveSlots(workers int) int {
	if workers < 2 {
		return 0
	}
	return min(workers-1, max(1, workers/10))
}

// addRunning counts a delivery of queue starting (+1) or ending (-1).
func (d *Dispatcher) addRunning(queue string, delta int) {
	d.runMu.Lock()
	defer d.runMu.Unlock()
	if n := d.running[queue] + delta; n > 0 {
		d.running[queue] = n
	} else {
		delete(d.running, queue)
	}
}

// runningCopy is a snapshot of the running counts for one lease.
func (d *Dispatcher) runningCopy() map[string]int {
	d.runMu.Lock()
	defer d.runMu.Unlock()
	return maps.Clone(d.running)
}

func (d *Dispatcher) fetchLoop(ctx context.Context) {
	defer close(d.fetchDone)
	timer := time.NewTimer(d.cfg.PollInterval)
	defer timer.Stop()
	more := true // the last lease was full: more is probably due
	var lastErr, lastPromote time.Time
	for ctx.Err() == nil {
		busy := int(d.busy.Load())
		free := d.cfg.Workers + d.reserve - busy
		if free <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-d.slotFreed:
				continue
			}
		}
		polled := false
		if !more {
			var freed <-chan struct{} // nil: a freed slot alone is no reason to look
			if d.backlog.Load() {
				freed = d.slotFreed
			}
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
			case <-freed:
			case <-timer.C:
				polled = true
			}
			busy = int(d.busy.Load()) // slots may have freed meanwhile
			free = d.cfg.Workers + d.reserve - busy
		}
		// Past Workers busy slots, only queues with nothing running here
		// may have a slot (one each, the reserve), so the lease runs on the store's
		// wake-ups and on polls, which may bring such a queue's task. A
		// look for a task of ours falling due cannot, and a lease for it
		// would come back empty while a single queue drains: skip it.
		shared := max(0, d.cfg.Workers-busy)
		if fresh := d.storeWoke.Swap(false); shared == 0 && !more && !polled && !fresh {
			continue
		}
		// A wake-up comes for tasks available now; what fell due by the
		// clock is promoted by polls, by leases after a full one, by the
		// leader each second (which wakes us then), and, while tasks this
		// process deferred or retried with a short wait fall due, by a
		// lease every promoteGap.
		soon := d.soonDue.Load()
		now := time.Now()
		promote := more || polled || (soonPending(soon, now) && now.Sub(lastPromote) >= promoteGap)
		if promote {
			lastPromote = now
		}
		timer.Reset(d.pollWait(soon, now))
		n := min(free, maxLeaseBatch)
		req := store.LeaseRequest{
			Limit:         n,
			Shared:        min(n, shared),
			LeaseFor:      d.cfg.LeaseDuration,
			Running:       d.runningCopy(),
			AvailableOnly: !promote,
		}
		leaseStart := time.Now()
		// Not cancelled by Stop: a lease the database committed while the
		// call was being cancelled would be lost to us and sit running until
		// it expired. Whatever comes back is launched, then finished or
		// released by Stop like any other delivery.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.LeaseDuration)
		d.fetching.Store(true)
		leases, err := d.cfg.Store.Lease(lctx, req)
		d.fetching.Store(false)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if time.Since(lastErr) > 10*time.Second { // one line per outage, not one per poll
				d.log.Error("lease tasks", "error.message", err.Error())
				lastErr = time.Now()
			}
			more = false
			continue
		}
		more = len(leases) == n
		d.backlog.Store(more || (req.Shared > 0 && len(leases) >= req.Shared))
		now = time.Now()
		var leaseSpan trace.SpanContext
		if len(leases) > 0 {
			leaseSpan = d.traceLease(ctx, leaseStart, now, n, leases)
		}
		for _, l := range leases {
			d.launch(l, now, leaseSpan)
		}
	}
}

// promoteGap is how often, at most, the fetch loop looks for the tasks
// this process deferred or retried with a short wait (up to soonWindow)
// as they fall due, promoting them: a destination that is busy for a
// moment must not hold its tasks until the next poll.
const (
	promoteGap = 25 * time.Millisecond
	soonWindow = 2 * time.Second
)

// noteDue records when the task of c, deferred or retried with a wait of
// at most soonWindow, falls due, once its completion is committed (the
// store adds the wait to its now at that commit, up to completionWindow
// and a write after the attempt ended). Longer waits are left to the polls
// and the leader.
func (d *Dispatcher) noteDue(c store.Completion) {
	if c.Outcome != store.Defer && c.Outcome != store.Retry {
		return
	}
	wait := c.RetryIn
	if !c.RetryAt.IsZero() {
		wait = time.Until(c.RetryAt)
	}
	if wait > soonWindow {
		return
	}
	now := time.Now()
	due := now.Add(max(wait, 0)).UnixNano()
	for {
		cur := d.soonDue.Load()
		if cur >= due {
			return
		}
		if d.soonDue.CompareAndSwap(cur, due) {
			if cur < now.UnixNano() {
				// The fetch loop may be waiting out a whole poll
				// interval: have it shorten its wait.
				d.kick()
			}
			return
		}
	}
}

// pollWait is how long the fetch loop waits for a wake-up before it looks
// anyway, from now: the poll interval, or promoteGap while tasks of ours
// fall due (soon, unix ns, 0 = none).
func (d *Dispatcher) pollWait(soon int64, now time.Time) time.Duration {
	if soonPending(soon, now) {
		return min(promoteGap, d.cfg.PollInterval)
	}
	return d.cfg.PollInterval
}

// soonPending reports whether, at now, tasks of ours noted in soon (see
// soonDue) may still be falling due: until promoteGap past the last.
func soonPending(soon int64, now time.Time) bool {
	return soon != 0 && now.UnixNano() <= soon+int64(promoteGap)
}

// maxLeaseLinks bounds the links of one lease span (the SDK's default
// limit); a bigger batch links its first tasks only.
const maxLeaseLinks = 128

// traceLease records one span for a Lease call that returned tasks. The
// batch mixes tasks of many traces, so, as the messaging conventions do for
// a batch receive, the span is a root of its own linked to each task's
// trace; each delivery span links back to it. It returns the span's context.
func (d *Dispatcher) traceLease(ctx context.Context, start, end time.Time, limit int, leases []store.Lease) trace.SpanContext {
	_, span := d.tracer.Start(ctx, "spool.lease",
		trace.WithNewRoot(),
		trace.WithTimestamp(start),
		trace.WithAttributes(
			attribute.Int("spool.lease.count", len(leases)),
			attribute.Int("spool.lease.limit", limit),
		))
	if span.IsRecording() {
		for _, l := range leases[:min(len(leases), maxLeaseLinks)] {
			if sc := taskSpanContext(l.Task); sc.IsValid() {
				span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("spool.task.id", l.Task.ID)}})
			}
		}
	}
	span.End(trace.WithTimestamp(end))
	return span.SpanContext()
}

// launch starts one delivery in a free slot; the fetch loop is its only
// caller, and it leased no more than were free. leaseSpan is the lease span
// the delivery links to.
func (d *Dispatcher) launch(l store.Lease, now time.Time, leaseSpan trace.SpanContext) {
	d.busy.Add(1)
	d.start(l, now, leaseSpan)
}

// start starts one delivery in a slot already counted busy.
func (d *Dispatcher) start(l store.Lease, now time.Time, leaseSpan trace.SpanContext) {
	d.addRunning(l.Task.Queue, 1)
	if m := d.cfg.Metrics; m != nil {
		m.WorkersBusy.Inc()
		if wait := now.Sub(l.Task.RunAt); wait > 0 {
			m.QueueWait.WithLabelValues(l.Task.Queue).Observe(wait.Seconds())
		} else {
			m.QueueWait.WithLabelValues(l.Task.Queue).Observe(0)
		}
	}
	ctx, cancel := context.WithCancelCause(d.deliverCtx)
	f := &flight{lease: l, cancel: cancel}
	d.mu.Lock()
	d.inflight[l.Task.ID] = f
	d.mu.Unlock()
	d.deliveries.Add(1)
	go func() {
		defer d.deliveries.Done()
		c, ok := d.deliver(ctx, l, leaseSpan)
		f.done.Store(true)
		cancel(nil)
		if ok {
			// Holding the slot until the writer takes the completion gives
			// backpressure: a stalled database stops new leases.
			d.completions <- c
		} else { // the lease was taken away: nothing to record
			d.forget(l.Task.ID)
		}
		d.addRunning(l.Task.Queue, -1)
		if m := d.cfg.Metrics; m != nil {
			m.WorkersBusy.Dec()
		}
		d.freeSlots(1)
	}()
}

// freeSlots returns n delivery slots and tells a fetch loop waiting for
// one.
func (d *Dispatcher) freeSlots(n int) {
	d.busy.Add(-int64(n))
	select {
	case d.slotFreed <- struct{}{}:
	default:
	}
}

// forget stops tracking a task; it reports whether it was still tracked
// (false when the heartbeat already found its lease lost and counted it).
func (d *Dispatcher) forget(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.inflight[id]
	delete(d.inflight, id)
	return ok
}

// completionWindow is how long the completer gathers completions after
// the first of a batch before it writes them, so that at moderate rates
// several attempts share one transaction: at 100 tasks/s each completion
// was a statement and a commit of its own. Nothing waits on it: the
// receiver has its request, and the delivery's slot was freed when the
// completion was handed over. A task only shows running for that much
// longer, and a batch that frees a slot of a queue with a concurrency limit
// is written at once (its next task waits on that slot).
const completionWindow = 20 * time.Millisecond

// completer writes completions in batches: whatever queues up within
// completionWindow of a batch's first completion, or while the previous
// write ran, goes in one write.
func (d *Dispatcher) completer() {
	defer close(d.completerDone)
	batch := make([]store.Completion, 0, 256)
	window := time.NewTimer(completionWindow)
	window.Stop()
	for c := range d.completions {
		batch = append(batch[:0], c)
		urgent := d.urgent(c)
		if !urgent {
			window.Reset(completionWindow)
		}
	gather:
		for len(batch) < cap(batch) && !urgent {
			select {
			case c, ok := <-d.completions:
				if !ok {
					break gather
				}
				batch = append(batch, c)
				urgent = d.urgent(c)
			case <-window.C:
				break gather
			}
		}
		window.Stop()
		// Whatever else is queued already goes along.
	drain:
		for len(batch) < cap(batch) {
			select {
			case c, ok := <-d.completions:
				if !ok {
					break drain
				}
				batch = append(batch, c)
			default:
				break drain
			}
		}
		d.flush(batch)
	}
}

// urgent reports whether c should be written without waiting for others:
// it makes its task due again now, or ends an attempt in a queue with a
// concurrency limit, whose next task may start only once the store counts
// this one finished.
func (d *Dispatcher) urgent(c store.Completion) bool {
	if c.Outcome == store.Release || (c.Outcome == store.Retry && c.RetryIn <= 0 && c.RetryAt.IsZero()) {
		return true
	}
	d.mu.Lock()
	f := d.inflight[c.TaskID]
	d.mu.Unlock()
	if f == nil {
		return false
	}
	d.settingsMu.RLock()
	defer d.settingsMu.RUnlock()
	return d.limited[f.lease.Task.Queue]
}

// flush stores one batch, retrying while the database is away. If it never
// comes back the leases expire and the tasks are rescued: delivered at
// least once, never lost.
func (d *Dispatcher) flush(batch []store.Completion) {
	backoff := 50 * time.Millisecond
	deadline := time.Now().Add(d.cfg.LeaseDuration)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		accepted, err := d.cfg.Store.Complete(ctx, batch)
		cancel()
		if err == nil {
			for i, c := range batch {
				if accepted[i] {
					// Its due time counts from this commit: the store
					// adds the wait to its own now.
					d.noteDue(c)
				}
				tracked := d.forget(c.TaskID)
				if !accepted[i] && tracked { // else the heartbeat counted it
					d.log.Warn("completion refused: lease no longer held", "spool.task.id", c.TaskID)
					if m := d.cfg.Metrics; m != nil {
						m.LeasesLost.Inc()
					}
				}
			}
			return
		}
		if time.Now().After(deadline) {
			d.log.Error("completions not stored; their tasks will be rescued and delivered again", "tasks", len(batch), "error.message", err.Error())
			for _, c := range batch {
				d.forget(c.TaskID)
			}
			return
		}
		d.log.Warn("store completions: retrying", "tasks", len(batch), "error.message", err.Error())
		time.Sleep(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

// heartbeat extends the leases of every task in flight (and of finished
// ones whose completion is not yet stored), and cancels deliveries whose
// lease was taken away (rescued elsewhere, or cancelled by a user).
func (d *Dispatcher) heartbeat(ctx context.Context) {
	defer close(d.hbDone)
	t := time.NewTicker(d.cfg.LeaseDuration / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		refs := make([]store.LeaseRef, 0, len(d.inflight))
		for id, f := range d.inflight {
			refs = append(refs, store.LeaseRef{TaskID: id, Token: f.lease.Token})
		}
		d.mu.Unlock()
		if len(refs) == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, d.cfg.LeaseDuration/3)
		lost, err := d.cfg.Store.ExtendLeases(cctx, refs, d.cfg.LeaseDuration)
		cancel()
		if err != nil {
			d.log.Warn("extend leases", "tasks", len(refs), "error.message", err.Error())
			continue
		}
		for _, r := range lost {
			d.mu.Lock()
			f := d.inflight[r.TaskID]
			switch {
			case f == nil || f.lease.Token != r.Token:
				f = nil
			case f.done.Load():
				// The attempt ended and its completion is on its way to the
				// store, or was committed while this extension ran (it then
				// no longer finds the task running). Only the completion's
				// answer tells which: the completer counts it if refused.
				f = nil
			default:
				delete(d.inflight, r.TaskID)
			}
			d.mu.Unlock()
			if f != nil {
				f.cancel(errLeaseLost)
				d.log.Info("lease lost; delivery abandoned", "spool.task.id", r.TaskID)
				if m := d.cfg.Metrics; m != nil {
					m.LeasesLost.Inc()
				}
			}
		}
	}
}
