package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/telemetry"
)

// TestMaintainerEnqueuesScheduledRuns: two maintainers share a store; the
// leader enqueues an every-second schedule's runs, then stops, and the
// other takes over. Every second from the first run to the last has one
// task, and the metrics count them.
func TestMaintainerEnqueuesScheduledRuns(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		start := time.Now().Add(-3 * time.Second).Truncate(time.Second).UTC()
		sc := schedule.Schedule{
			Name: "tick", Spec: schedule.Spec{Every: time.Second}, Queue: "ticks",
			Task:      schedule.Template{Target: task.Target{URL: "http://127.0.0.1:9/tick"}, Priority: task.DefaultPriority},
			NextRunAt: start,
		}
		if _, _, err := st.PutSchedule(ctx, sc); err != nil {
			t.Fatal(err)
		}
		metrics := [2]*telemetry.Metrics{telemetry.NewMetrics("test", "test"), telemetry.NewMetrics("test", "test")}
		run := func(i int, owner string) (stop func()) {
			mctx, cancel := context.WithCancel(ctx)
			m := &Maintainer{Store: st, Metrics: metrics[i], Owner: owner, Retention: time.Hour, Interval: 50 * time.Millisecond}
			done := make(chan struct{})
			go func() { m.Run(mctx); close(done) }()
			return func() { cancel(); <-done }
		}
		stopA := run(0, "a")
		time.Sleep(2 * time.Second)
		stopB := run(1, "b") // follows while a leads
		stopA()              // resigns: b takes over
		time.Sleep(3 * time.Second)
		stopB()

		tsPage, err := st.ListTasks(ctx, store.ListParams{Queue: "ticks", Limit: 1000})
		ts := tsPage.Tasks
		if err != nil {
			t.Fatal(err)
		}
		seen := map[time.Time]bool{}
		var last time.Time
		for _, tk := range ts {
			if tk.Schedule != "tick" || seen[tk.ScheduledFor] {
				t.Errorf("task %s: schedule %q, scheduled_for %s (seen before: %v)", tk.ID, tk.Schedule, tk.ScheduledFor, seen[tk.ScheduledFor])
			}
			seen[tk.ScheduledFor] = true
			if tk.ScheduledFor.After(last) {
				last = tk.ScheduledFor
			}
		}
		for at := start; !at.After(last); at = at.Add(time.Second) {
			if !seen[at] {
				t.Errorf("no task for %s", at)
			}
		}
		if len(ts) < 7 {
			t.Errorf("%d runs in about 5 seconds (from 3 seconds back)", len(ts))
		}
		var counted float64
		for _, m := range metrics {
			counted += testutil.ToFloat64(m.ScheduleRuns.WithLabelValues("tick", "enqueued"))
		}
		if int(counted) != len(ts) {
			t.Errorf("spool_schedule_runs_total{outcome=enqueued} sums to %v over both, want %d", counted, len(ts))
		}
		if testutil.ToFloat64(metrics[1].ScheduleRuns.WithLabelValues("tick", "enqueued")) == 0 {
			t.Error("the follower never enqueued a run after the leader stopped")
		}
		if n := testutil.CollectAndCount(metrics[0].ScheduleLag); n != 1 {
			t.Errorf("lag histogram: %d series", n)
		}
	})
}

func TestScheduleLabelsAreBounded(t *testing.T) {
	m := &Maintainer{}
	for i := range maxScheduleSeries {
		if got := m.scheduleLabel(string(rune('a'+i%26)) + time.Duration(i).String()); got == "other" {
			t.Fatalf("schedule %d labelled other", i)
		}
	}
	if got := m.scheduleLabel("one-too-many"); got != "other" {
		t.Errorf("schedule %d labelled %q, want other", maxScheduleSeries+1, got)
	}
	if got := m.scheduleLabel("a0s"); got != "a0s" {
		t.Errorf("a labelled schedule lost its label: %q", got)
	}
}
