package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/telemetry"
)

// DestinationPolicy tunes how Spool protects each destination (a target's
// scheme, host and port). Zero fields take the defaults noted; the policy
// itself is described in docs/operations.md, "Protecting receivers".
type DestinationPolicy struct {
	// InitialLimit is a destination's concurrency limit before it has shown
	// any sign of congestion (default 10). From there the limit grows by one
	// for every request answered while the limit was in use (it doubles each
	// round trip, as TCP's slow start), up to the workers of the process.
	InitialLimit float64
	// MaxLimit caps the shared limit (default 1000).
	MaxLimit float64
	// BreakerThreshold consecutive failures (5xx, timeouts, connection
	// errors) open the circuit breaker (default 5).
	BreakerThreshold int
	// MinCooldown is the first open period (default 1s); each failed probe
	// multiplies it by 1.5, up to MaxCooldown (default 30s).
	MinCooldown, MaxCooldown time.Duration
	// SyncInterval is how often a replica reports to and reads the shared
	// state of the destinations it sends to (default 1s).
	SyncInterval time.Duration
	// ParkWait is how long a task may wait in this process for a slot of a
	// busy destination before it is deferred (default 2s).
	ParkWait time.Duration
	// MaxBackoff caps a Retry-After hold (default task.DefaultBackoff.Max).
	MaxBackoff time.Duration
}

func (p DestinationPolicy) withDefaults() DestinationPolicy {
	if p.InitialLimit <= 0 {
		p.InitialLimit = 10
	}
	if p.MaxLimit <= 0 {
		p.MaxLimit = 1000
	}
	if p.BreakerThreshold <= 0 {
		p.BreakerThreshold = 5
	}
	if p.MinCooldown <= 0 {
		p.MinCooldown = time.Second
	}
	if p.MaxCooldown < p.MinCooldown {
		p.MaxCooldown = max(30*time.Second, p.MinCooldown)
	}
	if p.SyncInterval <= 0 {
		p.SyncInterval = time.Second
	}
	if p.ParkWait <= 0 {
		p.ParkWait = 2 * time.Second
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = task.DefaultBackoff.Max
	}
	return p
}

const (
	// cooldownGrowth multiplies the open period after each failed probe.
	cooldownGrowth = 1.5
	// decreaseSpacing: the shared limit is halved at most once in this
	// long, so one congestion episode reported by many replicas (or by one
	// replica over several requests) halves it once.
	decreaseSpacing = time.Second
	// liveFor is how long a replica's report counts it among the live
	// replicas of a destination.
	liveFactor = 3
	// destIdle: a destination with nothing in flight for this long is
	// forgotten by the process (its series are dropped too).
	destIdle = 5 * time.Minute
	// slowStartStep: in slow start, a destination whose limit is full
	// doubles it at most this often even before any answer arrives.
	slowStartStep = 100 * time.Millisecond
	// maxDestinationSeries caps the destinations with metric series of
	// their own in one process; the others share the label "other".
	maxDestinationSeries = 100
)

// verdict is what one attempt says about its destination's health.
type verdict struct {
	// congestion: 429, 503, a timeout or a connection error: the
	// destination wants fewer requests (or cannot take any).
	congestion bool
	// failure: a 5xx, a timeout or a connection error: counts towards
	// opening the circuit breaker. 429 is not one: the receiver is alive and
	// says how much it takes.
	failure bool
	// refused: the destination answered 429 or 503 (the metric's outcome).
	refused bool
}

// judge reads an attempt's outcome: status 0 with err set is a transport
// error (timeout or connection).
func judge(status int, err error) verdict {
	switch {
	case err != nil:
		return verdict{congestion: true, failure: true}
	case status == 429:
		return verdict{congestion: true, refused: true}
	case status == 503:
		return verdict{congestion: true, failure: true, refused: true}
	case status >= 500:
		return verdict{failure: true}
	}
	return verdict{}
}

// destinations keeps the dispatcher's per-destination state: an adaptive
// concurrency limit and a circuit breaker per destination, shared with the
// other replicas through the store once per SyncInterval (no write per
// delivery), plus the immediate local reactions between syncs.
type destinations struct {
	store   store.Store
	replica string
	policy  DestinationPolicy
	workers int
	log     *slog.Logger
	metrics *telemetry.Metrics

	mu     sync.Mutex
	m      map[string]*dest
	labels map[string]bool // destinations with series of their own
}

