package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/client/clienttest"
)

const apiKey = "cli-test-key-9f8e7d6c5b4a"

// harness runs commands in-process against a fake API.
type harness struct {
	t   *testing.T
	srv *clienttest.Server
	env map[string]string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	srv := clienttest.New(t, apiKey)
	return &harness{t: t, srv: srv, env: map[string]string{"SPOOL_SERVER": srv.URL, "SPOOL_API_KEY": apiKey}}
}

func (h *harness) getenv(k string) string { return h.env[k] }

type cmdFunc func(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error

// run returns stdout, stderr and the error of one command.
func (h *harness) run(f cmdFunc, args ...string) (string, string, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := f(ctx, args, h.getenv, &out, &errb)
	return out.String(), errb.String(), err
}

// ok runs a command that must succeed and returns its stdout.
func (h *harness) ok(f cmdFunc, args ...string) string {
	h.t.Helper()
	out, errOut, err := h.run(f, args...)
	if err != nil {
		h.t.Fatalf("%v: %v (stderr %q)", args, err, errOut)
	}
	return out
}

// enqueueJSON enqueues and returns the decoded task JSON.
func (h *harness) enqueueJSON(args ...string) map[string]any {
	h.t.Helper()
	out := h.ok(Enqueue, append(args, "--output", "json")...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		h.t.Fatalf("enqueue json output %q: %v", out, err)
	}
	return m
}

func TestEnqueueSendsEveryFlag(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	task := h.enqueueJSON("emails", "http://127.0.0.1:9/hook",
		"--data", `{"to":"a@example.com"}`,
		"--content-type", "application/vnd.x+json",
		"--method", "put",
		"-H", "X-Tenant: acme", "-H", "X-Trace:abc",
		"--run-at", "2031-05-06T07:08:09Z",
		"--priority", "0",
		"--max-attempts", "4",
		"--timeout", "7s",
		"--idempotency-key", "k-1",
	)
	last := h.srv.Last()
	if got := last.Header.Get("Authorization"); got != "Bearer "+apiKey {
		t.Fatalf("Authorization %q", got)
	}
	var sent map[string]any
	if err := json.Unmarshal(last.Body, &sent); err != nil {
		t.Fatal(err)
	}
	want := `{"content_type":"application/vnd.x+json","idempotency_key":"k-1","max_attempts":4,"payload":{"to":"a@example.com"},"priority":0,"run_at":"2031-05-06T07:08:09Z","target":{"headers":{"X-Tenant":"acme","X-Trace":"abc"},"method":"PUT","url":"http://127.0.0.1:9/hook"},"timeout":"7s"}`
	if got, _ := json.Marshal(sent); string(got) != want {
		t.Fatalf("sent\n%s\nwant\n%s", got, want)
	}
	// The JSON output is the server's task, unknown fields included.
	if task["state"] != "scheduled" || task["queue"] != "emails" || task["payload_size"] == nil {
		t.Fatalf("output task %v", task)
	}
}

func TestEnqueueDefaultsSendNothingExtra(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.ok(Enqueue, "q", "https://example.com/x")
	// Only the target, and the idempotency key the client generates so its
	// retries cannot enqueue twice: a UUIDv7.
	var sent struct {
		Target         json.RawMessage `json:"target"`
		IdempotencyKey string          `json:"idempotency_key"`
	}
	body := h.srv.Last().Body
	if err := strictJSON(body, &sent); err != nil || string(sent.Target) != `{"url":"https://example.com/x"}` ||
		!regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(sent.IdempotencyKey) {
		t.Fatalf("sent %s (%v)", body, err)
	}
	// Table output: one field per line.
	for _, sub := range []string{"ID ", "QUEUE ", "q\n", "STATE ", "available", "ATTEMPT ", "0/25", "TARGET ", "POST https://example.com/x", "LAST ERROR "} {
		if !strings.Contains(out, sub) {
			t.Errorf("table output lacks %q:\n%s", sub, out)
		}
	}
}

func TestEnqueueDataSources(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "payload.json")
	if err := os.WriteFile(file, []byte(`{"from":"file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	task := h.enqueueJSON("q", "http://x/", "--data", "@"+file)
	if got := string(h.srv.Payload(task["id"].(string))); got != `{"from":"file"}` {
		t.Fatalf("file payload %q", got)
	}

	var out bytes.Buffer
	err := enqueue(context.Background(), []string{"q", "http://x/", "--data", "-", "--output", "json"}, h.getenv,
		strings.NewReader(`[1, 2, 3]`), &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(out.Bytes(), &m)
	// encoding/json compacts a JSON payload on the way out; same value.
	if got := string(h.srv.Payload(m["id"].(string))); got != `[1,2,3]` {
		t.Fatalf("stdin payload %q", got)
	}

	task = h.enqueueJSON("q", "http://x/", "--data-base64", "AAEC/w==", "--delay", "90s")
	if got := h.srv.Payload(task["id"].(string)); !bytes.Equal(got, []byte{0, 1, 2, 0xff}) {
		t.Fatalf("base64 payload %v", got)
	}
	if !strings.Contains(string(h.srv.Last().Body), `"delay":"1m30s"`) {
		t.Fatalf("delay not sent: %s", h.srv.Last().Body)
	}
}

func TestEnqueueIdempotentReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	first := h.enqueueJSON("q", "http://x/", "--idempotency-key", "once")
	out, errOut, err := h.run(Enqueue, "q", "http://x/", "--idempotency-key", "once", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	var second map[string]any
	_ = json.Unmarshal([]byte(out), &second)
	if second["id"] != first["id"] {
		t.Fatalf("replay id %v, want %v", second["id"], first["id"])
	}
	if !strings.Contains(errOut, "matched task") {
		t.Fatalf("no replay note on stderr: %q", errOut)
	}
}

func TestEnqueueBadUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"q", "http://x/", "--priority", "12"}, "enqueue: --priority must be 0-9, got 12"},
		{[]string{"q", "http://x/", "--priority", "-1"}, "enqueue: --priority must be 0-9, got -1"},
		{[]string{"q"}, "enqueue: missing URL"},
		{[]string{}, "enqueue: missing QUEUE URL"},
		{[]string{"q", "http://x/", "extra"}, `enqueue: unexpected argument "extra"`},
		{[]string{"q", "not a url"}, "enqueue: URL must be an absolute http or https URL"},
		{[]string{"q", "ftp://x/"}, "enqueue: URL must be an absolute http or https URL"},
		{[]string{"q", "http://x/", "--bogus"}, "enqueue: flag provided but not defined: -bogus"},
		{[]string{"q", "http://x/", "--data", "{nope"}, "enqueue: --data is not valid JSON"},
		{[]string{"q", "http://x/", "--data", "{}", "--data-base64", "AA=="}, "exclusive"},
		{[]string{"q", "http://x/", "--data-base64", "***"}, "--data-base64 is not valid base64"},
		{[]string{"q", "http://x/", "--delay", "1s", "--run-at", "2030-01-01T00:00:00Z"}, "--delay and --run-at are exclusive"},
		{[]string{"q", "http://x/", "--delay", "-1s"}, "--delay must be between 0"},
		{[]string{"q", "http://x/", "--run-at", "tomorrow"}, "--run-at must be an RFC 3339 time"},
		{[]string{"q", "http://x/", "--max-attempts", "0"}, "--max-attempts must be 1-1000, got 0"},
		{[]string{"q", "http://x/", "--timeout", "0s"}, "--timeout must be above 0"},
		{[]string{"q", "http://x/", "-H", "novalue"}, "want 'Name: value'"},
		{[]string{"q", "http://x/", "--output", "yaml"}, `enqueue: --output must be table or json, got "yaml"`},
		{[]string{"q", "http://x/", "--server", "ftp://host"}, "enqueue: --server/SPOOL_SERVER: server URL"},
		{[]string{"q", "http://x/", "--data", "@/nonexistent/file.json"}, "enqueue: --data @/nonexistent/file.json"},
	}
	for _, c := range cases {
		_, _, err := h.run(Enqueue, c.args...)
		if err == nil {
			t.Errorf("%v succeeded", c.args)
			continue
		}
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: %T %v, want *UsageError", c.args, err, err)
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %q, want one line containing %q", c.args, err, c.want)
		}
	}
	// Nothing reached the server.
	if last := h.srv.Last(); last.Method != "" {
		t.Fatalf("a bad command sent %s %s", last.Method, last.Path)
	}
}

func TestServerErrorsAreReported(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	_, _, err := h.run(Tasks, "get", "nope")
	if err == nil || !strings.Contains(err.Error(), `404 Not Found: task "nope" not found`) {
		t.Fatalf("err = %v", err)
	}
	h.env["SPOOL_API_KEY"] = "wrong"
	_, _, err = h.run(Queues, "list")
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("err = %v", err)
	}
	// --api-key beats the environment.
	h.ok(Queues, "list", "--api-key", apiKey)
	// --server beats the environment too.
	h.env["SPOOL_SERVER"] = "http://127.0.0.1:1"
	h.ok(Queues, "list", "--api-key", apiKey, "--server", h.srv.URL)
	if _, _, err := h.run(Queues, "list", "--api-key", apiKey); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable server err = %v", err)
	}
}

func TestTasksCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var ids []string
	for range 5 {
		ids = append(ids, h.enqueueJSON("q", "http://x/")["id"].(string))
	}

	// get: flags after the id work.
	out := h.ok(Tasks, "get", ids[0], "--output", "json")
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["id"] != ids[0] {
		t.Fatalf("get json %q: %v", out, err)
	}
	if out := h.ok(Tasks, "get", ids[0]); !strings.Contains(out, ids[0]) || !strings.Contains(out, "STATE") {
		t.Fatalf("get table:\n%s", out)
	}

	// list, one page, with the cursor hint on stderr.
	out, errOut, err := h.run(Tasks, "list", "q", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], ids[0]) {
		t.Fatalf("list page:\n%s", out)
	}
	if !strings.Contains(errOut, "--cursor "+ids[1]) {
		t.Fatalf("no cursor hint: %q", errOut)
	}
	// The next page from that cursor.
	out = h.ok(Tasks, "list", "q", "--limit", "2", "--cursor", ids[1])
	if !strings.Contains(out, ids[2]) || strings.Contains(out, ids[1]) {
		t.Fatalf("second page:\n%s", out)
	}
	// --all follows every cursor.
	out = h.ok(Tasks, "list", "q", "--limit", "2", "--all", "--output", "json")
	var page struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
		NextCursor string `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Tasks) != 5 || page.Tasks[4].ID != ids[4] || page.NextCursor != "" {
		t.Fatalf("--all = %+v", page)
	}

	// cancel, then retry; state filter.
	if out := h.ok(Tasks, "cancel", ids[2]); !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel:\n%s", out)
	}
	out = h.ok(Tasks, "list", "q", "--state", "cancelled", "--output", "json")
	if !strings.Contains(out, ids[2]) || strings.Contains(out, ids[0]) {
		t.Fatalf("state filter:\n%s", out)
	}
	if _, _, err := h.run(Tasks, "cancel", ids[2]); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("second cancel = %v", err)
	}
	if out := h.ok(Tasks, "retry", ids[2], "--output", "json"); !strings.Contains(out, `"available"`) {
		t.Fatalf("retry:\n%s", out)
	}
	if h.srv.Last().Path != "/v1/tasks/"+ids[2]+"/retry" {
		t.Fatalf("retry path %s", h.srv.Last().Path)
	}

	// Empty queue: a header only in table, an empty array in JSON.
	if out := h.ok(Tasks, "list", "empty", "--output", "json"); !strings.Contains(out, `"tasks": []`) {
		t.Fatalf("empty json:\n%s", out)
	}
}

