package cli

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/spoolhq/spool/client/clienttest"
)

func TestSchedulesCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	out := h.ok(Schedules, "set", "nightly", "--cron", "30 2 * * *", "--timezone", "Europe/Paris", "--queue", "reports",
		"--url", "https://example.com/report", "--data", `{"kind":"nightly"}`, "-H", "X-Kind: nightly", "--priority", "1",
		"--missed", "all", "--jitter", "30s", "--start-at", "2030-01-02T15:04:05Z")
	want := `{"cron":"30 2 * * *","timezone":"Europe/Paris","queue":"reports","task":{"target":{"url":"https://example.com/report","headers":{"X-Kind":"nightly"}},"payload":{"kind":"nightly"},"priority":1},"missed":"all","jitter":"30s","start_at":"2030-01-02T15:04:05Z"}`
	if last := h.srv.Last(); last.Method != "PUT" || last.Path != "/v1/schedules/nightly" || string(last.Body) != want {
		t.Fatalf("set sent %s %s %s\nwant %s", last.Method, last.Path, last.Body, want)
	}
	for _, sub := range []string{"NAME", "nightly", "cron 30 2 * * *", "Europe/Paris", "POST https://example.com/report", "all", "30s", "api"} {
		if !strings.Contains(out, sub) {
			t.Errorf("set output lacks %q:\n%s", sub, out)
		}
	}
	h.ok(Schedules, "set", "beat", "--every", "1m", "--queue", "pings", "--url", "http://x/")
	if got := string(h.srv.Last().Body); got != `{"every":"1m0s","queue":"pings","task":{"target":{"url":"http://x/"}}}` {
		t.Fatalf("set --every sent %s", got)
	}

	out = h.ok(Schedules, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "beat") || !strings.HasPrefix(lines[2], "nightly") {
		t.Fatalf("list:\n%s", out)
	}
	var page struct {
		Schedules []map[string]any `json:"schedules"`
	}
	if err := json.Unmarshal([]byte(h.ok(Schedules, "list", "--output", "json")), &page); err != nil || len(page.Schedules) != 2 {
		t.Fatalf("list json: %v %v", page, err)
	}

	if out := h.ok(Schedules, "get", "nightly", "--output", "json"); !strings.Contains(out, `"queue": "reports"`) {
		t.Fatalf("get json:\n%s", out)
	}
	if out := h.ok(Schedules, "pause", "nightly", "--output", "json"); !strings.Contains(out, `"paused": true`) {
		t.Fatalf("pause:\n%s", out)
	}
	if last := h.srv.Last(); last.Method != "POST" || last.Path != "/v1/schedules/nightly/pause" {
		t.Fatalf("pause sent %s %s", last.Method, last.Path)
	}
	h.ok(Schedules, "resume", "nightly")
	if last := h.srv.Last(); last.Path != "/v1/schedules/nightly/resume" {
		t.Fatalf("resume sent %s", last.Path)
	}
	var tk map[string]any
	if err := json.Unmarshal([]byte(h.ok(Schedules, "trigger", "nightly", "--output", "json")), &tk); err != nil ||
		tk["queue"] != "reports" || tk["schedule"] != "nightly" || tk["scheduled_for"] == nil {
		t.Fatalf("trigger: %v %v", tk, err)
	}
	h.ok(Schedules, "delete", "beat")
	if last := h.srv.Last(); last.Method != "DELETE" || last.Path != "/v1/schedules/beat" {
		t.Fatalf("delete sent %s %s", last.Method, last.Path)
	}
	if _, _, err := h.run(Schedules, "get", "beat"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("deleted schedule = %v", err)
	}

	// A file schedule: the server's 409 reaches the user.
	h.srv.SetSchedule(clienttest.Schedule{Name: "from-file", Every: "1m0s", Queue: "q", Source: "file"})
	if _, _, err := h.run(Schedules, "delete", "from-file"); err == nil || !strings.Contains(err.Error(), "schedules file") {
		t.Fatalf("delete of a file schedule = %v", err)
	}
}

func TestSchedulesBadUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "schedules: missing subcommand"},
		{[]string{"get"}, "schedules get: missing NAME"},
		{[]string{"set", "s", "--queue", "q", "--url", "http://x/"}, "give exactly one of --cron and --every"},
		{[]string{"set", "s", "--cron", "@daily", "--every", "1m", "--queue", "q", "--url", "http://x/"}, "give exactly one of --cron and --every"},
		{[]string{"set", "s", "--cron", "@daily", "--url", "http://x/"}, "--queue and --url are required"},
		{[]string{"set", "s", "--cron", "@daily", "--queue", "q", "--url", "ftp://x/"}, "schedules set: URL must be an absolute http or https URL"},
		{[]string{"set", "s", "--cron", "@daily", "--queue", "q", "--url", "http://x/", "--data", "{"}, "schedules set: --data is not valid JSON"},
		{[]string{"set", "s", "--cron", "@daily", "--queue", "q", "--url", "http://x/", "--start-at", "tomorrow"}, "--start-at must be an RFC 3339 time"},
	} {
		_, _, err := h.run(Schedules, c.args...)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}
