package dispatch

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/telemetry"
)

// Maintainer runs the work only one replica should do: enqueue the due
// runs of periodic schedules, promote due scheduled and retrying tasks,
// rescue expired leases, prune old finished tasks and idle destinations. Every replica runs one; the store's leader
// lease elects which acts.
type Maintainer struct {
	Store     store.Store
	Logger    *slog.Logger
	Metrics   *telemetry.Metrics
	Owner     string        // unique per process
	Retention time.Duration // finished tasks older than this are pruned
	// IdempotencyRetention is how long an idempotency key stays reserved
	// after its first use once its task is pruned (default
	// task.DefaultIdempotencyRetention).
	IdempotencyRetention time.Duration
	Interval             time.Duration // default 1s: promotion and rescue cadence
	// PruneEvery is how often pruning runs (default 1m); each run deletes in
	// batches until nothing old is left.
	PruneEvery time.Duration
	// StatsEvery is how often queue depth and the oldest due age are counted
	// for metrics (default 5s). Only the leader counts and exports them: one
	// scan per interval for the whole cluster, and no double counting when
	// dashboards sum over replicas.
	StatsEvery time.Duration
	// RefreshStats, if set, runs every tick after promotion: the store's
	// own upkeep of its planner statistics (PostgreSQL analyzes the task
	// table when a backlog has outgrown them). It reports whether it did
	// anything.
	RefreshStats func(context.Context) (bool, error)

	exported       map[string]bool // queues whose depth series exist
	scheduleLabels map[string]bool // schedules with run series of their own
	pruning        bool            // a prune run has more to delete: go on next tick
	pruned         int             // tasks deleted by the current prune run
}

// pruneBatch is how many finished tasks one prune statement deletes: a
// short transaction (on SQLite, a few milliseconds of the write lock) that
// enqueues and leases wait behind at most once.
const pruneBatch = 500

// pruneBudget bounds the time one tick spends pruning, pauses included.
// After each statement the maintainer rests as long as it took, so a
// large prune takes at most about half of what the database can do (a
// million tasks at some ten thousand a second here), leasing keeps its
// share, and promotion, rescue and the gauges keep their one-second
// cadence between the slices.
const pruneBudget = 250 * time.Millisecond

// maxScheduleSeries caps the schedules with metric series of their own in
// one process; the others share the label "other".
const maxScheduleSeries = 100

// claimBatch is how many due schedules one ClaimSchedules call takes;
// claimRounds bounds the calls per tick, so a backlog of due schedules
// (after downtime) is worked through without starving the other work.
const (
	claimBatch  = 100
	claimRounds = 10
)

// destinationIdle is how long a destination's state outlives the last
// delivery to it: replicas' reports older than this are dropped, and a
// destination with no ceilings and a closed breaker that nobody reported
// on or changed for this long is forgotten (it starts afresh if used
// again). An hour keeps what was learnt across a lull between batches.
const destinationIdle = time.Hour

// statsTimeout bounds the counting queries so a huge backlog cannot stall
// maintenance; a slow count just leaves the previous values in place.
const statsTimeout = 3 * time.Second

// leaderTTL is how long a dead leader blocks maintenance.
func (m *Maintainer) leaderTTL() time.Duration { return max(10*time.Second, 5*m.Interval) }