// TestTasksHeadersRedacted: tasks get shows target header names with the
// values the API redacted; --view full asks for the values (tasks list
// too), and the table never shows more than the API gave.
func TestTasksHeadersRedacted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.enqueueJSON("q", "http://x/", "-H", "Authorization: Bearer receiver-secret", "-H", "X-Tenant: acme")["id"].(string)

	out := h.ok(Tasks, "get", id)
	if !strings.Contains(out, "Authorization: [redacted], X-Tenant: [redacted]") || strings.Contains(out, "receiver-secret") {
		t.Fatalf("get table:\n%s", out)
	}
	if q := h.srv.Last().Query; q != "" {
		t.Errorf("get without --view sent query %q", q)
	}
	for _, args := range [][]string{{"get", id, "--output", "json"}, {"list", "q", "--output", "json"}} {
		if out := h.ok(Tasks, args...); strings.Contains(out, "receiver-secret") || !strings.Contains(out, `"[redacted]"`) {
			t.Errorf("%v:\n%s", args, out)
		}
	}

	out = h.ok(Tasks, "get", id, "--view", "full")
	if !strings.Contains(out, "Authorization: Bearer receiver-secret, X-Tenant: acme") || h.srv.Last().Query != "view=full" {
		t.Fatalf("get --view full (query %q):\n%s", h.srv.Last().Query, out)
	}
	out = h.ok(Tasks, "list", "q", "--view", "full", "--output", "json")
	if !strings.Contains(out, "receiver-secret") || !strings.Contains(h.srv.Last().Query, "view=full") {
		t.Fatalf("list --view full (query %q):\n%s", h.srv.Last().Query, out)
	}
	if out := h.ok(Tasks, "get", h.enqueueJSON("q", "http://x/")["id"].(string)); !strings.Contains(out, "HEADERS") {
		t.Fatalf("no HEADERS row:\n%s", out)
	}
}

func TestTasksBadUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "tasks: missing subcommand: one of get, list, cancel, retry"},
		{[]string{"frob"}, `tasks: unknown subcommand "frob"`},
		{[]string{"get"}, "tasks get: missing ID"},
		{[]string{"get", "a", "b"}, `tasks get: unexpected argument "b"`},
		{[]string{"list"}, "tasks list: missing QUEUE"},
		{[]string{"list", "q", "--state", "done"}, `tasks list: --state must be one of scheduled, available, running, retrying, succeeded, failed, cancelled, got "done"`},
		{[]string{"list", "q", "--limit", "0"}, "tasks list: --limit must be 1-1000, got 0"},
		{[]string{"list", "q", "--limit", "x"}, `tasks list: invalid value "x" for flag -limit`},
		{[]string{"cancel", "--output", "xml", "id"}, "tasks cancel: --output must be table or json"},
		{[]string{"get", "id", "--view", "all"}, `tasks get: --view must be redacted or full, got "all"`},
		{[]string{"list", "q", "--view", "all"}, `tasks list: --view must be redacted or full, got "all"`},
	}
	for _, c := range cases {
		_, _, err := h.run(Tasks, c.args...)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}

func TestQueuesCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.enqueueJSON("emails", "http://x/")
	h.enqueueJSON("billing", "http://x/", "--delay", "1h")

	out := h.ok(Queues, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "billing") {
		t.Fatalf("list:\n%s", out)
	}
	if f := strings.Fields(lines[2]); len(f) < 10 || f[0] != "emails" || f[1] != "active" || f[6] != "1" {
		t.Fatalf("emails row %q", lines[2])
	}
	out = h.ok(Queues, "list", "--output", "json")
	var ql struct {
		Queues []map[string]any `json:"queues"`
	}
	if err := json.Unmarshal([]byte(out), &ql); err != nil || len(ql.Queues) != 2 {
		t.Fatalf("list json %q: %v", out, err)
	}

	out = h.ok(Queues, "get", "billing")
	for _, sub := range []string{"NAME", "billing", "STATUS", "active", "TIMEOUT", "30s", "SCHEDULED", "CONCURRENCY", "unlimited"} {
		if !strings.Contains(out, sub) {
			t.Errorf("get lacks %q:\n%s", sub, out)
		}
	}

	if out := h.ok(Queues, "pause", "emails"); !strings.Contains(out, "paused") {
		t.Fatalf("pause:\n%s", out)
	}
	if last := h.srv.Last(); last.Method != "PATCH" || string(last.Body) != `{"paused":true}` {
		t.Fatalf("pause sent %s %s", last.Method, last.Body)
	}
	h.ok(Queues, "resume", "emails")
	if string(h.srv.Last().Body) != `{"paused":false}` {
		t.Fatalf("resume sent %s", h.srv.Last().Body)
	}

	// set sends only the flags given, zero included.
	out = h.ok(Queues, "set", "emails", "--concurrency", "0", "--rate-limit", "2.5", "--output", "json")
	if got := string(h.srv.Last().Body); got != `{"concurrency":0,"rate_limit":2.5}` {
		t.Fatalf("set sent %s", got)
	}
	if !strings.Contains(out, `"rate_limit": 2.5`) {
		t.Fatalf("set output:\n%s", out)
	}
	h.ok(Queues, "set", "--timeout", "10s", "emails", "--max-attempts", "3")
	if got := string(h.srv.Last().Body); got != `{"max_attempts":3,"timeout":"10s"}` {
		t.Fatalf("set sent %s", got)
	}
	// The retry statuses go as canonical tokens.
	out = h.ok(Queues, "set", "emails", "--weight", "4", "--retry-statuses", "503, 429,500-502,timeout")
	if got := string(h.srv.Last().Body); got != `{"weight":4,"retry_statuses":["429","500-503","timeout"]}` {
		t.Fatalf("set sent %s", got)
	}
	for _, sub := range []string{"WEIGHT", "4", "RETRY STATUSES", "429,500-503,timeout"} {
		if !strings.Contains(out, sub) {
			t.Errorf("set output lacks %q:\n%s", sub, out)
		}
	}
	out = h.ok(Queues, "set", "emails", "--retry-statuses", "none")
	if got := string(h.srv.Last().Body); got != `{"retry_statuses":[]}` {
		t.Fatalf("set sent %s", got)
	}
	if !regexp.MustCompile(`RETRY STATUSES\s+none`).MatchString(out) {
		t.Errorf("set output does not show an empty set as none:\n%s", out)
	}

	if _, _, err := h.run(Queues, "get", "nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing queue = %v", err)
	}
}

func TestQueuesBadUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "queues: missing subcommand"},
		{[]string{"list", "extra"}, `queues list: unexpected argument "extra"`},
		{[]string{"get"}, "queues get: missing NAME"},
		{[]string{"set", "q"}, "queues set: nothing to change"},
		{[]string{"set", "q", "--concurrency", "-1"}, "queues set: --concurrency must be 0 (unlimited) or more, got -1"},
		{[]string{"set", "q", "--rate-limit", "-2"}, "queues set: --rate-limit must be 0"},
		{[]string{"set", "q", "--rate-limit", "NaN"}, "queues set: --rate-limit must be 0"},
		{[]string{"set", "q", "--max-attempts", "0"}, "queues set: --max-attempts must be 1-1000, got 0"},
		{[]string{"set", "q", "--timeout", "-5s"}, "queues set: --timeout must be above 0"},
		{[]string{"set", "q", "--weight", "0"}, "queues set: --weight must be 1-1000, got 0"},
		{[]string{"set", "q", "--weight", "1001"}, "queues set: --weight must be 1-1000, got 1001"},
		{[]string{"set", "q", "--retry-statuses", "200"}, `queues set: --retry-statuses: "200": 1xx and 2xx are not failures`},
		{[]string{"set", "q", "--retry-statuses", "often"}, `queues set: --retry-statuses: "often": not an HTTP status`},
		{[]string{"set", "q", "--retry-statuses", ""}, `queues set: --retry-statuses needs a list`},
	}
	for _, c := range cases {
		_, _, err := h.run(Queues, c.args...)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}

func TestDestinationsCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if out := h.ok(Destinations, "list"); strings.TrimSpace(out) != "DESTINATION  LIMIT  MAX CONCURRENCY  RATE LIMIT  IN FLIGHT  REPLICAS  BREAKER  SUCCESS RATE  LATENCY" {
		t.Fatalf("empty list:\n%s", out)
	}

	// set sends only the flags given, zero included, to the normalized name.
	out := h.ok(Destinations, "set", "https://API.example.com/hooks?x=1", "--max-concurrency", "0", "--rate-limit", "2.5", "--output", "json")
	last := h.srv.Last()
	if last.Method != "PATCH" || last.Path != "/v1/destinations/https:%2F%2Fapi.example.com:443" {
		t.Fatalf("set sent %s %s", last.Method, last.Path)
	}
	if got := string(last.Body); got != `{"max_concurrency":0,"rate_limit":2.5}` {
		t.Fatalf("set sent %s", got)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(out), &d); err != nil || d["destination"] != "https://api.example.com:443" || d["rate_limit"] != 2.5 {
		t.Fatalf("set json output %q: %v", out, err)
	}
	h.ok(Destinations, "set", "--max-concurrency", "20", "https://api.example.com:443")
	if got := string(h.srv.Last().Body); got != `{"max_concurrency":20}` {
		t.Fatalf("set sent %s", got)
	}

	openUntil := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	h.srv.SetDestination(clienttest.Destination{
		Destination: "http://b.example:8080", Limit: 12.5, LimitState: "learned", InFlight: 3, Replicas: 2,
		Breaker: "open", ConsecutiveFailures: 5, OpenUntil: &openUntil, Cooldown: "30s", SuccessRate: 0.9,
		Latency: "12ms", RecentSuccesses: 9, RecentFailures: 1, CreatedAt: openUntil, UpdatedAt: openUntil,
	})
	out = h.ok(Destinations, "get", "http://b.example:8080/x")
	for _, sub := range []string{"DESTINATION ", "http://b.example:8080\n", "LIMIT ", "12.5\n", "BREAKER ", "open\n",
		"OPEN UNTIL ", "2030-01-02T03:04:05Z", "HOLD UNTIL ", "COOLDOWN ", "30s", "SUCCESS RATE ", "90.0%", "LATENCY ", "12ms",
		"MAX CONCURRENCY ", "unlimited", "CONSECUTIVE FAILURES ", "5\n"} {
		if !strings.Contains(out, sub) {
			t.Errorf("get lacks %q:\n%s", sub, out)
		}
	}

	out = h.ok(Destinations, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "DESTINATION") {
		t.Fatalf("list:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) != 9 || f[0] != "http://b.example:8080" || f[1] != "12.5" || f[4] != "3" || f[5] != "2" || f[6] != "open" || f[7] != "90.0%" {
		t.Fatalf("b row %q", lines[1])
	}
	if !strings.HasPrefix(lines[2], "https://api.example.com:443") || !strings.Contains(lines[2], "(slow start)") || !strings.Contains(lines[2], "2.5/s") {
		t.Fatalf("api row %q", lines[2])
	}
	out = h.ok(Destinations, "list", "--output", "json")
	var dl struct {
		Destinations []map[string]any `json:"destinations"`
	}
	if err := json.Unmarshal([]byte(out), &dl); err != nil || len(dl.Destinations) != 2 || dl.Destinations[0]["breaker"] != "open" {
		t.Fatalf("list json %q: %v", out, err)
	}

	// Server refusals are one-line errors that are not usage errors.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "https://nope.example"}, "404"},
		{[]string{"set", "https://api.example.com", "--max-concurrency", "100001"}, "422"},
	} {
		_, _, err := h.run(Destinations, c.args...)
		var ue *UsageError
		if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want a one-line %s error", c.args, err, c.want)
		}
	}
}

func TestDestinationsBadUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "destinations: missing subcommand"},
		{[]string{"delete"}, `destinations: unknown subcommand "delete"`},
		{[]string{"list", "extra"}, `destinations list: unexpected argument "extra"`},
		{[]string{"get"}, "destinations get: missing DESTINATION"},
		{[]string{"get", "ftp://x"}, `destinations get: DESTINATION must be an http(s) URL such as https://api.example.com:443, got "ftp://x"`},
		{[]string{"get", "api.example.com"}, "destinations get: DESTINATION must be an http(s) URL"},
		{[]string{"set", "https://h"}, "destinations set: nothing to change"},
		{[]string{"set", "h", "--max-concurrency", "1"}, "destinations set: DESTINATION must be an http(s) URL"},
		{[]string{"set", "https://h", "--max-concurrency", "-1"}, "destinations set: --max-concurrency must be 0 (no ceiling) or more, got -1"},
		{[]string{"set", "https://h", "--max-concurrency", "lots"}, "destinations set: invalid value"},
		{[]string{"set", "https://h", "--rate-limit", "-2"}, "destinations set: --rate-limit must be 0"},
		{[]string{"set", "https://h", "--rate-limit", "NaN"}, "destinations set: --rate-limit must be 0"},
		{[]string{"set", "https://h", "--rate-limit", "+Inf"}, "destinations set: --rate-limit must be 0"},
		{[]string{"set", "https://h", "--concurrency", "1"}, "destinations set: flag provided but not defined: -concurrency"},
	}
	for _, c := range cases {
		_, _, err := h.run(Destinations, c.args...)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want a one-line usage error containing %q", c.args, err, c.want)
		}
	}
	if h.srv.Last().Method != "" {
		t.Errorf("a bad command line reached the server: %s %s", h.srv.Last().Method, h.srv.Last().Path)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cases := []struct {
		f    cmdFunc
		args []string
	}{
		{Enqueue, nil},
		{Tasks, nil}, {Tasks, []string{"get"}}, {Tasks, []string{"list"}}, {Tasks, []string{"cancel"}}, {Tasks, []string{"retry"}},
		{Queues, nil}, {Queues, []string{"list"}}, {Queues, []string{"get"}}, {Queues, []string{"pause"}},
		{Queues, []string{"resume"}}, {Queues, []string{"set"}},
		{Destinations, nil}, {Destinations, []string{"list"}}, {Destinations, []string{"get"}}, {Destinations, []string{"set"}},
		{Schedules, nil}, {Schedules, []string{"list"}}, {Schedules, []string{"get"}}, {Schedules, []string{"set"}},
		{Schedules, []string{"delete"}}, {Schedules, []string{"trigger"}}, {Schedules, []string{"pause"}}, {Schedules, []string{"resume"}},
		{Sink, nil},
	}
	for _, c := range cases {
		for _, flagName := range []string{"--help", "-h"} {
			out, errOut, err := h.run(c.f, append(c.args, flagName)...)
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("%v %s: err %v, want flag.ErrHelp", c.args, flagName, err)
			}
			if !strings.HasPrefix(out, "Usage: spool ") || !strings.Contains(out, "Example") {
				t.Errorf("%v %s: usage lacks Usage/Example:\n%s", c.args, flagName, out)
			}
			if errOut != "" {
				t.Errorf("%v %s wrote to stderr: %q", c.args, flagName, errOut)
			}
			if strings.Contains(out, apiKey) {
				t.Errorf("%v %s printed the API key", c.args, flagName)
			}
		}
	}
	// A subcommand's help lists its own flags.
	out, _, _ := h.run(Tasks, "list", "--help")
	for _, sub := range []string{"-state", "-limit", "-cursor", "-all", "-server", "-api-key", "-output"} {
		if !strings.Contains(out, sub) {
			t.Errorf("tasks list --help lacks %s", sub)
		}
	}
}

