package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// Destination names used below; any string is a name to the store.
const (
	destA = "https://a.example:443"
	destB = "https://b.example:443"
	destC = "https://c.example:8443"
)

// liveLong counts every report of a test as live.
const liveLong = time.Hour

// noApply is an apply that changes nothing.
func noApply(*task.Destination, store.DestinationReport, time.Time) bool { return false }

// mustSync syncs reports for replica and checks one result per report, in
// report order.
func mustSync(t *testing.T, ctx context.Context, s store.Store, replica string, live time.Duration,
	apply func(*task.Destination, store.DestinationReport, time.Time) bool, reports ...store.DestinationReport) []store.DestinationSync {
	t.Helper()
	out, err := s.SyncDestinations(ctx, replica, live, reports, apply)
	if err != nil {
		t.Fatalf("SyncDestinations(%s, %d reports): %v", replica, len(reports), err)
	}
	if len(out) != len(reports) {
		t.Fatalf("SyncDestinations(%d reports) returned %d results", len(reports), len(out))
	}
	for i, d := range out {
		if d.Name != reports[i].Name {
			t.Fatalf("SyncDestinations result %d is %q, want %q (report order)", i, d.Name, reports[i].Name)
		}
	}
	return out
}

// mustChange calls ChangeDestination, which must succeed.
func mustChange(t *testing.T, ctx context.Context, s store.Store, name string, fn func(*task.Destination, time.Time) bool) task.Destination {
	t.Helper()
	d, err := s.ChangeDestination(ctx, name, fn)
	if err != nil {
		t.Fatalf("ChangeDestination(%s): %v", name, err)
	}
	return d
}

// mustGetDestination fetches a destination that must exist.
func mustGetDestination(t *testing.T, ctx context.Context, s store.Store, name string, live time.Duration) task.Destination {
	t.Helper()
	d, err := s.GetDestination(ctx, name, live)
	if err != nil {
		t.Fatalf("GetDestination(%s): %v", name, err)
	}
	return d
}

// policy is a destination's policy fields set to distinct values, times
// relative to now and at microsecond precision (what PostgreSQL keeps).
func policy(d *task.Destination, now time.Time, owner string) {
	d.Limit = 7.5
	d.LimitDecreasedAt = now.Add(-time.Second).Truncate(time.Microsecond)
	d.Breaker = task.BreakerHalfOpen
	d.Failures = 4
	d.OpenUntil = now.Add(30 * time.Second).Truncate(time.Microsecond)
	d.Cooldown = 30 * time.Second
	d.ProbeOwner = owner
	d.ProbeUntil = now.Add(10 * time.Second).Truncate(time.Microsecond)
	d.HoldUntil = now.Add(5 * time.Second).Truncate(time.Microsecond)
}

// diffPolicy lists the policy and ceiling fields in which got and want
// differ (times to within storedRes).
func diffPolicy(got, want task.Destination) []string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	if got.Name != want.Name {
		add("Name", got.Name, want.Name)
	}
	if got.MaxConcurrency != want.MaxConcurrency {
		add("MaxConcurrency", got.MaxConcurrency, want.MaxConcurrency)
	}
	if got.RateLimit != want.RateLimit {
		add("RateLimit", got.RateLimit, want.RateLimit)
	}
	if got.Limit != want.Limit {
		add("Limit", got.Limit, want.Limit)
	}
	if got.Breaker != want.Breaker {
		add("Breaker", got.Breaker, want.Breaker)
	}
	if got.Failures != want.Failures {
		add("Failures", got.Failures, want.Failures)
	}
	if got.Cooldown != want.Cooldown {
		add("Cooldown", got.Cooldown, want.Cooldown)
	}
	if got.ProbeOwner != want.ProbeOwner {
		add("ProbeOwner", got.ProbeOwner, want.ProbeOwner)
	}
	times := []struct {
		name string
		g, w time.Time
	}{
		{"LimitDecreasedAt", got.LimitDecreasedAt, want.LimitDecreasedAt},
		{"OpenUntil", got.OpenUntil, want.OpenUntil},
		{"ProbeUntil", got.ProbeUntil, want.ProbeUntil},
		{"HoldUntil", got.HoldUntil, want.HoldUntil},
	}
	for _, tm := range times {
		if tm.g.IsZero() != tm.w.IsZero() || tm.g.Sub(tm.w).Abs() > storedRes {
			add(tm.name, tm.g, tm.w)
		}
	}
	return d
}