// Run maintains until ctx ends, then resigns so another replica takes over
// at once.
func (m *Maintainer) Run(ctx context.Context) {
	if m.Interval <= 0 {
		m.Interval = time.Second
	}
	if m.PruneEvery <= 0 {
		m.PruneEvery = time.Minute
	}
	if m.StatsEvery <= 0 {
		m.StatsEvery = 5 * time.Second
	}
	if m.IdempotencyRetention <= 0 {
		m.IdempotencyRetention = task.DefaultIdempotencyRetention
	}
	if m.Logger == nil {
		m.Logger = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	var leading bool
	var lastPrune, lastStats time.Time
	defer func() {
		if leading {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := m.Store.ResignLeadership(rctx, m.Owner); err != nil {
				m.Logger.Warn("resign leadership", "error.message", err.Error())
			}
		}
		m.setLeader(false)
	}()
	for {
		actx, cancel := context.WithTimeout(ctx, m.leaderTTL()/2)
		ok, err := m.Store.AcquireLeadership(actx, m.Owner, m.leaderTTL())
		cancel()
		if ctx.Err() != nil {
			// Stopping: the renewal failed for that reason, not because
			// another replica leads, so resign (deferred) if leading.
			return
		}
		if err != nil {
			m.Logger.Warn("leader election", "error.message", err.Error())
		}
		if ok != leading {
			leading = ok
			m.setLeader(ok)
			m.Logger.Info("leadership changed", "spool.leader", ok)
			lastStats = time.Time{}
		}
		if leading {
			m.tick(ctx, &lastPrune)
			if time.Since(lastStats) >= m.StatsEvery {
				lastStats = time.Now()
				m.exportDepths(ctx)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maintTimeout bounds one maintenance step, so a database that stops
// answering cannot wedge the leader (it gives up and tries next tick).
const maintTimeout = 30 * time.Second

func (m *Maintainer) tick(ctx context.Context, lastPrune *time.Time) {
	ctx, cancel := context.WithTimeout(ctx, maintTimeout)
	defer cancel()
	if n, err := m.Store.RescueExpired(ctx); err != nil {
		m.warn(ctx, "rescue expired leases", err)
	} else if n > 0 {
		m.Logger.Warn("rescued tasks whose lease expired", "tasks", n)
		if m.Metrics != nil {
			m.Metrics.Rescued.Add(float64(n))
		}
	}
	m.claimSchedules(ctx)
	if _, err := m.Store.PromoteDue(ctx); err != nil {
		m.warn(ctx, "promote due tasks", err)
	}
	if m.RefreshStats != nil {
		if ran, err := m.RefreshStats(ctx); err != nil {
			m.warn(ctx, "refresh planner statistics", err)
		} else if ran {
			m.Logger.Debug("refreshed planner statistics")
		}
	}
	if n, err := m.Store.FoldCounts(ctx); err != nil {
		m.warn(ctx, "fold task counts", err)
	} else if n > 0 {
		m.Logger.Debug("folded task counts", "totals", n)
	}
	if !m.pruning {
		if time.Since(*lastPrune) < m.PruneEvery {
			return
		}
		*lastPrune = time.Now()
	}
	m.pruning = m.prune(ctx)
	if m.pruning {
		return
	}
	if m.pruned > 0 {
		m.Logger.Info("pruned finished tasks", "tasks", m.pruned, "retention", m.Retention.String())
		m.pruned = 0
	}
	if total := m.pruneAll(ctx, "release idempotency keys", m.IdempotencyRetention, m.Store.PruneIdempotencyKeys); total > 0 {
		m.Logger.Info("released idempotency keys", "keys", total, "retention", m.IdempotencyRetention.String())
	}
	if n, err := m.Store.PruneDestinations(ctx, destinationIdle); err != nil {
		m.warn(ctx, "prune idle destinations", err)
	} else if n > 0 {
		m.Logger.Info("pruned idle destinations", "destinations", n, "idle", destinationIdle.String())
	}
}

// prune deletes old finished tasks in batches of pruneBatch, resting after
// each as long as it took, for at most pruneBudget; it reports whether
// more are left for the next tick.
func (m *Maintainer) prune(ctx context.Context) bool {
	start := time.Now()
	for ctx.Err() == nil {
		began := time.Now()
		n, err := m.Store.Prune(ctx, m.Retention, pruneBatch)
		if err != nil {
			m.warn(ctx, "prune finished tasks", err)
			return false
		}
		m.pruned += n
		if n < pruneBatch {
			return false
		}
		took := time.Since(began)
		if time.Since(start)+took >= pruneBudget {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(took):
		}
	}
	return false
}

// pruneAll runs prune in batches of pruneBatch until one comes back short,
// and returns how many rows went.
func (m *Maintainer) pruneAll(ctx context.Context, what string, retention time.Duration,
	prune func(context.Context, time.Duration, int) (int, error)) int {
	total := 0
	for ctx.Err() == nil {
		n, err := prune(ctx, retention, pruneBatch)
		if err != nil {
			m.warn(ctx, what, err)
			break
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	return total
}

// claimSchedules enqueues the due runs of periodic schedules. Each claim
// enqueues a schedule's runs and advances it in one transaction, so a
// leader that dies between two calls loses nothing and its successor
// repeats nothing.
func (m *Maintainer) claimSchedules(ctx context.Context) {
	for range claimRounds {
		claims, err := m.Store.ClaimSchedules(ctx, claimBatch)
		if err != nil {
			m.warn(ctx, "enqueue scheduled runs", err)
			return
		}
		for _, c := range claims {
			m.countClaim(c)
		}
		if len(claims) < claimBatch {
			return
		}
	}
}

func (m *Maintainer) countClaim(c store.ScheduleClaim) {
	var enqueued, existing int
	for _, e := range c.Enqueued {
		if e.Existing {
			existing++
			continue
		}
		enqueued++
		if m.Metrics != nil {
			m.Metrics.ScheduleLag.Observe(max(c.Now.Sub(e.Task.ScheduledFor), 0).Seconds())
		}
	}
	if c.Skipped > 0 {
		m.Logger.Warn("schedule missed runs", "spool.schedule", c.Schedule, "runs", c.Skipped)
	}
	if enqueued+existing > 0 {
		m.Logger.Debug("enqueued scheduled runs", "spool.schedule", c.Schedule, "tasks", enqueued, "existing", existing)
	}
	if m.Metrics == nil {
		return
	}
	label := m.scheduleLabel(c.Schedule)
	for outcome, n := range map[string]int{"enqueued": enqueued, "existing": existing, "skipped": c.Skipped} {
		if n > 0 {
			m.Metrics.ScheduleRuns.WithLabelValues(label, outcome).Add(float64(n))
		}
	}
}

// scheduleLabel is a schedule's metric label: its name while fewer than
// maxScheduleSeries have one, else "other".
func (m *Maintainer) scheduleLabel(name string) string {
	if m.scheduleLabels == nil {
		m.scheduleLabels = make(map[string]bool)
	}
	if m.scheduleLabels[name] || len(m.scheduleLabels) < maxScheduleSeries {
		m.scheduleLabels[name] = true
		return name
	}
	return "other"
}

func (m *Maintainer) warn(ctx context.Context, what string, err error) {
	if ctx.Err() == nil {
		m.Logger.Warn(what, "error.message", err.Error())
	}
}

func (m *Maintainer) setLeader(on bool) {
	if m.Metrics == nil {
		return
	}
	if on {
		m.Metrics.IsLeader.Set(1)
	} else {
		m.Metrics.IsLeader.Set(0)
		// A follower exports no depth: the new leader does.
		m.Metrics.QueueDepth.Reset()
		m.Metrics.OldestDue.Reset()
		m.Metrics.Paused.Reset()
		m.exported = nil
	}
}

// exportDepths counts tasks by queue and state, and each queue's oldest due
// age, into the metrics.
func (m *Maintainer) exportDepths(ctx context.Context) {
	if m.Metrics == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	queues, err := m.Store.ListQueues(ctx)
	if err != nil {
		m.warn(ctx, "count queue depth", err)
		return
	}
	oldest, err := m.Store.OldestDue(ctx)
	if err != nil {
		m.warn(ctx, "find oldest due tasks", err)
		return
	}
	// Set the new values first, then drop series of queues that are gone,
	// so a scrape never sees a gap.
	seen := make(map[string]bool, len(queues))
	for _, q := range queues {
		seen[q.Name] = true
		for state, n := range q.Counts {
			m.Metrics.QueueDepth.WithLabelValues(q.Name, string(state)).Set(float64(n))
		}
		m.Metrics.OldestDue.WithLabelValues(q.Name).Set(oldest[q.Name].Seconds())
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		m.Metrics.Paused.WithLabelValues(q.Name).Set(paused)
	}
	for name := range m.exported {
		if !seen[name] {
			m.Metrics.QueueDepth.DeletePartialMatch(prometheus.Labels{"queue": name})
			m.Metrics.OldestDue.DeleteLabelValues(name)
			m.Metrics.Paused.DeleteLabelValues(name)
		}
	}
	m.exported = seen
}