func TestParseInterspersedAndDoubleDash(t *testing.T) {
	t.Parallel()
	cmd := newCommand("x", "Usage: spool x\n")
	v := cmd.fs.Bool("v", false, "")
	pos, err := cmd.parse([]string{"a", "-v", "b", "--", "-c", "--"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !*v || strings.Join(pos, ",") != "a,b,-c,--" {
		t.Fatalf("v=%v pos=%q", *v, pos)
	}
}

// strictJSON decodes data into v, refusing fields v does not name.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// TestTasksGetShowsAttempts: tasks get prints the task's attempts after
// it, as a table and, with --output json, as the task's "attempts".
func TestTasksGetShowsAttempts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.enqueueJSON("q", "http://x/")["id"].(string)
	out := h.ok(Tasks, "get", id)
	if !strings.Contains(out, "ATTEMPTS  none") {
		t.Errorf("get of a task never attempted:\n%s", out)
	}
	start := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	dur, status, excerpt, replica, trace := "1.5s", 500, "database\non fire", "replica-1", "4bf92f3577b34da6a3ce929d0e0e4736"
	h.srv.AddAttempt(id, clienttest.Attempt{Attempt: 1, StartedAt: &start, FinishedAt: start.Add(1500 * time.Millisecond), Duration: &dur,
		Outcome: "retry", Status: &status, Error: &clienttest.AttemptError{Class: "http_status", Message: "HTTP 500 Internal Server Error: database on fire"},
		ResponseExcerpt: &excerpt, ResponseHeaders: map[string]string{"Content-Type": "text/plain"}, Replica: &replica, TraceID: &trace})
	h.srv.AddAttempt(id, clienttest.Attempt{Attempt: 2, FinishedAt: start.Add(time.Minute), Outcome: "expired",
		Error: &clienttest.AttemptError{Class: "lease_expired", Message: "lease expired"}})

	out = h.ok(Tasks, "get", id)
	for _, want := range []string{"ATTEMPTS", "OUTCOME", "retry", "500", "2026-03-04T05:06:07Z", "1.5s", "http_status", "replica-1", trace,
		"database on fire", "expired", "lease_expired: lease expired"} {
		if !strings.Contains(out, want) {
			t.Errorf("get table lacks %q:\n%s", want, out)
		}
	}
	out = h.ok(Tasks, "get", id, "--output", "json")
	var got struct {
		ID       string            `json:"id"`
		Target   map[string]any    `json:"target"`
		Attempts []json.RawMessage `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.ID != id || got.Target["url"] != "http://x/" || len(got.Attempts) != 2 {
		t.Fatalf("get json (%v):\n%s", err, out)
	}
	var first map[string]any
	if err := json.Unmarshal(got.Attempts[0], &first); err != nil || first["response_excerpt"] != excerpt || first["duration"] != dur || first["trace_id"] != trace {
		t.Errorf("first attempt in json = %v (%v)", first, err)
	}
}

// TestTasksBulkCommands: list filters reach the query string; cancel and
// retry take several ids with --queue (a line per id, non-zero exit when
// one was refused) and a state with --all, looping until none is left.
func TestTasksBulkCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var ids []string
	for i := range 25 {
		ids = append(ids, h.enqueueJSON("q", fmt.Sprintf("http://h%d.example/", i%2), "--priority", strconv.Itoa(i%5))["id"].(string))
	}
	out := h.ok(Tasks, "list", "q", "--priority", "3", "--target-host", "h1.example", "--created-after", "2020-01-01T00:00:00Z",
		"--run-before", "2999-01-01T00:00:00Z", "--all", "--limit", "1", "--output", "json")
	if q := h.srv.Last().Query; !strings.Contains(q, "priority=3") || !strings.Contains(q, "target_host=h1.example") ||
		!strings.Contains(q, "created_after=2020-01-01T00%3A00%3A00Z") || !strings.Contains(q, "run_before=") {
		t.Errorf("list query %s", q)
	}
	// Priority 3 on h1: tasks 3, 13, 23; pages of 1 scan 10 tasks, and
	// --all follows the cursors of empty pages.
	for _, i := range []int{3, 13, 23} {
		if !strings.Contains(out, ids[i]) {
			t.Errorf("filtered --all lacks task %d:\n%s", i, out)
		}
	}
	if strings.Count(out, `"id"`) != 3 {
		t.Errorf("filtered --all listed %d tasks, want 3:\n%s", strings.Count(out, `"id"`), out)
	}

	// Several ids: a line each.
	out = h.ok(Tasks, "cancel", "--queue", "q", ids[0], ids[1], ids[2])
	if strings.Count(out, "cancelled") != 6 || !strings.HasSuffix(h.srv.Last().Path, "/v1/queues/q/tasks/cancel") {
		t.Errorf("cancel several:\n%s", out)
	}
	// Again: every one refused, reported, and the command fails.
	out, _, err := h.run(Tasks, "cancel", "--queue", "q", ids[0], ids[3])
	if err == nil || !strings.Contains(err.Error(), "1 of 2 tasks not cancelled") || !strings.Contains(out, "it is cancelled") {
		t.Errorf("cancel a cancelled task: %v\n%s", err, out)
	}
	// Every cancelled task, one request at a time until done.
	out = h.ok(Tasks, "retry", "--queue", "q", "--state", "cancelled", "--all")
	if !strings.Contains(out, "retried 4 cancelled tasks of q") {
		t.Errorf("retry --state cancelled --all: %s", out)
	}
	out = h.ok(Tasks, "cancel", "--queue", "q", "--state", "available", "--output", "json")
	var r struct {
		Count int  `json:"count"`
		More  bool `json:"more"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Count != 25 || r.More {
		t.Errorf("cancel --state available: %v %s", err, out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"retry"}, "tasks retry: missing ID"},
		{[]string{"retry", ids[0], ids[1]}, "tasks retry: several ids need --queue"},
		{[]string{"retry", "--state", "failed"}, "tasks retry: --state needs --queue"},
		{[]string{"retry", "--queue", "q", "--state", "succeeded"}, `tasks retry: --state must be one of failed, cancelled, got "succeeded"`},
		{[]string{"cancel", "--queue", "q", "--state", "failed"}, `tasks cancel: --state must be one of scheduled, available, running, retrying, got "failed"`},
		{[]string{"retry", "--queue", "q", "--state", "failed", ids[0]}, "tasks retry: give ids or --state, not both"},
		{[]string{"retry", "--all", ids[0]}, "tasks retry: --all and --cursor go with --state"},
		{[]string{"list", "q", "--priority", "10"}, "tasks list: --priority must be 0-9, got 10"},
		{[]string{"list", "q", "--created-after", "yesterday"}, "tasks list: invalid value \"yesterday\" for flag -created-after"},
	} {
		_, _, err := h.run(Tasks, c.args...)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}
