package monitoring

// The live test: a real `spool sink` and `spool serve` (embedded SQLite),
// a real Prometheus scraping spool's admin port every second with the
// shipped config and rules, a little load, then every dashboard query and
// every alert expression through Prometheus's HTTP API.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spoolhq/spool/webhook"
)

// Time bounds: the build is usually seconds from the cache, the run itself
// well under a minute.
const (
	buildTimeout = 3 * time.Minute
	runTimeout   = 90 * time.Second
	pollFor      = 45 * time.Second // of runTimeout, for the data to appear
)

// Values Grafana would substitute. $__rate_interval is 4 × the
// datasource's scrape interval (15s in the shipped provisioning) = 1m;
// $queue's and $destination's All value is .*.
var dashboardVars = map[string]string{
	"$__rate_interval": "1m",
	"$queue":           ".*",
	"$destination":     ".*",
}

const liveAPIKey = "monitoring-test-key"

func TestLivePrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the live Prometheus test (about 15s) in -short mode")
	}
	t.Parallel()
	promBin := tool(t, "prometheus")
	promtool := tool(t, "promtool")
	root := repoRoot(t)
	d := loadDashboard(t) // before anything starts: a bad file fails fast
	dir := t.TempDir()
	bin := buildSpool(t, root, dir)

	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()

	// --- Spool: a sink to deliver to, and serve on SQLite in dir. ---
	key, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sinkAddr := freeAddr(t)
	sink := startProc(t, "spool sink", bin, []string{"SPOOL_SIGNING_KEYS=" + key}, "sink", "--addr", sinkAddr)
	waitReady(t, ctx, "http://"+sinkAddr+"/stats", sink)
	// More receivers, each a destination (scheme://host:port) of its own,
	// so that the failures injected into one do not trip another's circuit
	// breaker: failing takes the webhooks queue's 500s and fail-once
	// deliveries (its breaker may open and close), down answers 503 to
	// everything (its breaker opens and stays open) and throttled 429
	// (refused, which never opens a breaker). sink's destination, where
	// everything succeeds (or is a 404), stays closed, so its deliveries
	// are not deferred and released in bursts.
	var sinks [3]*proc
	var dests [3]string
	for i, name := range []string{"failing", "down", "throttled"} {
		addr := freeAddr(t)
		sinks[i] = startProc(t, "spool sink ("+name+")", bin, []string{"SPOOL_SIGNING_KEYS=" + key}, "sink", "--addr", addr)
		waitReady(t, ctx, "http://"+addr+"/stats", sinks[i])
		dests[i] = "http://" + addr
	}
	failingDest, downDest, throttledDest := dests[0], dests[1], dests[2]
	apiAddr, adminAddr := freeAddr(t), freeAddr(t)
	serve := startProc(t, "spool serve", bin, []string{
		"SPOOL_HTTP_ADDR=" + apiAddr, "SPOOL_ADMIN_ADDR=" + adminAddr,
		"SPOOL_API_KEYS=" + liveAPIKey, "SPOOL_SIGNING_KEYS=" + key,
		"SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "SPOOL_DRAIN_DELAY=0s",
		"SPOOL_DATABASE_URL=", "DATABASE_URL=", "SPOOL_DATA_DIR=" + filepath.Join(dir, "data"),
		"SPOOL_WORKERS=8", "SPOOL_POLL_INTERVAL=200ms",
		"SPOOL_RETRY_MIN_BACKOFF=50ms", "SPOOL_RETRY_MAX_BACKOFF=200ms", "SPOOL_LOG_LEVEL=warn",
	}, "serve")
	waitReady(t, ctx, "http://"+apiAddr+"/readyz", serve)

	// --- Prometheus: the shipped config, pointed at this spool. ---
	promAddr := freeAddr(t)
	cfg := livePromConfig(t, root, dir, adminAddr, promAddr)
	if out, err := exec.CommandContext(ctx, promtool, "check", "config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config (the shipped prometheus.yml, retargeted): %v\n%s", err, out)
	}
	prom := startProc(t, "prometheus", promBin, nil,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	waitReady(t, ctx, "http://"+promAddr+"/-/ready", prom)
	pc := &promClient{base: "http://" + promAddr}

	// Load starts after the first scrape: a counter series that appears
	// already past zero has no rate, so increases before it would be lost.
	up := &check{name: "first scrape", expr: `up{job="spool"} == 1`, wantData: true}
	for !up.ok {
		if up.run(t, ctx, pc); ctx.Err() != nil {
			t.Fatalf("prometheus never scraped spool: %s", up.last)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// --- Load ---
	ld := &load{t: t, api: "http://" + apiAddr, sink: "http://" + sinkAddr, failing: failingDest, down: downDest, throttled: throttledDest}
	ld.initial(ctx)
	stopLoad := ld.background(ctx)
	defer stopLoad()

	// --- What to check ---
	var checks []*check
	for _, p := range queryPanels(d) {
		for _, tg := range p.Targets {
			expr, err := substitute(tg.Expr)
			if err != nil {
				t.Fatalf("panel %q target %s: %v", p.Title, tg.RefID, err)
			}
			checks = append(checks, &check{name: fmt.Sprintf("panel %q %s", p.Title, tg.RefID), expr: expr, wantData: true})
		}
	}
	nPanelQueries := len(checks)
	// The series the alerts and panels rely on say what the load did: not
	// only present, but right (each returns data only when true).
	for _, e := range []string{
		`max(spool_queue_oldest_due_age_seconds{queue="paused"}) > 0`,              // due task in a paused queue ages
		`max(spool_queue_depth{queue="later", state="scheduled"}) == 1`,            // one scheduled, one cancelled
		`sum(spool_tasks_finished_total{queue="later", outcome="cancelled"}) == 1`, // the cancel counted
		`sum(spool_tasks_finished_total{queue="webhooks", outcome="failed"}) > 0`,
		`sum(spool_tasks_finished_total{queue="webhooks", outcome="retried"}) > 0`,
		`sum(spool_tasks_finished_total{queue="reports", outcome="failed"}) == 1`,
		`sum(spool_http_requests_total{route="unmatched", code="404"}) > 0`,
		`sum(spool_http_requests_total{route="GET /v1/tasks/{id}", code="404"}) > 0`,
		`max_over_time(spool_workers_busy[1m]) > 0`,
		`spool_workers_max == 9`, // SPOOL_WORKERS=8 and the fair scheduler's reserve of 1
		`sum(spool_leader) == 1`,
		`sum(spool_schedule_runs_total{schedule="every-second", outcome="enqueued"}) > 0`,
		`sum(spool_destination_requests_total{destination="http://` + sinkAddr + `", outcome="answered"}) > 0`,
		`max(spool_destination_limit{destination="http://` + sinkAddr + `"}) > 0`,
		`max(spool_destination_breaker_open{destination="http://` + sinkAddr + `"}) == 0`,
		`sum(spool_destination_requests_total{destination="` + failingDest + `", outcome="failed"}) > 0`,
		`max(spool_destination_breaker_open{destination="` + downDest + `"}) == 1`,                 // 503s opened it
		`sum(spool_destination_deferred_total{destination="` + downDest + `", reason="open"}) > 0`, // tasks wait behind it
		`sum(spool_destination_requests_total{destination="` + throttledDest + `", outcome="refused"}) > 0`,
		`max(spool_destination_breaker_open{destination="` + throttledDest + `"}) == 0`, // 429 never opens it
	} {
		checks = append(checks, &check{name: "load effect", expr: e, wantData: true})
	}
	nEffects := len(checks) - nPanelQueries
	var queueVar, destVar string
	for _, v := range d.Templating.List {
		switch v.Name {
		case "queue":
			queueVar = v.Definition
		case "destination":
			destVar = v.Definition
		}
	}

	// The alerts as Prometheus loaded them (the authoritative parse).
	var rules []promRule
	deadline := time.Now().Add(30 * time.Second)
	for {
		rules = pc.rules(t, ctx)
		if allEvaluated(rules) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	checkLoadedRules(t, rules)
	for _, r := range rules {
		// An alert expression returns series only while it fires: it must
		// parse and evaluate, not return data.
		checks = append(checks, &check{name: "alert " + r.Name, expr: r.Query})
	}
	nAlertExprs := len(checks) - nPanelQueries - nEffects

	// --- Poll until every panel query returns data (or the run times out). ---
	start := time.Now()
	for {
		pending := 0
		for _, c := range checks {
			if c.ok || c.failed != "" {
				continue
			}
			c.run(t, ctx, pc)
			if !c.ok && c.failed == "" {
				pending++
			}
		}
		values := pc.labelValues(t, ctx, "queue", strings.TrimSuffix(strings.TrimPrefix(queueVar, "label_values("), ", queue)"))
		varOK := slices.Contains(values, "emails")
		dests := pc.labelValues(t, ctx, "destination", strings.TrimSuffix(strings.TrimPrefix(destVar, "label_values("), ", destination)"))
		destVarOK := slices.Contains(dests, "http://"+sinkAddr) && slices.Contains(dests, downDest)
		// The alerts are pending where the load makes them true: they
		// match real series, not only parse.
		active := pc.alerts(t, ctx)
		pendingFor := func(alert, label, value string) bool {
			return slices.ContainsFunc(active, func(a promAlert) bool {
				return a.Labels["alertname"] == alert && a.Labels[label] == value
			})
		}
		alertOK := pendingFor("SpoolDeliveryFailureRatioHigh", "queue", "webhooks")
		breakerOK := pendingFor("SpoolDestinationBreakerOpen", "destination", downDest)
		refusingOK := pendingFor("SpoolDestinationRefusing", "destination", throttledDest)
		if pending == 0 && varOK && destVarOK && alertOK && breakerOK && refusingOK {
			break
		}
		for _, p := range append([]*proc{serve, sink, prom}, sinks[:]...) {
			select {
			case <-p.done:
				t.Fatalf("%s exited during the test: %v\n%s", p.name, p.err, p.out.tail(3000))
			default:
			}
		}
		if time.Since(start) > pollFor {
			for _, c := range checks {
				if !c.ok && c.failed == "" {
					t.Errorf("%s: no data within %s: %s\n  expr: %s", c.name, time.Since(start).Round(time.Second), c.last, c.expr)
				}
			}
			if !varOK {
				t.Errorf("$queue variable (%s) gave %v, want emails among them", queueVar, values)
			}
			if !destVarOK {
				t.Errorf("$destination variable (%s) gave %v, want http://%s and %s among them", destVar, dests, sinkAddr, downDest)
			}
			if !alertOK {
				t.Errorf("SpoolDeliveryFailureRatioHigh is not pending for queue webhooks, whose attempts mostly fail")
			}
			if !breakerOK {
				t.Errorf("SpoolDestinationBreakerOpen is not pending for %s, which answers 503 to everything", downDest)
			}
			if !refusingOK {
				t.Errorf("SpoolDestinationRefusing is not pending for %s, which answers 429 to everything", throttledDest)
			}
			break
		}
		time.Sleep(time.Second)
	}
	for _, c := range checks {
		if c.failed != "" {
			t.Errorf("%s: %s\n  expr: %s", c.name, c.failed, c.expr)
		}
	}

	// Every metric the dashboard and the alerts name exists in the scrape,
	// so no `or vector(0)` fallback hides a missing one.
	names := pc.labelValues(t, ctx, "__name__", "")
	for _, m := range metricNames(checks) {
		if !slices.Contains(names, m) {
			t.Errorf("metric %s, used by the dashboard or the alerts, is not in spool's scrape", m)
		}
	}

	// On this healthy instance the alerts that judge health stay silent;
	// the failure ratio and the destination alerts may be pending, as the
	// load injects failures and runs two failing receivers.
	mayBeActive := map[string]bool{"SpoolDeliveryFailureRatioHigh": true, "SpoolDestinationBreakerOpen": true, "SpoolDestinationRefusing": true}
	for _, a := range pc.alerts(t, ctx) {
		name := a.Labels["alertname"]
		if mayBeActive[name] {
			t.Logf("alert %s is %s, as expected under injected failures", name, a.State)
			continue
		}
		t.Errorf("alert %s is %s on a healthy instance (labels %v)", name, a.State, a.Labels)
	}
	t.Logf("checked %d dashboard panel queries (%d panels), %d alert expressions and %d load effects through Prometheus in %s",
		nPanelQueries, len(queryPanels(d)), nAlertExprs, nEffects, time.Since(start).Round(time.Second))
}

// --- Building and running processes ---

func buildSpool(t *testing.T, root, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	bin := filepath.Join(dir, "spool")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/spool")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/spool: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.String()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return b
}

type proc struct {
	name string
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startProc runs bin; the test's cleanup stops it (SIGTERM, then SIGKILL
// after 5s) and waits for it, and shows its output if the test failed.
func startProc(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", name, p.out.tail(3000))
		}
	})
	return p
}

func waitReady(t *testing.T, ctx context.Context, u string, p *proc) {
	t.Helper()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered: %v\n%s", p.name, u, p.err, p.out.tail(3000))
		case <-ctx.Done():
			t.Fatalf("%s not ready: %v", u, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// livePromConfig rewrites the shipped prometheus.yml for this run: every
// replaced string must occur exactly once, so the test follows the file.
func livePromConfig(t *testing.T, root, dir, admin, prom string) string {
	t.Helper()
	cfg := string(readFile(t, promConfigFile))
	for _, r := range [][2]string{
		{"scrape_interval: 15s", "scrape_interval: 1s"},
		{"evaluation_interval: 15s", "evaluation_interval: 1s"},
		{"scrape_timeout: 10s", "scrape_timeout: 1s"},
		{"/etc/prometheus/rules/spool.rules.yml", filepath.Join(root, rulesFile)},
		{`"spool:9090"`, strconv.Quote(admin)},
		{`"localhost:9090"`, strconv.Quote(prom)},
	} {
		if n := strings.Count(cfg, r[0]); n != 1 {
			t.Fatalf("%s: %q occurs %d times, want once", promConfigFile, r[0], n)
		}
		cfg = strings.Replace(cfg, r[0], r[1], 1)
	}
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// --- Load ---

type load struct {
	t         *testing.T
	api, sink string
	// Destinations apart from sink's: failing for injected 500s, down
	// answering 503 and throttled 429.
	failing, down, throttled string
}

var liveHTTP = &http.Client{Timeout: 10 * time.Second}

// call makes an authenticated request and returns the status and the
// decoded "id" of a task answer, if any.
func (l *load) call(ctx context.Context, method, path string, body any) (int, string) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			l.t.Errorf("marshal: %v", err)
			return 0, ""
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.api+path, r)
	if err != nil {
		l.t.Errorf("%s %s: %v", method, path, err)
		return 0, ""
	}
	req.Header.Set("Authorization", "Bearer "+liveAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := liveHTTP.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			l.t.Errorf("%s %s: %v", method, path, err)
		}
		return 0, ""
	}
	defer resp.Body.Close()
	var out struct {
		ID string `json:"id"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out) // problem bodies have no id
	return resp.StatusCode, out.ID
}

func (l *load) enqueue(ctx context.Context, queue, target string, extra map[string]any) string {
	return l.enqueueTo(ctx, queue, l.sink+target, extra)
}

func (l *load) enqueueTo(ctx context.Context, queue, url string, extra map[string]any) string {
	body := map[string]any{"target": map[string]any{"url": url}, "payload": map[string]any{"hello": "world"}}
	for k, v := range extra {
		body[k] = v
	}
	code, id := l.call(ctx, http.MethodPost, "/v1/queues/"+queue+"/tasks", body)
	if code != http.StatusCreated && ctx.Err() == nil {
		l.t.Errorf("enqueue to %s %s: status %d", queue, url, code)
	}
	return id
}

func (l *load) expect(ctx context.Context, want int, method, path string, body any) {
	if code, _ := l.call(ctx, method, path, body); code != want && ctx.Err() == nil {
		l.t.Errorf("%s %s: status %d, want %d", method, path, code, want)
	}
}

// initial makes every outcome, state and route family appear once.
func (l *load) initial(ctx context.Context) {
	for i := 0; i < 10; i++ {
		l.enqueue(ctx, "emails", "/hook", nil)
	}
	for i := 0; i < 3; i++ {
		l.enqueueTo(ctx, "webhooks", l.failing+"/flaky?fail=1", map[string]any{"max_attempts": 3}) // retried, then succeeded
	}
	for i := 0; i < 2; i++ {
		// Failed at its only attempt: one sent before failing's circuit
		// breaker can open (after 5 failures in a row), whereas a second
		// attempt could wait behind it for the rest of the run.
		l.enqueueTo(ctx, "webhooks", l.failing+"/down?status=500", map[string]any{"max_attempts": 1})
	}
	l.enqueue(ctx, "reports", "/gone?status=404", nil) // failed at once
	// A scheduled task, and one cancelled.
	l.enqueue(ctx, "later", "/hook", map[string]any{"delay": "1h"})
	id := l.enqueue(ctx, "later", "/hook", map[string]any{"delay": "1h"})
	l.expect(ctx, http.StatusOK, http.MethodPost, "/v1/tasks/"+id+"/cancel", nil)
	// A schedule running every second (the Schedules row: runs, lag).
	l.expect(ctx, http.StatusCreated, http.MethodPut, "/v1/schedules/every-second", map[string]any{
		"every": "1s", "queue": "scheduled",
		"task": map[string]any{"target": map[string]any{"url": l.sink + "/hook"}},
	})
	// A paused queue with a due task: its oldest-due age grows.
	l.expect(ctx, http.StatusOK, http.MethodPost, "/v1/queues/paused/pause", nil)
	l.enqueue(ctx, "paused", "/hook", nil)
	// Reads, and requests that fail.
	l.expect(ctx, http.StatusOK, http.MethodGet, "/v1/tasks/"+id, nil)
	l.expect(ctx, http.StatusOK, http.MethodGet, "/v1/queues/emails/tasks?limit=5", nil)
	l.expect(ctx, http.StatusOK, http.MethodGet, "/v1/queues", nil)
	l.expect(ctx, http.StatusNotFound, http.MethodGet, "/v1/tasks/00000000-0000-0000-0000-000000000000", nil)
	l.expect(ctx, http.StatusNotFound, http.MethodGet, "/no/such/route", nil)
}

// background keeps a trickle of work going, including slow deliveries that
// keep workers busy and failing ones that retry, so rates and quantiles over
// the last minute stay defined and every outcome keeps counting. The returned func stops it and waits.
func (l *load) background(ctx context.Context) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(400 * time.Millisecond)
		defer tick.Stop()
		for {
			id := l.enqueue(ctx, "emails", "/hook", nil)
			l.enqueue(ctx, "slow", "/slow?delay=1s", nil)
			l.enqueueTo(ctx, "webhooks", l.failing+"/down?status=500", map[string]any{"max_attempts": 2})
			l.enqueueTo(ctx, "webhooks", l.failing+"/flaky?fail=1", map[string]any{"max_attempts": 3})
			l.enqueueTo(ctx, "fragile", l.down+"/down?status=503", nil)
			l.enqueueTo(ctx, "throttled", l.throttled+"/busy?status=429", map[string]any{"max_attempts": 3})
			if id != "" {
				l.expect(ctx, http.StatusOK, http.MethodGet, "/v1/tasks/"+id, nil)
			}
			l.expect(ctx, http.StatusOK, http.MethodGet, "/v1/queues/emails/tasks?limit=5", nil)
			l.expect(ctx, http.StatusNotFound, http.MethodGet, "/v1/tasks/00000000-0000-0000-0000-000000000000", nil)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// --- Prometheus's HTTP API ---

type promClient struct{ base string }

type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func (c *promClient) get(t *testing.T, ctx context.Context, path string, q url.Values) (apiResponse, error) {
	t.Helper()
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return apiResponse{}, err
	}
	resp, err := liveHTTP.Do(req)
	if err != nil {
		return apiResponse{}, err
	}
	defer resp.Body.Close()
	var r apiResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return apiResponse{}, fmt.Errorf("%s: decode: %w", path, err)
	}
	return r, nil
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

type check struct {
	name, expr string
	wantData   bool // panel queries must return a series with a number
	ok         bool
	last       string // why not ok yet, for the failure message
	failed     string // a query error: final
}

func (c *check) run(t *testing.T, ctx context.Context, pc *promClient) {
	t.Helper()
	r, err := pc.get(t, ctx, "/api/v1/query", url.Values{"query": {c.expr}})
	if err != nil {
		c.last = err.Error()
		return
	}
	if r.Status != "success" {
		// A parse or evaluation error does not heal by waiting.
		c.failed = fmt.Sprintf("%s: %s", r.ErrorType, r.Error)
		return
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		c.last = err.Error()
		return
	}
	if !c.wantData {
		c.ok = true
		return
	}
	if data.ResultType != "vector" {
		c.last = "result type " + data.ResultType
		return
	}
	var vec []sample
	if err := json.Unmarshal(data.Result, &vec); err != nil {
		c.last = err.Error()
		return
	}
	for _, s := range vec {
		if v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64); err == nil && !math.IsNaN(v) {
			c.ok = true
			return
		}
	}
	c.last = fmt.Sprintf("%d series, none with a number: %s", len(vec), truncate(string(data.Result), 300))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

type promRule struct {
	Name           string            `json:"name"`
	Query          string            `json:"query"`
	Duration       float64           `json:"duration"`
	Labels         map[string]string `json:"labels"`
	Annotations    map[string]string `json:"annotations"`
	Health         string            `json:"health"`
	LastError      string            `json:"lastError"`
	Type           string            `json:"type"`
	LastEvaluation time.Time         `json:"lastEvaluation"`
}

func (c *promClient) rules(t *testing.T, ctx context.Context) []promRule {
	t.Helper()
	r, err := c.get(t, ctx, "/api/v1/rules", nil)
	if err != nil || r.Status != "success" {
		t.Fatalf("/api/v1/rules: %v %s", err, r.Error)
	}
	var data struct {
		Groups []struct {
			Rules []promRule `json:"rules"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		t.Fatalf("/api/v1/rules: %v", err)
	}
	var out []promRule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

func allEvaluated(rules []promRule) bool {
	for _, r := range rules {
		if r.Health == "unknown" || r.LastEvaluation.IsZero() || r.LastEvaluation.Year() < 2000 {
			return false
		}
	}
	return len(rules) > 0
}

// checkLoadedRules compares what Prometheus loaded with the rules file as
// the other tests read it, and checks each alert's metadata and health.
func checkLoadedRules(t *testing.T, rules []promRule) {
	t.Helper()
	var got []string
	for _, r := range rules {
		got = append(got, r.Name)
		if r.Type != "alerting" {
			t.Errorf("rule %s: type %s, want alerting", r.Name, r.Type)
		}
		if r.Health != "ok" {
			t.Errorf("rule %s: health %q (%s)", r.Name, r.Health, r.LastError)
		}
		if r.Duration <= 0 {
			t.Errorf("alert %s has no for:", r.Name)
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("alert %s: severity %q", r.Name, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("alert %s lacks summary or description", r.Name)
		}
		if want := runbookBase + strings.ToLower(r.Name); r.Annotations["runbook_url"] != want {
			t.Errorf("alert %s: runbook_url %q, want %q", r.Name, r.Annotations["runbook_url"], want)
		}
		for _, l := range labelsUsed(r.Query, "") {
			if !allowedLabels[l] {
				t.Errorf("alert %s uses label %q", r.Name, l)
			}
		}
	}
	want := alertNames(t)
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("Prometheus loaded alerts %v; the rules file reads as %v", got, want)
	}
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (c *promClient) alerts(t *testing.T, ctx context.Context) []promAlert {
	t.Helper()
	r, err := c.get(t, ctx, "/api/v1/alerts", nil)
	if err != nil || r.Status != "success" {
		t.Fatalf("/api/v1/alerts: %v %s", err, r.Error)
	}
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		t.Fatalf("/api/v1/alerts: %v", err)
	}
	return data.Alerts
}

// labelValues is what Grafana's label_values(match, label) asks Prometheus.
func (c *promClient) labelValues(t *testing.T, ctx context.Context, label, match string) []string {
	t.Helper()
	q := url.Values{}
	if match != "" {
		q.Set("match[]", match)
	}
	r, err := c.get(t, ctx, "/api/v1/label/"+label+"/values", q)
	if err != nil {
		return nil
	}
	if r.Status != "success" {
		t.Errorf("label values of %s for %s: %s", label, match, r.Error)
		return nil
	}
	var vals []string
	_ = json.Unmarshal(r.Data, &vals)
	return vals
}

var leftoverVar = regexp.MustCompile(`\$\{?\w+`)

// substitute replaces the Grafana variables the dashboard's queries use.
func substitute(expr string) (string, error) {
	keys := make([]string, 0, len(dashboardVars))
	for k := range dashboardVars {
		keys = append(keys, k)
	}
	// Longest first, so $queue cannot eat the start of a longer name.
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		expr = strings.ReplaceAll(expr, k, dashboardVars[k])
	}
	if m := leftoverVar.FindString(expr); m != "" {
		return "", fmt.Errorf("variable %s has no test value in dashboardVars", m)
	}
	return expr, nil
}

var metricRE = regexp.MustCompile(`\b(?:spool|go|process)_[a-zA-Z0-9_]+|\bup\b`)

// metricNames lists the metric names the checks' expressions mention.
func metricNames(checks []*check) []string {
	seen := map[string]bool{}
	for _, c := range checks {
		bare := stringRE.ReplaceAllString(c.expr, `""`) // not inside matcher values
		for _, m := range metricRE.FindAllString(bare, -1) {
			seen[m] = true
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}
