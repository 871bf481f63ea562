package storetest

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// newSchedule builds a valid schedule delivering to queue.
func newSchedule(name, queue string, spec schedule.Spec) schedule.Schedule {
	return schedule.Schedule{
		Name:  name,
		Spec:  spec,
		Queue: queue,
		Task: schedule.Template{
			Target:      task.Target{URL: "http://127.0.0.1:9/report", Method: "PUT", Headers: map[string]string{"X-Report": "daily"}},
			Payload:     []byte(`{"kind":"report"}`),
			ContentType: "application/json",
			Priority:    2,
			MaxAttempts: 3,
			Timeout:     7 * time.Second,
		},
	}
}

func mustPutSchedule(t *testing.T, ctx context.Context, s store.Store, sc schedule.Schedule) schedule.Schedule {
	t.Helper()
	got, _, err := s.PutSchedule(ctx, sc)
	if err != nil {
		t.Fatalf("PutSchedule(%s): %v", sc.Name, err)
	}
	return got
}

func mustClaim(t *testing.T, ctx context.Context, s store.Store) map[string]store.ScheduleClaim {
	t.Helper()
	cs, err := s.ClaimSchedules(ctx, 100)
	if err != nil {
		t.Fatalf("ClaimSchedules: %v", err)
	}
	out := make(map[string]store.ScheduleClaim, len(cs))
	for _, c := range cs {
		if _, dup := out[c.Schedule]; dup {
			t.Fatalf("ClaimSchedules returned schedule %s twice", c.Schedule)
		}
		out[c.Schedule] = c
	}
	return out
}

// scheduledTasks lists queue's tasks, checking each came from a schedule.
func scheduledTasks(t *testing.T, ctx context.Context, s store.Store, queue string) []task.Task {
	t.Helper()
	tsPage, err := s.ListTasks(ctx, store.ListParams{Queue: queue, Limit: 1000})
	ts := tsPage.Tasks
	if err != nil {
		t.Fatalf("ListTasks: %v", err)
	}
	return ts
}

func checkSchedule(t *testing.T, what string, got, want schedule.Schedule) {
	t.Helper()
	if got.Name != want.Name || got.Queue != want.Queue || got.Paused != want.Paused || got.Source != want.Source {
		t.Errorf("%s: name/queue/paused/source = %s/%s/%v/%s, want %s/%s/%v/%s", what,
			got.Name, got.Queue, got.Paused, got.Source, want.Name, want.Queue, want.Paused, want.Source)
	}
	gs, ws := got.Spec, want.Spec
	if ws.Missed == "" {
		ws.Missed = schedule.MissedLatest
	}
	if gs.Cron != ws.Cron || gs.Every != ws.Every || gs.Timezone != ws.Timezone || gs.Missed != ws.Missed ||
		gs.Jitter != ws.Jitter || !gs.StartAt.Equal(ws.StartAt) || !gs.EndAt.Equal(ws.EndAt) {
		t.Errorf("%s: spec = %+v, want %+v", what, gs, ws)
	}
	gt, wt := got.Task, want.Task
	if gt.Target.URL != wt.Target.URL || gt.Target.Method != wt.Target.Method || !maps.Equal(gt.Target.Headers, wt.Target.Headers) ||
		!bytes.Equal(gt.Payload, wt.Payload) || (gt.Payload == nil) != (wt.Payload == nil) || gt.ContentType != wt.ContentType ||
		gt.Priority != wt.Priority || gt.MaxAttempts != wt.MaxAttempts || gt.Timeout != wt.Timeout {
		t.Errorf("%s: task template = %+v, want %+v", what, gt, wt)
	}
}