// dest is one destination as this process sees it. Guarded by destinations.mu.
type dest struct {
	name  string
	label string
	// Series handles, looked up once (nil without metrics or for "other").
	gLimit, gInFlight, gOpen prometheus.Gauge

	// Shared state as of the last sync or change.
	shared   task.Destination
	peers    int // live replicas at the last sync (this one included)
	rank     int
	synced   bool
	lastSync time.Time
	syncing  bool          // a first or stale sync is running in acquire
	synced1  chan struct{} // closed when the first sync (syncing, !synced) ends
	wanted   bool          // a task wanted to go there since the last report

	// Local state.
	limit        float64   // this replica's concurrency limit
	inflight     int       // requests in flight from here
	waiters      int       // tasks parked here for a slot
	failures     int       // consecutive failures seen here
	probing      bool      // this replica's probe is in flight
	lastDecrease time.Time // congestion of requests started before it is not cut again
	lastGrowth   time.Time // slow start's last doubling by time
	holdUntil    time.Time // no request before this (Retry-After)
	tokens       float64   // rate ceiling's bucket
	tokensAt     time.Time
	freed        chan struct{} // closed (and replaced) when a slot frees
	lastUsed     time.Time

	win window // since the last report
}

// window is what one replica saw of a destination between two reports.
type window struct {
	successes, failures int64
	latSum              time.Duration
	answered            int64
	congested           bool // a 429, 503, timeout or connection error
	saturated           bool // a request found the limit in use
}

// merge adds a window that could not be reported to the current one.
func (w *window) merge(o window) {
	w.successes += o.successes
	w.failures += o.failures
	w.latSum += o.latSum
	w.answered += o.answered
	w.congested = w.congested || o.congested
	w.saturated = w.saturated || o.saturated
}

func newDestinations(st store.Store, replica string, policy DestinationPolicy, workers int, log *slog.Logger, m *telemetry.Metrics) *destinations {
	return &destinations{
		store: st, replica: replica, policy: policy.withDefaults(), workers: workers,
		log: log, metrics: m,
		m: make(map[string]*dest), labels: make(map[string]bool),
	}
}

func (ds *destinations) live() time.Duration { return liveFactor * ds.policy.SyncInterval }

// permit is a slot of a destination held by one request.
type permit struct {
	ds      *destinations
	d       *dest
	probe   bool
	started time.Time
}

// deferral says a task must wait without spending an attempt.
type deferral struct {
	wait   time.Duration // from now, by the store's clock (Completion.RetryIn)
	reason string        // last_error
	kind   string        // metric label: busy, open, hold
}