// checkDestination fails with every differing policy and ceiling field.
func checkDestination(t *testing.T, what string, got, want task.Destination) {
	t.Helper()
	for _, d := range diffPolicy(got, want) {
		t.Errorf("%s: %s", what, d)
	}
}

// fresh is a destination as the store creates it.
func freshDestination(name string) task.Destination {
	return task.Destination{Name: name, Breaker: task.BreakerClosed}
}

func testDestinations(t *testing.T, newStore NewStoreFunc) {
	t.Run("SyncCreatesWithZeroPolicy", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		r := store.DestinationReport{Name: destA, InFlight: 3, Successes: 10, Failures: 2, Latency: 40 * time.Millisecond}
		var seen []task.Destination
		before := time.Now()
		out := mustSync(t, ctx, s, "r1", liveLong, func(d *task.Destination, got store.DestinationReport, now time.Time) bool {
			seen = append(seen, *d)
			checkBetween(t, "apply's now", now, before, time.Now())
			if got.Name != r.Name || got.Successes != r.Successes || got.Latency != r.Latency {
				t.Errorf("apply got report %+v, want %+v", got, r)
			}
			return false
		}, r)
		after := time.Now()
		if len(seen) != 1 {
			t.Fatalf("apply ran %d times, want 1", len(seen))
		}
		checkDestination(t, "the row apply saw", seen[0], freshDestination(destA))
		got := out[0]
		checkDestination(t, "synced", got.Destination, freshDestination(destA))
		checkBetween(t, "CreatedAt", got.CreatedAt, before, after)
		checkBetween(t, "UpdatedAt", got.UpdatedAt, before, after)
		want := task.DestinationStats{Replicas: 1, InFlight: 3, Successes: 10, Failures: 2, Latency: 40 * time.Millisecond}
		if got.Stats != want || got.Rank != 0 {
			t.Errorf("Stats, Rank = %+v, %d; want %+v, 0", got.Stats, got.Rank, want)
		}
		stored := mustGetDestination(t, ctx, s, destA, liveLong)
		checkDestination(t, "GetDestination", stored, freshDestination(destA))
		checkNear(t, "stored CreatedAt", stored.CreatedAt, got.CreatedAt)
		if stored.Stats != want {
			t.Errorf("GetDestination Stats = %+v, want %+v", stored.Stats, want)
		}
	})

	t.Run("SyncApplyPersists", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		var want task.Destination
		var applyNow time.Time
		out := mustSync(t, ctx, s, "r1", liveLong, func(d *task.Destination, _ store.DestinationReport, now time.Time) bool {
			policy(d, now, "r1")
			// The ceilings are the operator's: apply cannot change them.
			d.MaxConcurrency, d.RateLimit = 99, 99
			want, applyNow = *d, now
			want.MaxConcurrency, want.RateLimit = 0, 0
			return true
		}, store.DestinationReport{Name: destA})
		checkDestination(t, "returned after apply", out[0].Destination, want)
		checkNear(t, "UpdatedAt after apply", out[0].UpdatedAt, applyNow)
		// The next sync (another replica) starts from what was written.
		var seen task.Destination
		mustSync(t, ctx, s, "r2", liveLong, func(d *task.Destination, _ store.DestinationReport, _ time.Time) bool {
			seen = *d
			return false
		}, store.DestinationReport{Name: destA})
		checkDestination(t, "the row the next apply saw", seen, want)
		checkDestination(t, "GetDestination", mustGetDestination(t, ctx, s, destA, liveLong), want)
	})

	t.Run("SyncApplyFalseWritesNothing", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		first := mustSync(t, ctx, s, "r1", liveLong, noApply, store.DestinationReport{Name: destA})[0]
		time.Sleep(20 * time.Millisecond) // so that a write would move UpdatedAt
		out := mustSync(t, ctx, s, "r1", liveLong, func(d *task.Destination, _ store.DestinationReport, now time.Time) bool {
			policy(d, now, "r1")
			return false
		}, store.DestinationReport{Name: destA})
		checkDestination(t, "returned when apply said false", out[0].Destination, freshDestination(destA))
		got := mustGetDestination(t, ctx, s, destA, liveLong)
		checkDestination(t, "stored when apply said false", got, freshDestination(destA))
		if !got.UpdatedAt.Equal(first.UpdatedAt) || !out[0].UpdatedAt.Equal(first.UpdatedAt) {
			t.Errorf("UpdatedAt moved from %v to %v (returned %v) with nothing written", first.UpdatedAt, got.UpdatedAt, out[0].UpdatedAt)
		}
	})

	t.Run("SyncSeveralInReportOrder", func(t *testing.T) {
		// Reports out of name order come back in report order, each with
		// its own row and figures; apply runs once per report, in name
		// order (the order rows are locked in).
		ctx, s := setup(t, newStore)
		reports := []store.DestinationReport{{Name: destC, InFlight: 3}, {Name: destA, InFlight: 1}, {Name: destB, InFlight: 2}}
		var applied []string
		out := mustSync(t, ctx, s, "r1", liveLong, func(d *task.Destination, r store.DestinationReport, _ time.Time) bool {
			applied = append(applied, d.Name)
			if d.Name != r.Name {
				t.Errorf("apply got row %q with report %q", d.Name, r.Name)
			}
			d.Failures = r.InFlight * 10
			return true
		}, reports...)
		if want := []string{destA, destB, destC}; !slices.Equal(applied, want) {
			t.Errorf("apply ran on %v, want %v (name order)", applied, want)
		}
		for i, r := range reports {
			if out[i].Failures != r.InFlight*10 || out[i].Stats.InFlight != r.InFlight {
				t.Errorf("%s: Failures, Stats.InFlight = %d, %d; want %d, %d", r.Name, out[i].Failures, out[i].Stats.InFlight, r.InFlight*10, r.InFlight)
			}
		}
		ds, err := s.ListDestinations(ctx, liveLong)
		if err != nil {
			t.Fatalf("ListDestinations: %v", err)
		}
		var names []string
		for _, d := range ds {
			names = append(names, d.Name)
		}
		if want := []string{destA, destB, destC}; !slices.Equal(names, want) {
			t.Errorf("ListDestinations = %v, want %v (by name)", names, want)
		}
	})

	t.Run("SyncNothing", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		out, err := s.SyncDestinations(ctx, "r1", liveLong, nil, func(*task.Destination, store.DestinationReport, time.Time) bool {
			t.Error("apply called with no reports")
			return false
		})
		if err != nil || out != nil {
			t.Errorf("SyncDestinations(no reports) = %v, %v; want nil, nil", out, err)
		}
		if ds, err := s.ListDestinations(ctx, liveLong); err != nil || len(ds) != 0 {
			t.Errorf("ListDestinations = %v, %v; want none", ds, err)
		}
	})

	t.Run("StatsSumLiveReplicas", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// r3 reports, then falls silent for longer than live.
		const live = 700 * time.Millisecond
		mustSync(t, ctx, s, "r3", live, noApply, store.DestinationReport{Name: destA, InFlight: 100, Successes: 100, Failures: 100, Latency: time.Second})
		time.Sleep(live + 500*time.Millisecond)
		mustSync(t, ctx, s, "r2", live, noApply, store.DestinationReport{Name: destA, InFlight: 3, Successes: 30, Failures: 2, Latency: 200 * time.Millisecond})
		// r1's report replaces its earlier one: only the latest counts.
		mustSync(t, ctx, s, "r1", live, noApply, store.DestinationReport{Name: destA, InFlight: 50, Successes: 50, Failures: 50, Latency: time.Hour})
		out := mustSync(t, ctx, s, "r1", live, noApply, store.DestinationReport{Name: destA, InFlight: 2, Successes: 10, Failures: 1, Latency: 100 * time.Millisecond})
		// Latency: (10 x 100ms + 30 x 200ms) / 40.
		want := task.DestinationStats{Replicas: 2, InFlight: 5, Successes: 40, Failures: 3, Latency: 175 * time.Millisecond}
		if got := out[0].Stats; got != want {
			t.Errorf("synced Stats = %+v, want %+v (r3 is not live)", got, want)
		}
		if got := mustGetDestination(t, ctx, s, destA, live).Stats; got != want {
			t.Errorf("GetDestination Stats = %+v, want %+v", got, want)
		}
		ds, err := s.ListDestinations(ctx, liveLong)
		if err != nil || len(ds) != 1 {
			t.Fatalf("ListDestinations = %v, %v; want one", ds, err)
		}
		wantAll := task.DestinationStats{Replicas: 3, InFlight: 105, Successes: 140, Failures: 103,
			Latency: (10*100*time.Millisecond + 30*200*time.Millisecond + 100*time.Second) / 140}
		if ds[0].Stats != wantAll {
			t.Errorf("ListDestinations Stats with a long live = %+v, want %+v", ds[0].Stats, wantAll)
		}
	})

	t.Run("StatsLatencyWithoutSuccesses", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		out := mustSync(t, ctx, s, "r1", liveLong, noApply, store.DestinationReport{Name: destA, Failures: 5, Latency: time.Second})
		if want := (task.DestinationStats{Replicas: 1, Failures: 5}); out[0].Stats != want {
			t.Errorf("Stats = %+v, want %+v (no answered request: no latency)", out[0].Stats, want)
		}
	})

	t.Run("Rank", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// Reporting order differs from id order.
		for _, r := range []string{"b", "c", "a"} {
			mustSync(t, ctx, s, r, liveLong, noApply, store.DestinationReport{Name: destA})
		}
		for want, r := range []string{"a", "b", "c"} {
			out := mustSync(t, ctx, s, r, liveLong, noApply, store.DestinationReport{Name: destA})
			if out[0].Rank != want || out[0].Stats.Replicas != 3 {
				t.Errorf("replica %s: Rank, Replicas = %d, %d; want %d, 3", r, out[0].Rank, out[0].Stats.Replicas, want)
			}
		}
		// A replica that reports on another destination only ranks there.
		if out := mustSync(t, ctx, s, "c", liveLong, noApply, store.DestinationReport{Name: destB}); out[0].Rank != 0 {
			t.Errorf("replica c alone on %s: Rank = %d, want 0", destB, out[0].Rank)
		}
	})

	t.Run("ChangeDestination", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		before := time.Now()
		d := mustChange(t, ctx, s, destA, func(d *task.Destination, now time.Time) bool {
			checkDestination(t, "the row fn saw", *d, freshDestination(destA))
			checkBetween(t, "fn's now", now, before, time.Now())
			return false
		})
		checkDestination(t, "created by ChangeDestination", d, freshDestination(destA))
		time.Sleep(20 * time.Millisecond)
		var want task.Destination
		var fnNow time.Time
		d = mustChange(t, ctx, s, destA, func(d *task.Destination, now time.Time) bool {
			policy(d, now, "r1")
			d.MaxConcurrency = 5 // not fn's to change
			want, fnNow = *d, now
			want.MaxConcurrency = 0
			return true
		})
		checkDestination(t, "returned by ChangeDestination", d, want)
		checkNear(t, "UpdatedAt", d.UpdatedAt, fnNow)
		checkDestination(t, "GetDestination", mustGetDestination(t, ctx, s, destA, liveLong), want)
		if d.Stats != (task.DestinationStats{}) {
			t.Errorf("ChangeDestination filled Stats %+v", d.Stats)
		}
	})

	t.Run("ChangeDestinationSerializes", func(t *testing.T) {
		// Twenty callers each add one failure: under the row lock none is
		// lost, and each saw a different count.
		ctx, s := setup(t, newStore)
		const n = 20
		var wg sync.WaitGroup
		counts := make([]int, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				d, err := s.ChangeDestination(ctx, destA, func(d *task.Destination, _ time.Time) bool {
					d.Failures++
					return true
				})
				counts[i], errs[i] = d.Failures, err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("ChangeDestination %d: %v", i, err)
			}
		}
		if got := mustGetDestination(t, ctx, s, destA, liveLong).Failures; got != n {
			t.Errorf("Failures = %d after %d concurrent increments", got, n)
		}
		slices.Sort(counts)
		for i, c := range counts {
			if c != i+1 {
				t.Fatalf("the callers saw counts %v, want 1..%d each once", counts, n)
			}
		}
	})

	t.Run("ProbeOwnershipRace", func(t *testing.T) {
		// Replicas race to send the one probe of an open breaker: exactly
		// one becomes its owner.
		ctx, s := setup(t, newStore)
		mustChange(t, ctx, s, destA, func(d *task.Destination, now time.Time) bool {
			d.Breaker, d.OpenUntil = task.BreakerOpen, now
			return true
		})
		const n = 12
		var wg sync.WaitGroup
		won := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			me := fmt.Sprintf("replica-%02d", i)
			wg.Go(func() {
				d, err := s.ChangeDestination(ctx, destA, func(d *task.Destination, now time.Time) bool {
					if d.ProbeOwner != "" || d.Breaker != task.BreakerOpen {
						return false
					}
					d.Breaker, d.ProbeOwner, d.ProbeUntil = task.BreakerHalfOpen, me, now.Add(time.Minute)
					return true
				})
				won[i], errs[i] = d.ProbeOwner == me, err
			})
		}
		wg.Wait()
		winners := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("ChangeDestination %d: %v", i, errs[i])
			}
			if won[i] {
				winners++
			}
		}
		if winners != 1 {
			t.Errorf("%d replicas own the probe, want exactly 1", winners)
		}
		if d := mustGetDestination(t, ctx, s, destA, liveLong); d.Breaker != task.BreakerHalfOpen || d.ProbeOwner == "" {
			t.Errorf("breaker, probe owner = %s, %q; want half_open and an owner", d.Breaker, d.ProbeOwner)
		}
	})

	t.Run("UpdateDestination", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		conc, rate := 5, 2.5
		before := time.Now()
		d, err := s.UpdateDestination(ctx, destA, task.DestinationPatch{MaxConcurrency: &conc}, liveLong)
		if err != nil {
			t.Fatalf("UpdateDestination (create): %v", err)
		}
		want := freshDestination(destA)
		want.MaxConcurrency = 5
		checkDestination(t, "created by UpdateDestination", d, want)
		checkBetween(t, "CreatedAt", d.CreatedAt, before, time.Now())
		// A patch sets what it names and keeps the rest, and the adaptive
		// state is not the operator's to reset.
		mustChange(t, ctx, s, destA, func(d *task.Destination, _ time.Time) bool { d.Limit = 3; return true })
		mustSync(t, ctx, s, "r1", liveLong, noApply, store.DestinationReport{Name: destA, InFlight: 4})
		if d, err = s.UpdateDestination(ctx, destA, task.DestinationPatch{RateLimit: &rate}, liveLong); err != nil {
			t.Fatalf("UpdateDestination (rate): %v", err)
		}
		want.RateLimit, want.Limit = 2.5, 3
		checkDestination(t, "after patching rate_limit", d, want)
		if d.Stats.Replicas != 1 || d.Stats.InFlight != 4 {
			t.Errorf("UpdateDestination Stats = %+v, want one replica with 4 in flight", d.Stats)
		}
		// The bounds are allowed; zero clears a ceiling.
		top, topRate, zero := store.MaxDestinationConcurrency, store.MaxDestinationRateLimit, 0
		if d, err = s.UpdateDestination(ctx, destA, task.DestinationPatch{MaxConcurrency: &top, RateLimit: &topRate}, liveLong); err != nil {
			t.Fatalf("UpdateDestination (bounds): %v", err)
		}
		want.MaxConcurrency, want.RateLimit = top, topRate
		checkDestination(t, "at the bounds", d, want)
		if d, err = s.UpdateDestination(ctx, destA, task.DestinationPatch{MaxConcurrency: &zero}, liveLong); err != nil {
			t.Fatalf("UpdateDestination (clear): %v", err)
		}
		want.MaxConcurrency = 0
		checkDestination(t, "after clearing max_concurrency", d, want)
		checkDestination(t, "GetDestination", mustGetDestination(t, ctx, s, destA, liveLong), want)
	})

	t.Run("UpdateDestinationValidates", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		ints := func(v int) *int { return &v }
		floats := func(v float64) *float64 { return &v }
		for _, tc := range []struct {
			p     task.DestinationPatch
			field string
		}{
			{task.DestinationPatch{MaxConcurrency: ints(-1)}, "max_concurrency"},
			{task.DestinationPatch{MaxConcurrency: ints(store.MaxDestinationConcurrency + 1)}, "max_concurrency"},
			{task.DestinationPatch{RateLimit: floats(-0.5)}, "rate_limit"},
			{task.DestinationPatch{RateLimit: floats(store.MaxDestinationRateLimit * 1.01)}, "rate_limit"},
			{task.DestinationPatch{RateLimit: floats(math.NaN())}, "rate_limit"},
			{task.DestinationPatch{RateLimit: floats(math.Inf(1))}, "rate_limit"},
			{task.DestinationPatch{MaxConcurrency: ints(1), RateLimit: floats(math.Inf(-1))}, "rate_limit"},
		} {
			_, err := s.UpdateDestination(ctx, destA, tc.p, liveLong)
			var inv *store.InvalidError
			if !errors.As(err, &inv) || inv.Field != tc.field {
				t.Errorf("UpdateDestination(%s) error = %v, want a store.InvalidError for %s", describePatch(tc.p), err, tc.field)
			}
		}
		_, err := s.GetDestination(ctx, destA, liveLong)
		checkIs(t, "GetDestination after refused patches (nothing created)", err, store.ErrNotFound)
	})

	t.Run("GetUnknown", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		mustChange(t, ctx, s, destA, func(*task.Destination, time.Time) bool { return false })
		_, err := s.GetDestination(ctx, destB, liveLong)
		checkIs(t, "GetDestination(unknown)", err, store.ErrNotFound)
	})

	t.Run("PruneDestinations", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		const idle = 500 * time.Millisecond
		set := func(name string, fn func(*task.Destination, time.Time)) {
			mustChange(t, ctx, s, name, func(d *task.Destination, now time.Time) bool { fn(d, now); return true })
		}
		conc, rate := 2, 1.5
		set("plain", func(d *task.Destination, _ time.Time) { d.Limit, d.Failures = 4, 1 }) // adaptive state only
		if _, err := s.UpdateDestination(ctx, "max-concurrency", task.DestinationPatch{MaxConcurrency: &conc}, liveLong); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateDestination(ctx, "rate-limit", task.DestinationPatch{RateLimit: &rate}, liveLong); err != nil {
			t.Fatal(err)
		}
		set("open", func(d *task.Destination, now time.Time) { d.Breaker, d.OpenUntil = task.BreakerOpen, now })
		set("half-open", func(d *task.Destination, _ time.Time) { d.Breaker, d.ProbeOwner = task.BreakerHalfOpen, "r1" })
		mustSync(t, ctx, s, "r1", liveLong, noApply, store.DestinationReport{Name: "stale-report"}, store.DestinationReport{Name: "fresh-report"})
		time.Sleep(idle + 300*time.Millisecond)
		// A report now keeps its destination though the row is old.
		mustSync(t, ctx, s, "r2", liveLong, noApply, store.DestinationReport{Name: "fresh-report"})
		set("recent", func(d *task.Destination, _ time.Time) { d.Limit = 1 })
		n, err := s.PruneDestinations(ctx, idle)
		if err != nil {
			t.Fatalf("PruneDestinations: %v", err)
		}
		if n != 2 {
			t.Errorf("PruneDestinations = %d, want 2 (plain, stale-report)", n)
		}
		ds, err := s.ListDestinations(ctx, liveLong)
		if err != nil {
			t.Fatalf("ListDestinations: %v", err)
		}
		var names []string
		for _, d := range ds {
			names = append(names, d.Name)
		}
		want := []string{"fresh-report", "half-open", "max-concurrency", "open", "rate-limit", "recent"}
		if !slices.Equal(names, want) {
			t.Errorf("after pruning: %v, want %v", names, want)
		}
		// r1's old report went with the prune; r2's stays.
		if d := mustGetDestination(t, ctx, s, "fresh-report", liveLong); d.Stats.Replicas != 1 {
			t.Errorf("fresh-report has %d live reports after pruning, want 1 (r2's)", d.Stats.Replicas)
		}
		if n, err := s.PruneDestinations(ctx, idle); err != nil || n != 0 {
			t.Errorf("second PruneDestinations = %d, %v; want 0", n, err)
		}
	})
}

// describePatch shows a patch in failure messages.
func describePatch(p task.DestinationPatch) string {
	s := "{"
	if p.MaxConcurrency != nil {
		s += fmt.Sprintf("max_concurrency: %d ", *p.MaxConcurrency)
	}
	if p.RateLimit != nil {
		s += fmt.Sprintf("rate_limit: %v", *p.RateLimit)
	}
	return s + "}"
}
