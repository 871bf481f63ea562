package schedfile

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

const twoSchedules = `
schedules:
  - name: nightly-report
    cron: "30 2 * * *"
    timezone: Europe/Paris
    queue: reports
    missed: all
    start_at: 2030-01-01T00:00:00Z
    task:
      target: {url: "http://127.0.0.1:9/report", headers: {X-Kind: nightly}}
      payload: {kind: nightly, days: [1, 2]}
      priority: 2
  - name: heartbeat
    every: 1m
    queue: pings
    task:
      target: {url: "http://127.0.0.1:9/ping"}
`

func names(t *testing.T, st store.Store) map[string]schedule.Source {
	t.Helper()
	scs, err := st.ListSchedules(context.Background(), store.ScheduleListParams{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]schedule.Source{}
	for _, sc := range scs {
		out[sc.Name] = sc.Source
	}
	return out
}

// configMapWrite writes content the way the kubelet updates a mounted
// ConfigMap: a new timestamped directory, then an atomic swap of the
// ..data symlink that the file's own symlink points through.
func configMapWrite(t *testing.T, dir, content string) string {
	t.Helper()
	ts := filepath.Join(dir, "..ts-"+time.Now().Format("150405.000000000"))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "schedules.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "schedules.yaml")
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.Symlink(filepath.Join("..data", "schedules.yaml"), path); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	// An API schedule is never touched by the file.
	api := schedule.Schedule{Name: "by-api", Spec: schedule.Spec{Every: time.Hour}, Queue: "q",
		Task: schedule.Template{Target: task.Target{URL: "http://127.0.0.1:9/"}}}
	if _, _, err := st.PutSchedule(ctx, api); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := configMapWrite(t, dir, twoSchedules)
	r := &Reconciler{Store: st, Path: path}
	if applied, err := r.Reconcile(ctx); err != nil || !applied {
		t.Fatalf("Reconcile = %v, %v", applied, err)
	}
	want := map[string]schedule.Source{"by-api": schedule.SourceAPI, "nightly-report": schedule.SourceFile, "heartbeat": schedule.SourceFile}
	if got := names(t, st); len(got) != 3 || got["nightly-report"] != want["nightly-report"] || got["heartbeat"] != want["heartbeat"] || got["by-api"] != want["by-api"] {
		t.Fatalf("after the first reconcile: %v", got)
	}
	nightly, _ := st.GetSchedule(ctx, "nightly-report")
	if nightly.Spec.Cron != "30 2 * * *" || nightly.Spec.Timezone != "Europe/Paris" || nightly.Spec.Missed != schedule.MissedAll ||
		!nightly.Spec.StartAt.Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) || nightly.Task.Priority != 2 ||
		nightly.Task.Target.Headers["X-Kind"] != "nightly" || string(nightly.Task.Payload) != `{"days":[1,2],"kind":"nightly"}` {
		t.Errorf("nightly-report stored as %+v (payload %s)", nightly, nightly.Task.Payload)
	}
	// Unchanged content: nothing to do.
	if applied, err := r.Reconcile(ctx); err != nil || applied {
		t.Fatalf("Reconcile of unchanged content = %v, %v", applied, err)
	}

	// An invalid file changes nothing and names the problem.
	configMapWrite(t, dir, strings.Replace(twoSchedules, `"30 2 * * *"`, `"30 25 * * *"`, 1))
	_, err := r.Reconcile(ctx)
	if err == nil || !strings.Contains(err.Error(), "nightly-report") || !strings.Contains(err.Error(), "cron") {
		t.Fatalf("Reconcile of a bad cron = %v", err)
	}
	if got := names(t, st); len(got) != 3 {
		t.Fatalf("a bad file changed the schedules: %v", got)
	}
	for _, bad := range []string{
		"schedules:\n  - name: a\n    every: 1m\n    queue: q\n    task: {target: {url: 'http://h/'}}\n  - name: a\n    every: 1m\n    queue: q\n    task: {target: {url: 'http://h/'}}\n",
		"schedule:\n  - name: typo-at-the-top\n",
		"schedules:\n  - name: x\n    every: 1m\n    queue: q\n    task: {target: {url: 'http://h/'}, run_at: '2030-01-01T00:00:00Z'}\n",
	} {
		if _, err := Parse([]byte(bad), nil); err == nil {
			t.Errorf("Parse accepted:\n%s", bad)
		}
	}

	// The file drops one schedule and edits the other, through the Run
	// loop: it notices the symlink swap.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.Interval = 20 * time.Millisecond
	go func() { r.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	configMapWrite(t, dir, "schedules:\n  - name: heartbeat\n    every: 2m\n    queue: pings\n    task:\n      target: {url: \"http://127.0.0.1:9/ping\"}\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := names(t, st)
		hb, _ := st.GetSchedule(ctx, "heartbeat")
		if _, gone := got["nightly-report"]; !gone && hb.Spec.Every == 2*time.Minute && got["by-api"] == schedule.SourceAPI {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edit was not applied: %v, heartbeat every %s", got, hb.Spec.Every)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