// acquire returns a permit to send to the destination now, or a deferral.
// It may wait up to ParkWait for a slot; ctx ending returns ctx's error.
func (ds *destinations) acquire(ctx context.Context, name string) (*permit, *deferral, error) {
	if err := ds.ensure(ctx, name); err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(ds.policy.ParkWait)
	parked := false
	defer func() {
		if parked {
			ds.mu.Lock()
			ds.m[name].waiters--
			ds.mu.Unlock()
		}
	}()
	for {
		now := time.Now()
		ds.mu.Lock()
		d := ds.m[name]
		d.lastUsed, d.wanted = now, true
		if df := ds.blocked(d, now); df != nil {
			ds.mu.Unlock()
			ds.countDeferred(d, df.kind)
			return nil, df, nil
		}
		if d.shared.Breaker != task.BreakerClosed {
			ds.mu.Unlock()
			// Past the cool-down: one probe across all replicas.
			p, df, err := ds.probe(ctx, d)
			if df != nil {
				ds.countDeferred(d, df.kind)
			}
			return p, df, err
		}
		limit := ds.capacity(d, now)
		if d.inflight < limit && ds.takeToken(d, now) {
			d.inflight++
			if d.inflight >= limit {
				d.win.saturated = true
			}
			ds.setGauges(d)
			ds.mu.Unlock()
			return &permit{ds: ds, d: d, started: now}, nil, nil
		}
		d.win.saturated = true
		if !ds.learned(d) && d.failures == 0 && now.Sub(d.lastGrowth) >= slowStartStep && d.limit < float64(ds.workers) {
			// Slow start also doubles with time: a healthy receiver that
			// takes seconds to answer would otherwise hold the limit at its
			// start for as long. A receiver that refuses, or times out,
			// ends slow start with its first answer; one that fails stops
			// this growth until it answers well again.
			d.limit = math.Min(float64(ds.workers), d.limit*2)
			d.lastGrowth = now
			ds.mu.Unlock()
			continue
		}
		// Park for a slot, unless this destination has shown a limit and
		// enough tasks already wait for it here: then the others go back to
		// the store, so one slow receiver cannot hold every worker.
		canPark := parked || !ds.learned(d) || d.waiters < max(1, limit)
		if !canPark || now.After(deadline) {
			ds.mu.Unlock()
			df := &deferral{
				wait:   jitter(500*time.Millisecond, time.Second),
				reason: fmt.Sprintf("destination %s busy: %d requests in flight from this replica, its limit here is %d; deferred without spending an attempt", name, d.inflight, limit),
				kind:   "busy",
			}
			ds.countDeferred(d, df.kind)
			return nil, df, nil
		}
		if !parked {
			parked = true
			d.waiters++
		}
		freed := d.freed
		ds.mu.Unlock()
		t := time.NewTimer(min(time.Until(deadline), 100*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, ctx.Err()
		case <-freed:
		case <-t.C: // the rate bucket refills, a sync may raise the limit
		}
		t.Stop()
	}
}

// learned reports whether the destination has ever shown congestion (the
// shared limit is then a measured one).
func (ds *destinations) learned(d *dest) bool {
	return !d.shared.LimitDecreasedAt.IsZero() || !d.lastDecrease.IsZero()
}

// blocked returns why tasks for d must wait now, if they must. Called with mu held.
func (ds *destinations) blocked(d *dest, now time.Time) *deferral {
	hold := d.holdUntil
	if d.shared.HoldUntil.After(hold) {
		hold = d.shared.HoldUntil
	}
	if now.Before(hold) {
		return &deferral{
			wait:   hold.Sub(now) + jitter(0, 500*time.Millisecond),
			reason: fmt.Sprintf("destination %s asked to wait (Retry-After) until %s; deferred without spending an attempt", d.name, hold.UTC().Format(time.RFC3339)),
			kind:   "hold",
		}
	}
	switch d.shared.Breaker {
	case task.BreakerOpen:
		if now.Before(d.shared.OpenUntil) {
			return &deferral{
				wait:   d.shared.OpenUntil.Sub(now) + jitter(0, 500*time.Millisecond),
				reason: fmt.Sprintf("destination %s unavailable: circuit breaker open after %d consecutive failures; next probe at %s; deferred without spending an attempt", d.name, d.shared.Failures, d.shared.OpenUntil.UTC().Format(time.RFC3339)),
				kind:   "open",
			}
		}
	case task.BreakerHalfOpen:
		if d.probing || (d.shared.ProbeOwner != "" && now.Before(d.shared.ProbeUntil)) {
			return &deferral{
				wait:   jitter(500*time.Millisecond, time.Second),
				reason: fmt.Sprintf("destination %s unavailable: circuit breaker half open, a probe is in flight; deferred without spending an attempt", d.name),
				kind:   "open",
			}
		}
	}
	return nil
}

// probe tries to make this task the one probe of an open breaker.
func (ds *destinations) probe(ctx context.Context, d *dest) (*permit, *deferral, error) {
	won := false
	probeFor := ds.policy.ParkWait + task.MaxTimeout
	row, err := ds.store.ChangeDestination(ctx, d.name, func(r *task.Destination, now time.Time) bool {
		won = false
		switch {
		case r.Breaker == task.BreakerClosed:
			return false // closed meanwhile: no probe needed
		case r.Breaker == task.BreakerOpen && now.Before(r.OpenUntil):
			return false
		case r.Breaker == task.BreakerHalfOpen && r.ProbeOwner != "" && now.Before(r.ProbeUntil):
			return false
		}
		r.Breaker, r.ProbeOwner, r.ProbeUntil = task.BreakerHalfOpen, ds.replica, now.Add(probeFor)
		won = true
		return true
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		// The store is away: wait rather than send unprotected.
		return nil, &deferral{wait: jitter(time.Second, 2*time.Second),
			reason: fmt.Sprintf("destination %s unavailable: circuit breaker open and its probe could not be arranged; deferred without spending an attempt", d.name), kind: "open"}, nil
	}
	now := time.Now()
	ds.mu.Lock()
	defer ds.mu.Unlock()
	d.shared = mergeShared(d.shared, row)
	if row.Breaker == task.BreakerClosed {
		d.inflight++
		ds.setGauges(d)
		return &permit{ds: ds, d: d, started: now}, nil, nil
	}
	if !won {
		if df := ds.blocked(d, now); df != nil {
			return nil, df, nil
		}
		return nil, &deferral{wait: jitter(500*time.Millisecond, time.Second),
			reason: fmt.Sprintf("destination %s unavailable: circuit breaker half open, a probe is in flight; deferred without spending an attempt", d.name), kind: "open"}, nil
	}
	d.probing = true
	d.inflight++
	ds.setGauges(d)
	ds.log.Info("destination circuit breaker: probing", "spool.destination", d.name)
	return &permit{ds: ds, d: d, probe: true, started: now}, nil, nil
}

// mergeShared keeps the stats of the last sync when a row comes back
// from ChangeDestination (which does not fill them).
func mergeShared(old, row task.Destination) task.Destination {
	row.Stats = old.Stats
	return row
}

// capacity is how many requests this replica may have in flight to d: its
// share of the shared limit (and of the operator's ceiling), lowered at
// once by local congestion. Called with mu held.
func (ds *destinations) capacity(d *dest, now time.Time) int {
	ceiling := float64(ds.workers)
	if g := d.shared.Limit; ds.learned(d) && g > 0 {
		ceiling = math.Min(ceiling, float64(stableShare(g, d.peers, d.rank, now)))
	}
	if mc := d.shared.MaxConcurrency; mc > 0 {
		ceiling = math.Min(ceiling, float64(stableShare(float64(mc), d.peers, d.rank, now)))
	}
	if d.limit > ceiling {
		d.limit = math.Max(ceiling, 0)
	}
	if ceiling < 1 {
		return 0
	}
	return max(1, int(d.limit))
}

// share divides a limit of total among peers replicas: each gets the whole
// part; the remainder goes to as many replicas, chosen by rank and turned
// every 10 seconds so no replica is left out for long. The shares add up
// to total exactly, so ten replicas never send ten times the limit.
func share(total float64, peers, rank int, now time.Time) int {
	n := max(1, peers)
	t := max(1, int(total))
	s := t / n
	if (rank+int(now.Unix()/10))%n < t%n {
		s++
	}
	return s
}

// rotationGuard: a replica takes a remainder slot only once it has been
// its own for this long, while the replica that loses it stops at once,
// so the turn of the remainder never lets two replicas use one slot (for
// requests shorter than the guard).
const rotationGuard = 2 * time.Second

// stableShare is share as it may be used now: the smaller of the shares
// now and rotationGuard ago. The shares of all replicas still add up to
// at most total, also while the remainder changes hands.
func stableShare(total float64, peers, rank int, now time.Time) int {
	return min(share(total, peers, rank, now), share(total, peers, rank, now.Add(-rotationGuard)))
}

// takeToken spends one token of the rate ceiling's bucket, if any (a
// replica's share of the rate, burst of one second's share).
func (ds *destinations) takeToken(d *dest, now time.Time) bool {
	rate := d.shared.RateLimit
	if rate <= 0 {
		return true
	}
	rate /= float64(max(1, d.peers))
	burst := math.Max(1, rate)
	if d.tokensAt.IsZero() {
		d.tokens = burst
	} else {
		d.tokens = math.Min(burst, d.tokens+now.Sub(d.tokensAt).Seconds()*rate)
	}
	d.tokensAt = now
	if d.tokens < 1 {
		return false
	}
	d.tokens--
	return true
}

// done records how the request ended and frees its slot. retryAfter is the
// response's Retry-After as a delay (hasRetryAfter false when there was none).
func (p *permit) done(v verdict, latency time.Duration, retryAfter time.Duration, hasRetryAfter bool) {
	ds, d := p.ds, p.d
	now := time.Now()
	ds.mu.Lock()
	d.inflight--
	d.wakeWaiters()
	var change func(*task.Destination, time.Time) bool
	var msg string
	if v.failure {
		d.failures++
		d.win.failures++
	} else {
		d.failures = 0
		if v.congestion {
			d.win.failures++
		} else {
			d.win.successes++
		}
		d.win.answered++
		d.win.latSum += latency
	}
	switch {
	case v.congestion:
		d.win.congested = true
		if !p.started.Before(d.lastDecrease) { // one cut per round trip
			d.limit = math.Max(1, math.Floor(d.limit/2))
			d.lastDecrease = now
		}
		if hasRetryAfter {
			if until := now.Add(min(retryAfter, ds.policy.MaxBackoff)); until.After(d.holdUntil) {
				d.holdUntil = until
			}
		}
	case !v.failure && d.inflight+1 >= int(d.limit):
		// Grow only while the limit is in use: an idle limit proves nothing.
		if ds.learned(d) {
			d.limit += 0.25 / math.Max(1, d.limit) // about +1 every 4 round trips
		} else {
			d.limit++ // slow start: doubles each round trip
		}
		d.limit = math.Min(d.limit, float64(ds.workers))
	}
	switch {
	case p.probe && !v.failure:
		d.probing = false
		d.failures = 0
		d.limit = math.Min(d.limit, ds.policy.InitialLimit)
		msg = "destination circuit breaker: closed, the probe was answered"
		change = func(r *task.Destination, now time.Time) bool {
			if r.Breaker == task.BreakerClosed {
				return false
			}
			r.Breaker, r.Failures, r.Cooldown, r.ProbeOwner, r.ProbeUntil, r.OpenUntil = task.BreakerClosed, 0, 0, "", time.Time{}, time.Time{}
			return true
		}
	case p.probe: // the probe failed (or was refused): open again, longer
		d.probing = false
		failures := d.failures
		msg = "destination circuit breaker: the probe failed, open again"
		change = func(r *task.Destination, now time.Time) bool {
			cd := time.Duration(float64(r.Cooldown) * cooldownGrowth)
			cd = min(max(cd, ds.policy.MinCooldown), ds.policy.MaxCooldown)
			r.Breaker, r.Cooldown, r.OpenUntil, r.ProbeOwner, r.ProbeUntil = task.BreakerOpen, cd, now.Add(cd), "", time.Time{}
			r.Failures = max(r.Failures+1, failures)
			return true
		}
	case d.failures >= ds.policy.BreakerThreshold && d.shared.Breaker == task.BreakerClosed:
		failures := d.failures
		msg = "destination circuit breaker: open"
		change = func(r *task.Destination, now time.Time) bool {
			if r.Breaker != task.BreakerClosed {
				return false // another replica opened it
			}
			cd := ds.policy.MinCooldown
			r.Breaker, r.Cooldown, r.OpenUntil, r.Failures = task.BreakerOpen, cd, now.Add(cd), failures
			return true
		}
		// Stop sending from here at once; the store decides the details.
		d.shared.Breaker, d.shared.OpenUntil, d.shared.Failures = task.BreakerOpen, now.Add(ds.policy.MinCooldown), failures
	}
	ds.setGauges(d)
	ds.countRequest(d, v)
	ds.mu.Unlock()
	if change == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	row, err := ds.store.ChangeDestination(ctx, d.name, change)
	if err != nil {
		// The next sync brings the shared state back; until then the local
		// state above applies.
		ds.log.Warn("destination circuit breaker: store the change", "spool.destination", d.name, "error.message", err.Error())
		return
	}
	ds.mu.Lock()
	d.shared = mergeShared(d.shared, row)
	ds.setGauges(d)
	ds.mu.Unlock()
	level := slog.LevelWarn
	if row.Breaker == task.BreakerClosed {
		level = slog.LevelInfo
	}
	ds.log.Log(ctx, level, msg, "spool.destination", d.name, "spool.destination.failures", row.Failures,
		"spool.destination.cooldown", row.Cooldown.String(), "spool.destination.breaker", string(row.Breaker))
}

// wakeWaiters tells the tasks parked for d that a slot is free. Called
// with mu held.
func (d *dest) wakeWaiters() {
	if d.waiters > 0 {
		close(d.freed)
		d.freed = make(chan struct{})
	}
}

// release frees the slot of a request that was never sent.
func (p *permit) release() {
	ds, d := p.ds, p.d
	ds.mu.Lock()
	defer ds.mu.Unlock()
	d.inflight--
	if p.probe {
		d.probing = false // the probe's claim expires in the store
	}
	d.wakeWaiters()
	ds.setGauges(d)
}

// ensure makes sure the process knows the destination and has a fresh
// view of it: a new destination, or one this replica has not reported for
// longer than the live window (it has dropped out of the shares), is
// synced at once, so its first requests already respect the shared state
// (an open breaker, the other replicas' shares).
func (ds *destinations) ensure(ctx context.Context, name string) error {
	now := time.Now()
	ds.mu.Lock()
	d, ok := ds.m[name]
	if !ok {
		d = &dest{name: name, limit: ds.policy.InitialLimit, freed: make(chan struct{}), lastUsed: now, lastGrowth: now,
			shared: task.Destination{Name: name, Breaker: task.BreakerClosed}}
		d.label = ds.label(name)
		if m := ds.metrics; m != nil && d.label != "other" {
			d.gLimit = m.DestinationLimit.WithLabelValues(d.label)
			d.gInFlight = m.DestinationInFlight.WithLabelValues(d.label)
			d.gOpen = m.DestinationBreakerOpen.WithLabelValues(d.label)
		}
		ds.m[name] = d
	}
	stale := !d.synced || now.Sub(d.lastSync) > ds.live()
	switch {
	case !stale || (d.synced && d.syncing):
		ds.mu.Unlock()
		return nil // fresh, or another task is refreshing a known view
	case d.syncing:
		// Another task is making the first sync: wait for it rather than
		// queue a transaction of our own on the destination's row (at
		// 1,000 tasks/s to a new receiver, dozens of them held the pool's
		// connections and stalled the enqueues).
		done := d.synced1
		ds.mu.Unlock()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.syncing, d.wanted = true, true
	first := !d.synced
	if first {
		d.synced1 = make(chan struct{})
	}
	ds.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := ds.sync(sctx, []string{name})
	ds.mu.Lock()
	d.syncing = false
	if err != nil {
		d.synced = true // send on the local view; the periodic sync retries
	}
	if first {
		close(d.synced1)
	}
	ds.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ds.log.Debug("destination: sync failed; sending on the local state", "spool.destination", name, "error.message", err.Error())
	}
	return nil
}

// run syncs the active destinations every SyncInterval until ctx ends.
func (ds *destinations) run(ctx context.Context) {
	t := time.NewTicker(ds.policy.SyncInterval)
	defer t.Stop()
	var lastErr time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		names := ds.active(time.Now())
		if len(names) == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, ds.policy.SyncInterval*liveFactor)
		err := ds.sync(sctx, names)
		cancel()
		if err != nil && ctx.Err() == nil && time.Since(lastErr) > 10*time.Second {
			ds.log.Warn("sync destinations", "destinations", len(names), "error.message", err.Error())
			lastErr = time.Now()
		}
	}
}

