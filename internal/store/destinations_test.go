package store

import (
	"slices"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/task"
)

func TestSyncOrder(t *testing.T) {
	order, err := SyncOrder([]DestinationReport{{Name: "c"}, {Name: "a"}, {Name: "b"}})
	if err != nil || !slices.Equal(order, []int{1, 2, 0}) {
		t.Errorf("SyncOrder = %v, %v; want [1 2 0]", order, err)
	}
	for _, bad := range [][]DestinationReport{
		{{Name: "a"}, {Name: "b"}, {Name: "a"}}, // its row would be read twice before one write
		{{Name: "a"}, {Name: ""}},
	} {
		if _, err := SyncOrder(bad); err == nil {
			t.Errorf("SyncOrder(%v) accepted", bad)
		}
	}
}

func TestSumReports(t *testing.T) {
	rs := []ReplicaReport{
		{Replica: "c", InFlight: 1, Successes: 3, Failures: 1, Latency: 10 * time.Millisecond},
		{Replica: "a", InFlight: 2, Successes: 1, Failures: 0, Latency: 50 * time.Millisecond},
		{Replica: "b", InFlight: 0, Successes: 0, Failures: 4, Latency: time.Hour}, // no answer: no weight
	}
	st, rank := SumReports("b", rs)
	want := task.DestinationStats{Replicas: 3, InFlight: 3, Successes: 4, Failures: 5, Latency: 20 * time.Millisecond}
	if st != want || rank != 1 {
		t.Errorf("SumReports = %+v, rank %d; want %+v, rank 1", st, rank, want)
	}
	if st, rank := SumReports("a", nil); st != (task.DestinationStats{}) || rank != 0 {
		t.Errorf("SumReports(none) = %+v, %d", st, rank)
	}
}

func TestApplyPolicyKeepsWhatFnMayNotChange(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.FixedZone("X", 3600))
	stored := task.Destination{Name: "n", MaxConcurrency: 3, RateLimit: 2, CreatedAt: at, UpdatedAt: at, Breaker: task.BreakerClosed}
	got, ok := ApplyPolicy(stored, func(d *task.Destination) bool {
		d.Name, d.MaxConcurrency, d.RateLimit, d.CreatedAt = "other", 9, 9, time.Time{}
		d.Breaker, d.OpenUntil, d.Cooldown = task.BreakerOpen, at, 1500*time.Microsecond
		return true
	})
	if !ok || got.Name != "n" || got.MaxConcurrency != 3 || got.RateLimit != 2 || !got.CreatedAt.Equal(at) {
		t.Errorf("ApplyPolicy let fn change name, ceilings or creation: %+v", got)
	}
	if got.Breaker != task.BreakerOpen || got.Cooldown != time.Millisecond ||
		got.OpenUntil.Location() != time.UTC || !got.OpenUntil.Equal(at.Truncate(time.Microsecond)) {
		t.Errorf("policy fields = %s, %v, %v; want open, 1ms, %v UTC", got.Breaker, got.Cooldown, got.OpenUntil, at.Truncate(time.Microsecond))
	}
	got, ok = ApplyPolicy(stored, func(d *task.Destination) bool { d.Failures = 5; return false })
	if ok || got != stored {
		t.Errorf("ApplyPolicy with fn false = %+v, %v; want the stored row, false", got, ok)
	}
}