func testSchedules(t *testing.T, newStore NewStoreFunc) {
	t.Run("PutGetListDelete", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		before := time.Now()
		in := newSchedule("nightly", "reports", schedule.Spec{Cron: "30 2 * * *", Timezone: "Europe/Berlin", Jitter: 90 * time.Second})
		got, created, err := s.PutSchedule(ctx, in)
		if err != nil || !created {
			t.Fatalf("PutSchedule = created %v, %v; want created", created, err)
		}
		want := in
		want.Source = schedule.SourceAPI
		checkSchedule(t, "put", got, want)
		clock, _ := schedule.Compile(in.Spec)
		if next := clock.Next(got.CreatedAt); !got.NextRunAt.Equal(next) {
			t.Errorf("NextRunAt = %s, want %s (the first run after creation)", got.NextRunAt, next)
		}
		if !got.LastRunAt.IsZero() {
			t.Errorf("LastRunAt = %s before any run", got.LastRunAt)
		}
		checkBetween(t, "CreatedAt", got.CreatedAt, before, time.Now())
		read, err := s.GetSchedule(ctx, "nightly")
		if err != nil {
			t.Fatalf("GetSchedule: %v", err)
		}
		checkSchedule(t, "get", read, want)
		checkNear(t, "stored NextRunAt", read.NextRunAt, got.NextRunAt)

		// A template edit keeps the next run; a timing edit moves it.
		edit := in
		edit.Task.Payload = nil
		edit.Task.Target.Headers = nil
		again, created, err := s.PutSchedule(ctx, edit)
		if err != nil || created {
			t.Fatalf("PutSchedule again = created %v, %v; want replaced", created, err)
		}
		want.Task = edit.Task
		checkSchedule(t, "replaced", again, want)
		checkNear(t, "CreatedAt kept", again.CreatedAt, got.CreatedAt)
		checkNear(t, "NextRunAt kept", again.NextRunAt, got.NextRunAt)
		edit.Spec = schedule.Spec{Every: time.Hour}
		moved := mustPutSchedule(t, ctx, s, edit)
		if moved.NextRunAt.Minute() != 0 || moved.NextRunAt.Second() != 0 || !moved.NextRunAt.After(moved.UpdatedAt) {
			t.Errorf("after the edit to every 1h, NextRunAt = %s, want the next full hour after %s", moved.NextRunAt, moved.UpdatedAt)
		}

		// Empty payload survives as empty, not absent.
		empty := newSchedule("empty-payload", "reports", schedule.Spec{Every: time.Minute})
		empty.Task.Payload = []byte{}
		mustPutSchedule(t, ctx, s, empty)
		if e, _ := s.GetSchedule(ctx, "empty-payload"); e.Task.Payload == nil {
			t.Errorf("an empty payload read back as none")
		}

		for _, n := range []string{"b", "a", "c"} {
			mustPutSchedule(t, ctx, s, newSchedule(n, "q", schedule.Spec{Every: time.Minute}))
		}
		var names []string
		after := ""
		for {
			page, err := s.ListSchedules(ctx, store.ScheduleListParams{After: after, Limit: 2})
			if err != nil {
				t.Fatalf("ListSchedules: %v", err)
			}
			if len(page) > 2 {
				t.Fatalf("page of %d, limit 2", len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, p := range page {
				names = append(names, p.Name)
			}
			after = page[len(page)-1].Name
		}
		if wantNames := []string{"a", "b", "c", "empty-payload", "nightly"}; !slices.Equal(names, wantNames) {
			t.Errorf("listed %v, want %v", names, wantNames)
		}

		if err := s.DeleteSchedule(ctx, "nightly", schedule.SourceAPI); err != nil {
			t.Fatalf("DeleteSchedule: %v", err)
		}
		_, err = s.GetSchedule(ctx, "nightly")
		checkIs(t, "GetSchedule after delete", err, store.ErrNotFound)
		checkIs(t, "DeleteSchedule again", s.DeleteSchedule(ctx, "nightly", schedule.SourceAPI), store.ErrNotFound)
		_, err = s.SetSchedulePaused(ctx, "nightly", true, schedule.SourceAPI)
		checkIs(t, "SetSchedulePaused of a missing schedule", err, store.ErrNotFound)

		_, _, err = s.PutSchedule(ctx, newSchedule("bad", "q", schedule.Spec{Cron: "61 * * * *"}))
		var errs schedule.Errors
		if !errors.As(err, &errs) || errs[0].Field != "cron" {
			t.Errorf("PutSchedule with a bad cron: %v, want schedule.Errors on cron", err)
		}
	})

	t.Run("FileSchedules", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		f := newSchedule("from-file", "q", schedule.Spec{Every: time.Minute})
		f.Source = schedule.SourceFile
		mustPutSchedule(t, ctx, s, f)
		api := f
		api.Source = schedule.SourceAPI
		_, _, err := s.PutSchedule(ctx, api)
		checkIs(t, "API put over a file schedule", err, store.ErrFileSchedule)
		checkIs(t, "API put over a file schedule", err, store.ErrConflict)
		checkIs(t, "API delete of a file schedule", s.DeleteSchedule(ctx, "from-file", schedule.SourceAPI), store.ErrFileSchedule)
		_, err = s.SetSchedulePaused(ctx, "from-file", true, schedule.SourceAPI)
		checkIs(t, "API pause of a file schedule", err, store.ErrFileSchedule)
		if got, _ := s.GetSchedule(ctx, "from-file"); got.Source != schedule.SourceFile || got.Paused {
			t.Errorf("after refused changes: source %s paused %v", got.Source, got.Paused)
		}
		// The file takes over an API schedule of the same name.
		mustPutSchedule(t, ctx, s, newSchedule("was-api", "q", schedule.Spec{Every: time.Minute}))
		takeover := newSchedule("was-api", "q", schedule.Spec{Every: 2 * time.Minute})
		takeover.Source = schedule.SourceFile
		if got := mustPutSchedule(t, ctx, s, takeover); got.Source != schedule.SourceFile {
			t.Errorf("file put over an API schedule: source %s", got.Source)
		}
		if err := s.DeleteSchedule(ctx, "from-file", schedule.SourceFile); err != nil {
			t.Errorf("file delete: %v", err)
		}
	})

	t.Run("ClaimEnqueuesEachRunOnce", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// Ten seconds late (a failover): every second is on time.
		start := time.Now().Add(-10 * time.Second).Truncate(time.Second)
		sc := newSchedule("secondly", "ticks", schedule.Spec{Every: time.Second, Jitter: 500 * time.Millisecond})
		sc.NextRunAt = start
		put := mustPutSchedule(t, ctx, s, sc)
		if !put.NextRunAt.Equal(start) {
			t.Fatalf("NextRunAt = %s, want %s as given", put.NextRunAt, start)
		}
		c, ok := mustClaim(t, ctx, s)["secondly"]
		if !ok {
			t.Fatal("a due schedule was not claimed")
		}
		if len(c.Enqueued) < 10 || c.Skipped != 0 {
			t.Fatalf("claimed %d runs, skipped %d; want at least 10, none skipped", len(c.Enqueued), c.Skipped)
		}
		for i, e := range c.Enqueued {
			at := start.Add(time.Duration(i) * time.Second)
			tk := e.Task
			if e.Existing || tk.Schedule != "secondly" || !tk.ScheduledFor.Equal(at) || tk.Queue != "ticks" ||
				tk.IdempotencyKey != schedule.IdempotencyKey("secondly", at) {
				t.Errorf("run %d: existing %v, schedule %q, scheduled_for %s, queue %s, key %q; want a new task for %s",
					i, e.Existing, tk.Schedule, tk.ScheduledFor, tk.Queue, tk.IdempotencyKey, at)
			}
			checkNear(t, "run_at (time + jitter)", tk.RunAt, at.Add(schedule.Jitter("secondly", at, 500*time.Millisecond)))
			want := task.Task{Target: sc.Task.Target, Payload: sc.Task.Payload, ContentType: sc.Task.ContentType, Timeout: sc.Task.Timeout}
			for _, d := range diffDelivery(tk, want) {
				t.Errorf("run %d: %s", i, d)
			}
			if tk.Priority != 2 || tk.MaxAttempts != 3 {
				t.Errorf("run %d: priority %d, max_attempts %d; want the template's 2 and 3", i, tk.Priority, tk.MaxAttempts)
			}
			read := mustGet(t, ctx, s, tk.ID)
			if read.Schedule != "secondly" || !read.ScheduledFor.Equal(at) {
				t.Errorf("GetTask(run %d): schedule %q scheduled_for %s", i, read.Schedule, read.ScheduledFor)
			}
		}
		last := c.Enqueued[len(c.Enqueued)-1].Task.ScheduledFor
		got, _ := s.GetSchedule(ctx, "secondly")
		if !got.LastRunAt.Equal(last) || !got.NextRunAt.Equal(last.Add(time.Second)) || !got.NextRunAt.After(c.Now) {
			t.Errorf("after the claim at %s: last %s next %s; want last %s and next a second later, after the claim", c.Now, got.LastRunAt, got.NextRunAt, last)
		}
		// Claiming again at once enqueues at most the runs due since.
		c2 := mustClaim(t, ctx, s)["secondly"]
		for _, e := range c2.Enqueued {
			if !e.Task.ScheduledFor.After(last) {
				t.Errorf("second claim enqueued %s again", e.Task.ScheduledFor)
			}
		}
		checkNoDuplicateRuns(t, scheduledTasks(t, ctx, s, "ticks"))

		// A paused schedule is not claimed; resumed, it starts after now.
		if _, err := s.SetSchedulePaused(ctx, "secondly", true, schedule.SourceAPI); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
		if _, ok := mustClaim(t, ctx, s)["secondly"]; ok {
			t.Error("a paused schedule was claimed")
		}
		resumed, err := s.SetSchedulePaused(ctx, "secondly", false, schedule.SourceAPI)
		if err != nil {
			t.Fatal(err)
		}
		if resumed.Paused || !resumed.NextRunAt.After(resumed.UpdatedAt) {
			t.Errorf("resumed: paused %v, next %s, resumed at %s", resumed.Paused, resumed.NextRunAt, resumed.UpdatedAt)
		}
	})

	t.Run("ClaimFollowsMissedPolicy", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		// Down for half an hour: thirty runs a minute apart are missed.
		start := time.Now().Add(-30 * time.Minute).Truncate(time.Minute)
		for _, policy := range []schedule.Missed{schedule.MissedSkip, schedule.MissedLatest, schedule.MissedAll} {
			sc := newSchedule("m-"+string(policy), "q-"+string(policy), schedule.Spec{Every: time.Minute, Missed: policy})
			sc.NextRunAt = start
			mustPutSchedule(t, ctx, s, sc)
		}
		claims := mustClaim(t, ctx, s)
		for _, policy := range []schedule.Missed{schedule.MissedSkip, schedule.MissedLatest, schedule.MissedAll} {
			c, ok := claims["m-"+string(policy)]
			if !ok {
				t.Fatalf("%s: not claimed", policy)
			}
			clock, _ := schedule.Compile(schedule.Spec{Every: time.Minute})
			want := clock.Due(start, c.Now, policy)
			if len(c.Enqueued) != len(want.Runs) || c.Skipped != want.Skipped {
				t.Errorf("%s: enqueued %d, skipped %d; want %d and %d", policy, len(c.Enqueued), c.Skipped, len(want.Runs), want.Skipped)
				continue
			}
			for i, at := range want.Runs {
				if !c.Enqueued[i].Task.ScheduledFor.Equal(at) {
					t.Errorf("%s: run %d for %s, want %s", policy, i, c.Enqueued[i].Task.ScheduledFor, at)
				}
			}
			if n := len(scheduledTasks(t, ctx, s, "q-"+string(policy))); n != len(want.Runs) {
				t.Errorf("%s: %d tasks stored, want %d", policy, n, len(want.Runs))
			}
			switch policy {
			case schedule.MissedAll:
				if len(c.Enqueued) < 30 {
					t.Errorf("all: %d runs, want every missed one", len(c.Enqueued))
				}
			case schedule.MissedLatest:
				late := 0
				for _, e := range c.Enqueued {
					if c.Now.Sub(e.Task.ScheduledFor) > schedule.Grace {
						late++
					}
				}
				if late != 1 {
					t.Errorf("latest: %d missed runs enqueued, want 1", late)
				}
			case schedule.MissedSkip:
				for _, e := range c.Enqueued {
					if c.Now.Sub(e.Task.ScheduledFor) > schedule.Grace {
						t.Errorf("skip: enqueued the missed run %s", e.Task.ScheduledFor)
					}
				}
			}
		}
	})

	t.Run("ClaimKeepsAnExistingRunsTask", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		start := time.Now().Add(-3 * time.Second).Truncate(time.Second)
		// The run's task is there already (as if another claim had
		// inserted it): the claim finds it and inserts no second one.
		nt := newTask("dup")
		nt.IdempotencyKey = schedule.IdempotencyKey("dupe", start)
		orig := enqueueOne(t, ctx, s, nt)
		sc := newSchedule("dupe", "dup", schedule.Spec{Every: time.Second})
		sc.NextRunAt = start
		mustPutSchedule(t, ctx, s, sc)
		c := mustClaim(t, ctx, s)["dupe"]
		if len(c.Enqueued) == 0 || !c.Enqueued[0].Existing || c.Enqueued[0].Task.ID != orig.ID {
			t.Fatalf("first run: %+v; want the existing task %s", c.Enqueued, orig.ID)
		}
		for _, e := range c.Enqueued[1:] {
			if e.Existing {
				t.Errorf("run %s reported existing", e.Task.ScheduledFor)
			}
		}
		if n := len(scheduledTasks(t, ctx, s, "dup")); n != len(c.Enqueued) {
			t.Errorf("%d tasks stored for %d runs", n, len(c.Enqueued))
		}
	})

	t.Run("ClaimEndsAtEndAt", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		start := time.Now().Add(-5 * time.Second).Truncate(time.Second)
		sc := newSchedule("short", "short", schedule.Spec{Every: time.Second, EndAt: start.Add(2 * time.Second)})
		sc.NextRunAt = start
		mustPutSchedule(t, ctx, s, sc)
		c := mustClaim(t, ctx, s)["short"]
		if len(c.Enqueued) != 3 {
			t.Errorf("enqueued %d runs, want 3 (up to end_at)", len(c.Enqueued))
		}
		got, _ := s.GetSchedule(ctx, "short")
		if !got.NextRunAt.IsZero() {
			t.Errorf("an ended schedule's NextRunAt = %s, want zero", got.NextRunAt)
		}
		if _, ok := mustClaim(t, ctx, s)["short"]; ok {
			t.Error("an ended schedule was claimed again")
		}
	})

	t.Run("ConcurrentClaimsEnqueueEachTimeOnce", func(t *testing.T) {
		ctx, s := setup(t, newStore)
		start := time.Now().Add(-5 * time.Second).Truncate(time.Second)
		sc := newSchedule("contended", "contended", schedule.Spec{Every: time.Second})
		sc.NextRunAt = start
		mustPutSchedule(t, ctx, s, sc)
		// Four claimers (as replicas that all think they lead) for three seconds.
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		stop := time.Now().Add(3 * time.Second)
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if _, err := s.ClaimSchedules(ctx, 10); err != nil {
						errs <- err
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("ClaimSchedules: %v", err)
		}
		ts := scheduledTasks(t, ctx, s, "contended")
		checkNoDuplicateRuns(t, ts)
		if len(ts) < 8 {
			t.Errorf("%d runs over about 8 seconds", len(ts))
		}
		got, _ := s.GetSchedule(ctx, "contended")
		// Every second from start to the last run has its task.
		if want := int(got.LastRunAt.Sub(start)/time.Second) + 1; len(ts) != want {
			t.Errorf("%d tasks from %s to %s, want %d (one a second, none missing)", len(ts), start, got.LastRunAt, want)
		}
	})
}

// checkNoDuplicateRuns fails if two tasks share a scheduled time.
func checkNoDuplicateRuns(t *testing.T, ts []task.Task) {
	t.Helper()
	seen := map[time.Time]string{}
	for _, tk := range ts {
		if tk.Schedule == "" || tk.ScheduledFor.IsZero() {
			t.Errorf("task %s has no schedule or scheduled time", tk.ID)
			continue
		}
		if other, dup := seen[tk.ScheduledFor]; dup {
			t.Errorf("tasks %s and %s both run %s", other, tk.ID, tk.ScheduledFor)
		}
		seen[tk.ScheduledFor] = tk.ID
	}
}