// active lists the destinations to report: those this replica used since
// its last report. A replica that stops sending somewhere stops reporting
// it, so it drops out of that destination's shares after the live window
// instead of holding a share it does not use. Idle ones are forgotten.
func (ds *destinations) active(now time.Time) []string {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	var names []string
	for name, d := range ds.m {
		switch {
		case d.inflight > 0 || d.waiters > 0 || d.wanted:
			names = append(names, name)
		case now.Sub(d.lastUsed) > destIdle:
			ds.forget(d)
		}
	}
	return names
}

// sync reports the window of each named destination and takes in the
// shared state.
func (ds *destinations) sync(ctx context.Context, names []string) error {
	now := time.Now()
	ds.mu.Lock()
	reports := make([]store.DestinationReport, 0, len(names))
	windows := make(map[string]window, len(names)) // to give back on failure
	for _, name := range names {
		d := ds.m[name]
		if d == nil {
			continue
		}
		r := store.DestinationReport{
			Name: name, InFlight: d.inflight, Successes: d.win.successes, Failures: d.win.failures,
			Congested: d.win.congested, Saturated: d.win.saturated, Limit: d.limit, Peers: d.peers,
		}
		if d.win.answered > 0 {
			r.Latency = d.win.latSum / time.Duration(d.win.answered)
		}
		if d.holdUntil.After(now) {
			r.Hold = d.holdUntil.Sub(now)
		}
		windows[name] = d.win
		d.win = window{}
		d.wanted = false
		reports = append(reports, r)
	}
	ds.mu.Unlock()
	rows, err := ds.store.SyncDestinations(ctx, ds.replica, ds.live(), reports, ds.policy.apply)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if err != nil {
		for name, w := range windows { // count the window in the next report
			if d := ds.m[name]; d != nil {
				d.win.merge(w)
				d.wanted = true
			}
		}
		return err
	}
	for _, row := range rows {
		d := ds.m[row.Name]
		if d == nil {
			continue
		}
		local := d.shared
		d.shared, d.peers, d.rank, d.synced, d.lastSync = row.Destination, max(1, row.Stats.Replicas), row.Rank, true, now
		if local.Breaker == task.BreakerOpen && row.Breaker == task.BreakerClosed && d.failures >= ds.policy.BreakerThreshold {
			// Opened here and the store write has not landed yet: keep it open.
			d.shared.Breaker, d.shared.OpenUntil = local.Breaker, local.OpenUntil
		}
		ds.setGauges(d)
	}
	return nil
}

