package store

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/task"
)

// What both drivers do alike with destinations: validate the operator's
// ceilings, order a sync's reports, and sum the live reports into Stats.
// The SQL differs by driver; this does not.

// Bounds of the operator's ceilings (task.DestinationPatch). The schemas
// check them too.
const (
	MaxDestinationConcurrency = 100_000
	MaxDestinationRateLimit   = 1e6
)

// InvalidError is a value the store refuses: a setting out of its range.
// Drivers wrap it (errors.As finds it) and the API answers 422 naming
// Field.
type InvalidError struct {
	Field  string // as the API names it ("max_concurrency")
	Detail string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Detail }

// ValidateDestinationPatch checks the ceilings of p (nil fields are not
// set, so always valid).
func ValidateDestinationPatch(p task.DestinationPatch) error {
	if c := p.MaxConcurrency; c != nil && (*c < 0 || *c > MaxDestinationConcurrency) {
		return &InvalidError{Field: "max_concurrency", Detail: fmt.Sprintf("%d is outside 0..%d", *c, MaxDestinationConcurrency)}
	}
	if r := p.RateLimit; r != nil && (math.IsNaN(*r) || *r < 0 || *r > MaxDestinationRateLimit) {
		return &InvalidError{Field: "rate_limit", Detail: fmt.Sprintf("%v is not a number in 0..%g", *r, MaxDestinationRateLimit)}
	}
	return nil
}

// SyncOrder returns the indexes of reports in name order: SyncDestinations
// locks the rows in that order, so that replicas syncing overlapping sets
// never wait on each other in a cycle. An empty name, or one named twice
// (its row would be read twice before apply changes it once), is an error.
func SyncOrder(reports []DestinationReport) ([]int, error) {
	order := make([]int, len(reports))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(reports[a].Name, reports[b].Name) })
	for k, i := range order {
		if reports[i].Name == "" {
			return nil, fmt.Errorf("sync destinations: report %d has no destination name", i)
		}
		if k > 0 && reports[order[k-1]].Name == reports[i].Name {
			return nil, fmt.Errorf("sync destinations: destination %q reported twice", reports[i].Name)
		}
	}
	return order, nil
}

// ReplicaReport is one replica's stored report of one destination, as
// drivers read it back to sum.
type ReplicaReport struct {
	Replica   string
	InFlight  int
	Successes int64
	Failures  int64
	Latency   time.Duration
}

// SumReports folds the live reports of one destination into its Stats,
// and gives replica's rank: how many of the reporting replicas have an id
// below it. Latency is the mean over the answered requests, so each
// report's mean weighs by its Successes.
func SumReports(replica string, rs []ReplicaReport) (task.DestinationStats, int) {
	var (
		st      task.DestinationStats
		rank    int
		latency float64 // sum of latency x successes, in float: no overflow
	)
	for _, r := range rs {
		st.Replicas++
		st.InFlight += r.InFlight
		st.Successes += r.Successes
		st.Failures += r.Failures
		latency += float64(r.Latency) * float64(r.Successes)
		if r.Replica < replica {
			rank++
		}
	}
	if st.Successes > 0 {
		st.Latency = time.Duration(latency / float64(st.Successes))
	}
	return st, rank
}

// ApplyPolicy calls fn on a copy of stored and returns the copy with what
// fn may not change put back from stored (name, ceilings, creation and
// update times, Stats), and its policy times and Cooldown cut to what both
// schemas keep (microseconds, milliseconds), so that the row a driver
// returns is the row it wrote. The second result is fn's: write it or not.
func ApplyPolicy(stored task.Destination, fn func(d *task.Destination) bool) (task.Destination, bool) {
	d := stored
	if !fn(&d) {
		return stored, false
	}
	d.Name, d.MaxConcurrency, d.RateLimit = stored.Name, stored.MaxConcurrency, stored.RateLimit
	d.CreatedAt, d.UpdatedAt, d.Stats = stored.CreatedAt, stored.UpdatedAt, stored.Stats
	for _, t := range []*time.Time{&d.LimitDecreasedAt, &d.OpenUntil, &d.ProbeUntil, &d.HoldUntil} {
		if !t.IsZero() {
			*t = t.Truncate(time.Microsecond).UTC()
		}
	}
	d.Cooldown = d.Cooldown.Truncate(time.Millisecond)
	return d, true
}
