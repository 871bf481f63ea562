package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func TestSchedules(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		now := time.Date(2025, 3, 8, 12, 0, 0, 0, time.UTC)
		e := newEnv(t, st, func(c *Config) { c.Now = func() time.Time { return now } })
		body := `{"cron":"30 2 * * *","timezone":"America/New_York","queue":"reports","missed":"all","jitter":"30s","start_at":"2031-03-08T12:00:00Z",
			"task":{"target":{"url":"http://h/report","method":"PUT","headers":{"X-Kind":"nightly"}},"payload":{"day":"today"},"priority":1,"max_attempts":4,"timeout":"20s"}}`
		created := decode[scheduleJSON](t, want(t, e.do("PUT", "/v1/schedules/nightly", body), http.StatusCreated))
		if created.Name != "nightly" || created.Cron != "30 2 * * *" || created.Every != "" || created.Timezone != "America/New_York" ||
			created.Missed != schedule.MissedAll || created.Jitter != "30s" || created.Source != schedule.SourceAPI || created.Paused {
			t.Errorf("created: %+v", created)
		}
		tk := created.Task
		if tk.Target.URL != "http://h/report" || tk.Target.Method != "PUT" || tk.Target.Headers["X-Kind"] != "nightly" ||
			string(tk.Payload) != `{"day":"today"}` || tk.ContentType != "application/json" || tk.Priority != 1 || tk.MaxAttempts != 4 || tk.Timeout != "20s" {
			t.Errorf("task template: %+v", tk)
		}
		// next_runs start with the stored next run; the spring-forward
		// night (9 March 2031) runs at 03:00 EDT.
		if len(created.NextRuns) != 5 || created.NextRunAt == nil || created.NextRuns[0] != *created.NextRunAt {
			t.Fatalf("next_run_at %v, next_runs %v", created.NextRunAt, created.NextRuns)
		}
		for _, want := range []string{"2031-03-09T07:00:00.000000Z", "2031-03-10T06:30:00.000000Z"} {
			if !strings.Contains(strings.Join(created.NextRuns, " "), want) {
				t.Errorf("next_runs %v lack %s", created.NextRuns, want)
			}
		}

		// GET gives the same; a GET body PUT back replaces it unchanged.
		got := want(t, e.do("GET", "/v1/schedules/nightly", ""), http.StatusOK)
		replaced := decode[scheduleJSON](t, want(t, e.do("PUT", "/v1/schedules/nightly", putBody(t, got.Body)), http.StatusOK))
		if fmt.Sprint(replaced.Task) != fmt.Sprint(created.Task) || fmt.Sprint(replaced.NextRuns) != fmt.Sprint(created.NextRuns) {
			t.Errorf("round trip changed it:\n%+v\n%+v", replaced, created)
		}

		// Validation names the field and the reason.
		for _, c := range []struct{ body, field, reason string }{
			{`{"cron":"61 * * * *","queue":"q","task":{"target":{"url":"http://h/"}}}`, "cron", "invalid cron expression"},
			{`{"cron":"0 0 30 2 *","queue":"q","task":{"target":{"url":"http://h/"}}}`, "cron", "never matches"},
			{`{"cron":"@daily","every":"1m","queue":"q","task":{"target":{"url":"http://h/"}}}`, "every", "mutually exclusive"},
			{`{"every":"500ms","queue":"q","task":{"target":{"url":"http://h/"}}}`, "every", "must be from 1s"},
			{`{"every":"1m","timezone":"Mars/Base","queue":"q","task":{"target":{"url":"http://h/"}}}`, "timezone", "IANA"},
			{`{"every":"1m","missed":"never","queue":"q","task":{"target":{"url":"http://h/"}}}`, "missed", "skip, latest, all"},
			{`{"every":"1m","task":{"target":{"url":"http://h/"}}}`, "queue", "required"},
			{`{"every":"1m","queue":"q"}`, "task", "required"},
			{`{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"},"run_at":"2030-01-01T00:00:00Z"}}`, "task.run_at", "set by the schedule"},
			{`{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"},"idempotency_key":"k"}}`, "task.idempotency_key", "set by the schedule"},
			{`{"every":"1m","queue":"q","task":{"target":{"url":"ftp://h/"}}}`, "task.target.url", ""},
			{`{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"},"priority":12}}`, "task.priority", "from 0 to 9"},
			{`{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"}},"colour":"red"}`, "colour", "unknown field"},
			{`{"name":"other","every":"1m","queue":"q","task":{"target":{"url":"http://h/"}}}`, "name", "must match"},
		} {
			p := wantField(t, e.do("PUT", "/v1/schedules/bad", c.body), c.field)
			for _, fe := range p.Errors {
				if fe.Field == c.field && !strings.Contains(fe.Detail, c.reason) {
					t.Errorf("%s: %s: %q lacks %q", c.body, c.field, fe.Detail, c.reason)
				}
			}
		}
		want(t, e.do("GET", "/v1/schedules/bad", ""), http.StatusNotFound)
		wantField(t, e.do("PUT", "/v1/schedules/-bad", `{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"}}}`), "name")

		// Trigger enqueues one run now; the task shows its schedule.
		trig := decode[taskJSON](t, want(t, e.do("POST", "/v1/schedules/nightly/trigger", ""), http.StatusCreated))
		if trig.Queue != "reports" || trig.Schedule != "nightly" || trig.ScheduledFor == nil || *trig.ScheduledFor != fmtTime(now) ||
			trig.IdempotencyKey != "" || trig.Priority != 1 || trig.Target.Method != "PUT" {
			t.Errorf("triggered task: %+v", trig)
		}
		again := decode[taskJSON](t, want(t, e.do("GET", "/v1/tasks/"+trig.ID, ""), http.StatusOK))
		if again.Schedule != "nightly" {
			t.Errorf("GET task: schedule %q", again.Schedule)
		}
		if after := decode[scheduleJSON](t, want(t, e.do("GET", "/v1/schedules/nightly", ""), http.StatusOK)); *after.NextRunAt != *created.NextRunAt {
			t.Errorf("trigger moved the next run: %s → %s", *created.NextRunAt, *after.NextRunAt)
		}

		// Pause and resume.
		paused := decode[scheduleJSON](t, want(t, e.do("POST", "/v1/schedules/nightly/pause", ""), http.StatusOK))
		if !paused.Paused || len(paused.NextRuns) != 5 {
			t.Errorf("paused: %+v", paused)
		}
		if r := decode[scheduleJSON](t, want(t, e.do("POST", "/v1/schedules/nightly/resume", ""), http.StatusOK)); r.Paused {
			t.Error("still paused after resume")
		}

		// A file schedule: the API refuses to change it, naming the file.
		f := schedule.Schedule{Name: "from-file", Spec: schedule.Spec{Every: time.Minute}, Queue: "q",
			Task: schedule.Template{Target: task.Target{URL: "http://h/"}}, Source: schedule.SourceFile}
		if _, _, err := st.PutSchedule(context.Background(), f); err != nil {
			t.Fatal(err)
		}
		ef := newEnv(t, st, func(c *Config) { c.SchedulesFile = "/etc/spool/schedules.yaml" })
		wantProblem(t, ef.do("PUT", "/v1/schedules/from-file", `{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"}}}`),
			http.StatusConflict, "/etc/spool/schedules.yaml", "from-file")
		wantProblem(t, ef.do("DELETE", "/v1/schedules/from-file", ""), http.StatusConflict, "/etc/spool/schedules.yaml")
		wantProblem(t, ef.do("POST", "/v1/schedules/from-file/pause", ""), http.StatusConflict, "/etc/spool/schedules.yaml")
		want(t, ef.do("POST", "/v1/schedules/from-file/trigger", ""), http.StatusCreated)

		// Paging by name.
		for _, n := range []string{"c", "a", "b"} {
			want(t, e.do("PUT", "/v1/schedules/"+n, `{"every":"1h","queue":"q","task":{"target":{"url":"http://h/"}}}`), http.StatusCreated)
		}
		var names []string
		cursor := ""
		for range 10 {
			page := decode[scheduleListJSON](t, want(t, e.do("GET", "/v1/schedules?limit=2&cursor="+cursor, ""), http.StatusOK))
			for _, s := range page.Schedules {
				names = append(names, s.Name)
			}
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		if got := strings.Join(names, ","); got != "a,b,c,from-file,nightly" {
			t.Errorf("listed %s", got)
		}
		wantField(t, e.do("GET", "/v1/schedules?cursor=!!", ""), "cursor")

		deleted := decode[scheduleJSON](t, want(t, e.do("DELETE", "/v1/schedules/nightly", ""), http.StatusOK))
		if deleted.Name != "nightly" {
			t.Errorf("deleted %+v", deleted)
		}
		want(t, e.do("GET", "/v1/schedules/nightly", ""), http.StatusNotFound)
		// Its tasks stay.
		want(t, e.do("GET", "/v1/tasks/"+trig.ID, ""), http.StatusOK)
	})
}

// putBody turns a GET answer into a PUT body: the writable fields.
func putBody(t *testing.T, got []byte) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"source", "next_run_at", "last_run_at", "next_runs", "created_at", "updated_at"} {
		delete(m, k)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