// apply is the shared half of the adaptive limit, run by the store under
// the destination's row lock for each replica's report.
func (p DestinationPolicy) apply(d *task.Destination, r store.DestinationReport, now time.Time) bool {
	changed := false
	if d.Limit <= 0 {
		d.Limit, changed = p.InitialLimit, true
	}
	peers := float64(max(1, r.Peers))
	ceiling := p.MaxLimit
	if d.MaxConcurrency > 0 {
		ceiling = math.Min(ceiling, float64(d.MaxConcurrency))
	}
	spaced := now.Sub(d.LimitDecreasedAt) >= decreaseSpacing
	switch {
	case r.Congested && spaced:
		// The replica already halved its own limit; the shared one becomes
		// what all replicas would send at that rate, at least one.
		d.Limit = math.Max(1, math.Min(d.Limit/2, math.Max(r.Limit, 1)*peers))
		d.LimitDecreasedAt, changed = now, true
	case r.Congested:
	case d.LimitDecreasedAt.IsZero():
		// Slow start: no shared limit binds yet (each replica doubles its
		// own each round trip); the row shows what they allow together.
		if total := math.Min(ceiling, math.Round(r.Limit*peers)); math.Abs(total-d.Limit) >= 1 {
			d.Limit, changed = total, true
		}
	case r.Saturated && r.Successes > 0 && spaced:
		// Additive increase: about max(1, 10%) a second in all, shared
		// among the replicas that report it.
		if next := math.Min(ceiling, d.Limit+math.Max(1, d.Limit/10)/peers); next > d.Limit {
			d.Limit, changed = next, true
		}
	}
	if d.Limit > ceiling {
		d.Limit, changed = ceiling, true
	}
	if r.Hold > 0 {
		if until := now.Add(min(r.Hold, p.MaxBackoff)); until.After(d.HoldUntil.Add(100 * time.Millisecond)) {
			d.HoldUntil, changed = until, true
		}
	}
	return changed
}

