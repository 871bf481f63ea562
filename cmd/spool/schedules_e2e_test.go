package main

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/testpg"
)

// TestScheduleExactlyOnceAcrossReplicaKills runs three `spool serve`
// replicas on one PostgreSQL with an every-second schedule and SIGKILLs
// and restarts them (the leader among them) for about 45 seconds. Every
// scheduled second from the schedule's first run to the end must have
// exactly one task: a dead leader's lease lasts 10 s, well inside the 60 s
// grace, so no run counts as missed and none may be lost or doubled.
func TestScheduleExactlyOnceAcrossReplicaKills(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the minute-long schedule failover test in -short mode")
	}
	dsn := testpg.Shared(t).CreateDB(t)
	mig := startProc(t, "migrate", []string{"SPOOL_DATABASE_URL=" + dsn}, "migrate")
	if err := mig.wait(30 * time.Second); err != nil {
		t.Fatalf("spool migrate: %v\n%s", err, mig.out.String())
	}
	key := newKey(t)
	_, sinkURL := startSink(t, key)
	o := serveOpts{dsn: dsn, env: []string{"SPOOL_WORKERS=10"}}
	replicas := make([]*instance, 3)
	for i := range replicas {
		replicas[i] = startServe(t, fmt.Sprintf("serve-%d", i), o, key)
	}
	api := func() string {
		for _, r := range replicas {
			select {
			case <-r.done:
			default:
				return "http://" + r.api
			}
		}
		t.Fatal("no replica running")
		return ""
	}

	var sched struct {
		NextRunAt *time.Time `json:"next_run_at"`
		LastRunAt *time.Time `json:"last_run_at"`
	}
	body := map[string]any{"every": "1s", "queue": "ticks", "task": map[string]any{"target": map[string]any{"url": sinkURL + "/tick"}}}
	if code := call(t, "PUT", api()+"/v1/schedules/tick", body, &sched); code != 201 || sched.NextRunAt == nil {
		t.Fatalf("PUT schedule: %d %+v", code, sched)
	}
	first := *sched.NextRunAt

	// Chaos: every 7 s kill one replica (the leader every other time) with
	// SIGKILL and start a new one 2 s later.
	chaosEnd := time.Now().Add(45 * time.Second)
	kills, leaderKills := 0, 0
	for i := 0; time.Now().Before(chaosEnd); i++ {
		time.Sleep(7 * time.Second)
		victim := i % len(replicas)
		if i%2 == 0 {
			for j, r := range replicas {
				if scrapeCounter(t, r.admin, "spool_leader") == 1 {
					victim = j
					leaderKills++
					break
				}
			}
		}
		_ = replicas[victim].cmd.Process.Kill()
		<-replicas[victim].done
		kills++
		time.Sleep(2 * time.Second)
		replicas[victim] = startServe(t, fmt.Sprintf("serve-%d-%d", victim, i), o, key)
	}
	end := time.Now().Truncate(time.Second)

	// Wait until the leader has enqueued the run for end (a killed leader's
	// lease may still have to expire).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code := call(t, "GET", api()+"/v1/schedules/tick", nil, &sched); code != 200 {
			t.Fatalf("GET schedule: %d", code)
		}
		if sched.LastRunAt != nil && !sched.LastRunAt.Before(end) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the schedule's last run is %v, want at least %s", sched.LastRunAt, end)
		}
		time.Sleep(200 * time.Millisecond)
	}

	type scheduledTask struct {
		ID           string    `json:"id"`
		Schedule     string    `json:"schedule"`
		ScheduledFor time.Time `json:"scheduled_for"`
		CreatedAt    time.Time `json:"created_at"`
	}
	var tasks []scheduledTask
	cursor := ""
	for {
		var page struct {
			Tasks      []scheduledTask `json:"tasks"`
			NextCursor string          `json:"next_cursor"`
		}
		if code := call(t, "GET", api()+"/v1/queues/ticks/tasks?limit=1000&cursor="+url.QueryEscape(cursor), nil, &page); code != 200 {
			t.Fatalf("list tasks: %d", code)
		}
		tasks = append(tasks, page.Tasks...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}

	byTime := map[time.Time][]string{}
	var maxLag time.Duration
	for _, tk := range tasks {
		if tk.Schedule != "tick" {
			t.Errorf("task %s: schedule %q", tk.ID, tk.Schedule)
		}
		at := tk.ScheduledFor.UTC()
		byTime[at] = append(byTime[at], tk.ID)
		maxLag = max(maxLag, tk.CreatedAt.Sub(at))
	}
	missing, doubled := 0, 0
	var gaps []string
	for at := first.UTC(); !at.After(end); at = at.Add(time.Second) {
		switch n := len(byTime[at]); {
		case n == 0:
			missing++
			gaps = append(gaps, at.Format("15:04:05"))
		case n > 1:
			doubled++
			t.Errorf("%s has %d tasks: %v", at.Format(time.RFC3339), n, byTime[at])
		}
	}
	for at, ids := range byTime {
		if at.Before(first) || len(ids) > 1 && at.After(end) {
			t.Errorf("unexpected task(s) %v for %s", ids, at.Format(time.RFC3339))
		}
	}
	want := int(end.Sub(first)/time.Second) + 1
	t.Logf("schedule every 1s over %s: %d scheduled times, %d tasks, %d missing, %d doubled; %d SIGKILLs (%d of the leader); max lag from scheduled time to enqueue %s",
		end.Sub(first).Round(time.Second), want, len(tasks), missing, doubled, kills, leaderKills, maxLag.Round(time.Millisecond))
	if missing > 0 {
		slices.Sort(gaps)
		t.Errorf("%d scheduled times have no task (none may be missed with a 10 s leader lease): %v", missing, gaps)
	}
	if leaderKills == 0 {
		t.Error("the leader was never killed; the test proved less than it claims")
	}
}