// jitter is a random duration in [lo, hi).
func jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo)
}

// label is the metric label of a destination: its name while fewer than
// maxDestinationSeries have one, else "other". Called with mu held.
func (ds *destinations) label(name string) string {
	if ds.metrics == nil {
		return ""
	}
	if ds.labels[name] || len(ds.labels) < maxDestinationSeries {
		ds.labels[name] = true
		return name
	}
	return "other"
}

// forget drops an idle destination and its series. Called with mu held.
func (ds *destinations) forget(d *dest) {
	delete(ds.m, d.name)
	if m := ds.metrics; m != nil && d.label == d.name {
		delete(ds.labels, d.name)
		m.DestinationLimit.DeleteLabelValues(d.name)
		m.DestinationInFlight.DeleteLabelValues(d.name)
		m.DestinationBreakerOpen.DeleteLabelValues(d.name)
		m.DestinationRequests.DeletePartialMatch(map[string]string{"destination": d.name})
		m.DestinationDeferred.DeletePartialMatch(map[string]string{"destination": d.name})
	}
}

// setGauges exports d's limit, in-flight count and breaker. Called with mu held.
func (ds *destinations) setGauges(d *dest) {
	if d.gLimit == nil {
		return
	}
	d.gLimit.Set(float64(ds.capacity(d, time.Now())))
	d.gInFlight.Set(float64(d.inflight))
	open := 0.0
	if d.shared.Breaker != task.BreakerClosed {
		open = 1
	}
	d.gOpen.Set(open)
}

func (ds *destinations) countRequest(d *dest, v verdict) {
	if m := ds.metrics; m != nil {
		outcome := "answered"
		switch {
		case v.refused:
			outcome = "refused"
		case v.failure:
			outcome = "failed"
		}
		m.DestinationRequests.WithLabelValues(d.label, outcome).Inc()
	}
}

func (ds *destinations) countDeferred(d *dest, kind string) {
	if m := ds.metrics; m != nil {
		m.DestinationDeferred.WithLabelValues(d.label, kind).Inc()
	}
}
