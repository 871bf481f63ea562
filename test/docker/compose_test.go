//go:build docker

package docker_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// testOverride shortens what would make the tests wait: health probes every
// second, and a 3s lease so a SIGKILLed instance's deliveries are rescued
// quickly (30s in compose.yaml). Everything else is compose.yaml as shipped.
const testOverride = `services:
  spool:
    environment:
      SPOOL_LEASE_DURATION: 3s
      SPOOL_RETRY_MIN_BACKOFF: 200ms
      SPOOL_RETRY_MAX_BACKOFF: 2s
    healthcheck:
      interval: 1s
  postgres:
    healthcheck:
      interval: 1s
  sink:
    healthcheck:
      interval: 1s
  orders:
    healthcheck:
      interval: 1s
`

// stack is one Compose project of compose.yaml, with its own name, secrets,
// subnet and published ports, removed with its volumes when the test ends.
type stack struct {
	x        *harness
	project  string
	files    []string
	profiles []string
	env      []string
	secrets  string
	apiKey   string
}

func newStack(t *testing.T, x *harness, name string, profiles ...string) *stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	s := &stack{x: x, project: "spooltest" + x.runID + name, profiles: profiles, secrets: filepath.Join(dir, "secrets")}

	// The documented way to make the secrets, into a directory of the test's.
	if _, err := run(ctx, append(os.Environ(), "SPOOL_SECRETS_DIR="+s.secrets), nil, "sh", filepath.Join(x.repo, "deploy/compose/init-secrets.sh")); err != nil {
		t.Fatal(err)
	}
	keys, err := os.ReadFile(filepath.Join(s.secrets, "api_keys"))
	if err != nil {
		t.Fatal(err)
	}
	s.apiKey = strings.TrimSpace(string(keys))

	override := filepath.Join(dir, "compose.test.yaml")
	if err := os.WriteFile(override, []byte(testOverride), 0o644); err != nil {
		t.Fatal(err)
	}
	s.files = []string{filepath.Join(x.repo, "compose.yaml"), override}
	subnet, err := x.freeSubnet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Only this test's settings: nothing from the caller's environment
	// that Compose would interpolate.
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "COMPOSE_") || strings.HasPrefix(k, "SPOOL_") || strings.HasSuffix(k, "_IMAGE") || strings.HasSuffix(k, "_PORT") {
			continue
		}
		s.env = append(s.env, kv)
	}
	s.env = append(s.env,
		"SPOOL_IMAGE="+x.spoolImage,
		"POSTGRES_IMAGE="+x.postgresImage,
		"GO_IMAGE="+x.goImage,
		"RUNTIME_IMAGE="+x.runtimeImage,
		"FASTAPI_IMAGE="+x.fastapiImage,
		"PYTHON_IMAGE="+x.pythonImage,
		"SPOOL_SECRETS_DIR="+s.secrets,
		"SPOOL_TARGETS_SUBNET="+subnet,
		"SPOOL_BIND=127.0.0.1",
		// Empty: Docker picks free ports, so runs never collide.
		"SPOOL_PORT=", "SPOOL_SINK_PORT=", "ORDERS_PORT=",
	)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := s.compose(ctx, "ps")
			t.Logf("compose ps of %s:\n%s", s.project, out)
		}
		if out, err := s.compose(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "10"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	return s
}

func (s *stack) compose(ctx context.Context, args ...string) (string, error) {
	argv := append([]string{}, s.x.compose[1:]...)
	argv = append(argv, "-p", s.project)
	for _, f := range s.files {
		argv = append(argv, "-f", f)
	}
	for _, p := range s.profiles {
		argv = append(argv, "--profile", p)
	}
	return run(ctx, s.env, nil, s.x.compose[0], append(argv, args...)...)
}

func (s *stack) mustCompose(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := s.compose(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// container is the id of the service's container (exited ones included),
// found by Compose's labels so it works the same with v1 and v2.
func (s *stack) container(t *testing.T, ctx context.Context, service string) string {
	t.Helper()
	out := s.x.dockerOut(t, ctx, "ps", "-a", "-q",
		"--filter", "label=com.docker.compose.project="+s.project,
		"--filter", "label=com.docker.compose.service="+service)
	ids := strings.Fields(out)
	if len(ids) != 1 {
		t.Fatalf("service %s: want one container, have %q", service, ids)
	}
	return ids[0]
}

// state is "status exitcode health" of a container.
func (s *stack) state(t *testing.T, ctx context.Context, id string) (status string, exit int, health string) {
	t.Helper()
	out := s.x.dockerOut(t, ctx, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", id)
	if _, err := fmt.Sscan(out, &status, &exit, &health); err != nil {
		t.Fatalf("inspect %s: %q: %v", id, out, err)
	}
	return status, exit, health
}

// published is the 127.0.0.1:port a service's container port is published on.
func (s *stack) published(t *testing.T, ctx context.Context, service, port string) string {
	t.Helper()
	out := s.x.dockerOut(t, ctx, "port", s.container(t, ctx, service), port+"/tcp")
	addr, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("%s:%s published on %q, want 127.0.0.1 only", service, port, addr)
	}
	return addr
}

func (s *stack) waitHealthy(t *testing.T, ctx context.Context, service string, timeout time.Duration) {
	t.Helper()
	id := s.container(t, ctx, service)
	var st, health string
	eventually(t, timeout, func() bool {
		st, _, health = s.state(t, ctx, id)
		return health == "healthy"
	}, func() string { return fmt.Sprintf("%s is %s, health %s", service, st, health) })
}

// serviceLog is the last n lines a service logged, leaving out the
// per-request access lines that would bury everything else.
func (s *stack) serviceLog(t *testing.T, ctx context.Context, service string, n int) string {
	t.Helper()
	out, _ := run(ctx, nil, nil, s.x.docker, "logs", "--tail", "2000", s.container(t, ctx, service))
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(line, `"message":"http request"`) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep[max(0, len(keep)-n):], "\n")
}

// psql runs a query in the postgres service as the spool user (over the
// Unix socket inside the container: the database is not published).
func (s *stack) psql(t *testing.T, ctx context.Context, query string) string {
	t.Helper()
	return s.x.dockerOut(t, ctx, "exec", s.container(t, ctx, "postgres"), "psql", "-U", "spool", "-d", "spool", "-Atc", query)
}

// freeSubnet picks a /24 for the `targets` network that overlaps no
// network the engine already has.
func (x *harness) freeSubnet(ctx context.Context) (string, error) {
	ids, err := run(ctx, nil, nil, x.docker, "network", "ls", "-q")
	if err != nil {
		return "", err
	}
	var used []netip.Prefix
	if f := strings.Fields(ids); len(f) > 0 {
		out, err := run(ctx, nil, nil, x.docker, append([]string{"network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, f...)...)
		if err != nil {
			return "", err
		}
		for _, s := range strings.Fields(out) {
			if p, err := netip.ParsePrefix(s); err == nil {
				used = append(used, p)
			}
		}
	}
	for range 200 {
		p := netip.MustParsePrefix(fmt.Sprintf("10.212.%d.0/24", 1+rand.IntN(254)))
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
			}
		}
		if free {
			return p.String(), nil
		}
	}
	return "", fmt.Errorf("no free /24 in 10.212.0.0/16 (used: %v)", used)
}

// TestComposeConfig checks compose.yaml as a whole, every profile on: it
// is valid Compose, has no version key and no secret values, and every file
// it mounts from the repository exists.
func TestComposeConfig(t *testing.T) {
	x := need(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	raw, err := os.ReadFile(filepath.Join(x.repo, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if regexp.MustCompile(`(?m)^version:`).MatchString(text) {
		t.Error("compose.yaml has a version: key (obsolete in the Compose Specification)")
	}
	if m := regexp.MustCompile(`(?m)^\s*(POSTGRES_PASSWORD|SPOOL_API_KEYS|SPOOL_SIGNING_KEYS|SPOOL_DATABASE_URL|GF_SECURITY_ADMIN_PASSWORD|ELASTIC_PASSWORD)\s*:`).FindAllString(text, -1); len(m) > 0 {
		t.Errorf("secret values set in compose.yaml instead of _FILE secrets: %q", m)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*-\s*(\./[^:\s]+):`).FindAllStringSubmatch(text, -1) {
		if _, err := os.Stat(filepath.Join(x.repo, m[1])); err != nil {
			t.Errorf("compose.yaml mounts %s, which does not exist in the repository", m[1])
		}
	}

	s := newStack(t, x, "cfg", "demo", "monitoring", "logging")
	out, err := s.compose(ctx, "config")
	if err != nil {
		t.Fatalf("compose config: %v", err)
	}
	var cfg struct {
		Services map[string]struct {
			Image       string
			Profiles    []string
			ReadOnly    bool `yaml:"read_only"`
			Healthcheck struct {
				Test    any
				Disable bool
			}
			DependsOn map[string]struct{ Condition string } `yaml:"depends_on"`
			Secrets   []any
			Ports     []any
		}
		Volumes map[string]any
		Secrets map[string]struct{ File string }
	}
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("compose config output: %v", err)
	}
	var names, core []string
	for name, svc := range cfg.Services {
		names = append(names, name)
		if len(svc.Profiles) == 0 {
			core = append(core, name)
		}
		// Every service has a healthcheck, or is a one-shot that says it has none.
		hc := fmt.Sprint(svc.Healthcheck.Test)
		oneShot := name == "migrate" || strings.HasPrefix(name, "demo-")
		if oneShot != (svc.Healthcheck.Disable || hc == "[NONE]") {
			t.Errorf("service %s: healthcheck %s (disabled %v)", name, hc, svc.Healthcheck.Disable)
		}
		if !oneShot && (hc == "<nil>" || hc == "[]") {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	slices.Sort(names)
	slices.Sort(core)
	if want := "demo-hello demo-retry demo-scheduled elasticsearch filebeat grafana kibana migrate orders postgres prometheus sink spool"; strings.Join(names, " ") != want {
		t.Errorf("services %v, want %s", names, want)
	}
	if strings.Join(core, " ") != "migrate postgres spool" {
		t.Errorf("services outside any profile: %v, want migrate postgres spool", core)
	}
	spool := cfg.Services["spool"]
	if spool.DependsOn["postgres"].Condition != "service_healthy" || spool.DependsOn["migrate"].Condition != "service_completed_successfully" {
		t.Errorf("spool depends_on %+v", spool.DependsOn)
	}
	if !spool.ReadOnly || !cfg.Services["migrate"].ReadOnly {
		t.Error("spool and migrate must run on a read-only root filesystem")
	}
	if cfg.Services["postgres"].Image != x.postgresImage || spool.Image != x.spoolImage || cfg.Services["migrate"].Image != x.spoolImage {
		t.Errorf("images not taken from POSTGRES_IMAGE/SPOOL_IMAGE: postgres %s, spool %s", cfg.Services["postgres"].Image, spool.Image)
	}
	if orders := cfg.Services["orders"]; orders.Image != x.fastapiImage || !orders.ReadOnly || len(orders.Secrets) == 0 {
		t.Errorf("orders: image %s (want FASTAPI_IMAGE %s), read-only %v, secrets %v", orders.Image, x.fastapiImage, orders.ReadOnly, orders.Secrets)
	}
	for name, sec := range cfg.Secrets {
		if !strings.HasPrefix(sec.File, s.secrets+"/") {
			t.Errorf("secret %s from %s, not from SPOOL_SECRETS_DIR", name, sec.File)
		}
	}
	if _, ok := cfg.Volumes["postgres-data"]; !ok {
		t.Errorf("no named volume for PostgreSQL: %v", cfg.Volumes)
	}
}

// TestCompose runs the core stack and the demo profile on stand-in images:
// delivery through the published port, data kept across down/up, SIGKILL
// and SIGTERM of the spool container with deliveries in flight.
func TestCompose(t *testing.T) {
	x := need(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s := newStack(t, x, "run", "demo")

	start := time.Now()
	s.mustCompose(t, ctx, "up", "-d", "--no-build")
	t.Logf("compose up: %s", time.Since(start).Round(100*time.Millisecond))
	for _, svc := range []string{"postgres", "spool", "sink", "orders"} {
		s.waitHealthy(t, ctx, svc, time.Minute)
	}
	if st, code, _ := s.state(t, ctx, s.container(t, ctx, "migrate")); st != "exited" || code != 0 {
		t.Fatalf("migrate: %s, exit %d", st, code)
	}
	// Every volume is a named one of the project: an anonymous volume (the
	// image's VOLUME) would be orphaned by each `down` and pile up.
	ids := strings.Fields(x.dockerOut(t, ctx, "ps", "-a", "-q", "--filter", "label=com.docker.compose.project="+s.project))
	mounts := x.dockerOut(t, ctx, append([]string{"inspect", "--format", `{{.Name}}{{range .Mounts}} {{.Type}}:{{.Name}}{{end}}`}, ids...)...)
	for _, line := range strings.Split(mounts, "\n") {
		f := strings.Fields(line)
		for _, m := range f[1:] {
			if typ, name, _ := strings.Cut(m, ":"); typ == "volume" && !strings.HasPrefix(name, s.project+"_") {
				t.Errorf("container %s mounts an anonymous volume %s", f[0], name)
			}
		}
	}
	api := newAPI(s.published(t, ctx, "spool", "8000"), s.apiKey)
	sink := newAPI(s.published(t, ctx, "sink", "8080"), "")

	// Without the key the API refuses: the key from the secret file is in force.
	if code, _ := newAPI(strings.TrimPrefix(api.base, "http://"), "").call(http.MethodGet, "/v1/queues", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/queues without a key: %d, want 401", code)
	}

	stats := func() sinkStats {
		var st sinkStats
		sink.must(t, http.MethodGet, "/stats", nil, &st)
		return st
	}

	t.Run("demo", func(t *testing.T) {
		// The one-shots enqueued three tasks: one delivered at once, one
		// after two failures, one scheduled a minute ahead.
		for _, svc := range []string{"demo-hello", "demo-retry", "demo-scheduled"} {
			id := s.container(t, ctx, svc)
			eventually(t, 30*time.Second, func() bool { st, _, _ := s.state(t, ctx, id); return st == "exited" }, func() string { return svc + " still running" })
			if _, code, _ := s.state(t, ctx, id); code != 0 {
				t.Errorf("%s exited %d", svc, code)
			}
		}
		var q apiQueue
		eventually(t, 30*time.Second, func() bool {
			return api.poll("/v1/queues/demo", &q) && q.Counts["succeeded"] == 2
		}, func() string { return fmt.Sprintf("demo queue %+v, sink %+v", q.Counts, stats()) })
		if q.Counts["scheduled"] != 1 {
			t.Errorf("demo queue counts %v, want the delayed task scheduled", q.Counts)
		}
		if st := stats(); st.Unique != 2 || st.BadSignatures != 0 || st.Received != 4 {
			t.Errorf("sink %+v: want 2 unique, 4 received (two failures first), no bad signatures", st)
		}
	})

	t.Run("fastapi-orders", func(t *testing.T) {
		// The guide's app: an order placed on its published port is
		// enqueued on Spool, delivered over the targets network, verified
		// with the Compose signing key and processed once; one that fails
		// twice is retried by Spool.
		orders := newAPI(s.published(t, ctx, "orders", "8080"), "")
		type order struct {
			ID         string `json:"id"`
			Status     string `json:"status"`
			TaskID     string `json:"task_id"`
			Processed  int    `json:"processed"`
			Deliveries int    `json:"deliveries"`
		}
		for _, fail := range []int{0, 2} {
			var o order
			orders.must(t, http.MethodPost, "/orders", map[string]any{"item": "compose", "quantity": 1, "fail_times": fail}, &o)
			if o.TaskID == "" {
				t.Fatalf("order %+v has no task", o)
			}
			eventually(t, 30*time.Second, func() bool {
				return orders.poll("/orders/"+o.ID, &o) && o.Status == "processed"
			}, func() string { return fmt.Sprintf("order %+v\n%s", o, s.serviceLog(t, ctx, "orders", 20)) })
			// The task's completion is stored just after the receiver's
			// answer (completions are gathered for up to 20 ms).
			var tk apiTask
			eventually(t, 5*time.Second, func() bool {
				return api.poll("/v1/tasks/"+o.TaskID, &tk) && tk.State == "succeeded"
			}, func() string { return fmt.Sprintf("task %+v", tk) })
			if o.Processed != 1 || o.Deliveries != fail+1 || tk.State != "succeeded" || tk.Attempt != fail+1 {
				t.Errorf("order %+v, task %+v: want processed once after %d deliveries", o, tk, fail+1)
			}
		}
	})

	t.Run("down-up-keeps-data", func(t *testing.T) {
		var tk apiTask
		api.must(t, http.MethodPost, "/v1/queues/persist/tasks", map[string]any{"target": map[string]any{"url": "http://sink:8080/persist"}, "payload": map[string]int{"n": 1}}, &tk)
		eventually(t, 20*time.Second, func() bool {
			return api.poll("/v1/tasks/"+tk.ID, &tk) && tk.State == "succeeded"
		}, func() string { return fmt.Sprintf("task %+v", tk) })
		want := apiQueue{Concurrency: 7, RateLimit: 25, MaxAttempts: 4, Timeout: "15s", Paused: true}
		api.must(t, http.MethodPatch, "/v1/queues/persist", map[string]any{"concurrency": 7, "rate_limit": 25, "max_attempts": 4, "timeout": "15s", "paused": true}, nil)
		var waiting apiTask
		api.must(t, http.MethodPost, "/v1/queues/persist/tasks", map[string]any{"target": map[string]any{"url": "http://sink:8080/persist"}}, &waiting)

		start := time.Now()
		s.mustCompose(t, ctx, "down")
		s.mustCompose(t, ctx, "up", "-d", "--no-build")
		s.waitHealthy(t, ctx, "spool", time.Minute)
		t.Logf("down + up: %s", time.Since(start).Round(100*time.Millisecond))
		api = newAPI(s.published(t, ctx, "spool", "8000"), s.apiKey)
		sink = newAPI(s.published(t, ctx, "sink", "8080"), "")

		var again apiTask
		api.must(t, http.MethodGet, "/v1/tasks/"+tk.ID, nil, &again)
		if again.State != "succeeded" || again.LastStatus != 200 {
			t.Errorf("task after down/up: %+v", again)
		}
		var q apiQueue
		api.must(t, http.MethodGet, "/v1/queues/persist", nil, &q)
		if q.Concurrency != want.Concurrency || q.RateLimit != want.RateLimit || q.MaxAttempts != want.MaxAttempts || q.Timeout != want.Timeout || !q.Paused {
			t.Errorf("queue settings after down/up: %+v, want %+v", q, want)
		}
		api.must(t, http.MethodGet, "/v1/tasks/"+waiting.ID, nil, &waiting)
		if waiting.State != "available" {
			t.Errorf("task of the paused queue after down/up: %s", waiting.State)
		}
		api.must(t, http.MethodPatch, "/v1/queues/persist", map[string]any{"paused": false}, nil)
		eventually(t, 20*time.Second, func() bool {
			return api.poll("/v1/tasks/"+waiting.ID, &waiting) && waiting.State == "succeeded"
		}, func() string { return "resumed task " + waiting.State })
	})
	if t.Failed() {
		return
	}
	// The sink's counters are shared: park the demo queue (its one-shots ran
	// again at the second up, and one task is due a minute later) so only
	// the tasks of the next two tests reach the sink.
	var demo apiQueue
	api.must(t, http.MethodPatch, "/v1/queues/demo", map[string]any{"paused": true}, nil)
	eventually(t, 20*time.Second, func() bool {
		return api.poll("/v1/queues/demo", &demo) && demo.Counts["running"] == 0
	}, func() string { return fmt.Sprintf("demo queue %v", demo.Counts) })

	t.Run("sigkill-in-flight", func(t *testing.T) {
		const n = 200
		before := stats()
		ids := enqueueMany(t, api, "kill", "http://sink:8080/kill?delay=1s", n)
		var q apiQueue
		eventually(t, 20*time.Second, func() bool {
			return api.poll("/v1/queues/kill", &q) && q.Counts["running"] >= 50
		}, func() string { return fmt.Sprintf("deliveries never in flight: %v", q.Counts) })

		id := s.container(t, ctx, "spool")
		x.dockerOut(t, ctx, "kill", id)
		eventually(t, 10*time.Second, func() bool { st, _, _ := s.state(t, ctx, id); return st != "running" }, func() string { return "still running after SIGKILL" })
		running := s.psql(t, ctx, "SELECT count(*) FROM spool_tasks WHERE queue = 'kill' AND state = 'running'")
		t.Logf("after SIGKILL: %s tasks left running in the database", running)

		x.dockerOut(t, ctx, "start", id)
		s.waitHealthy(t, ctx, "spool", time.Minute)
		api = newAPI(s.published(t, ctx, "spool", "8000"), s.apiKey)
		eventually(t, 90*time.Second, func() bool {
			return api.poll("/v1/queues/kill", &q) && q.Counts["succeeded"] == n
		}, func() string { return fmt.Sprintf("kill queue %v", q.Counts) })
		for state, c := range q.Counts {
			if state != "succeeded" && c != 0 {
				t.Errorf("%d tasks %s", c, state)
			}
		}
		var after sinkStats
		eventually(t, 10*time.Second, func() bool { return sink.poll("/stats", &after) && after.Unique-before.Unique >= n }, func() string { return fmt.Sprintf("sink %+v", after) })
		if got := after.Unique - before.Unique; got != int64(len(ids)) {
			t.Errorf("sink saw %d unique deliveries, %d accepted", got, len(ids))
		}
		if after.BadSignatures != before.BadSignatures {
			t.Errorf("bad signatures: %+v", after)
		}
		t.Logf("SIGKILL: %d accepted, %d unique at the sink, %d redelivered", n, after.Unique-before.Unique, after.Duplicates-before.Duplicates)
	})

	t.Run("sigterm-under-load", func(t *testing.T) {
		before := stats()
		var (
			mu       sync.Mutex
			accepted []string
			refused  int
		)
		stopLoad := make(chan struct{})
		loadDone := make(chan struct{})
		go func() {
			defer close(loadDone)
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				var out struct{ Tasks []apiTask }
				tasks := make([]map[string]any, 5)
				for j := range tasks {
					tasks[j] = map[string]any{"target": map[string]any{"url": "http://sink:8080/stop?delay=300ms"}, "payload": map[string]int{"n": i*5 + j}}
				}
				code, err := api.call(http.MethodPost, "/v1/queues/stop/tasks", map[string]any{"tasks": tasks}, &out)
				mu.Lock()
				if err == nil && code == http.StatusCreated {
					for _, tk := range out.Tasks {
						accepted = append(accepted, tk.ID)
					}
				} else {
					refused++
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		var q apiQueue
		eventually(t, 20*time.Second, func() bool {
			return api.poll("/v1/queues/stop", &q) && q.Counts["running"] >= 5 && q.Counts["succeeded"] >= 20
		}, func() string { return fmt.Sprintf("no load: %v", q.Counts) })

		id := s.container(t, ctx, "spool")
		grace := 30 * time.Second // stop_grace_period in compose.yaml
		start := time.Now()
		s.mustCompose(t, ctx, "stop", "spool")
		took := time.Since(start)
		close(stopLoad)
		<-loadDone
		st, code, _ := s.state(t, ctx, id)
		t.Logf("SIGTERM: stopped in %s (grace %s), exit %d; %d tasks accepted under load, %d requests refused", took.Round(100*time.Millisecond), grace, code, len(accepted), refused)
		if st != "exited" || code != 0 {
			t.Errorf("after stop: %s, exit code %d; want a clean exit 0 (137 means Docker had to SIGKILL)", st, code)
		}
		if took >= grace {
			t.Errorf("stop took %s, not within the %s grace period", took, grace)
		}
		if running := s.psql(t, ctx, "SELECT count(*) FROM spool_tasks WHERE queue = 'stop' AND state = 'running'"); running != "0" {
			detail := s.psql(t, ctx, "SELECT id, attempt, lease_token, lease_expires_at, updated_at FROM spool_tasks WHERE queue = 'stop' AND state = 'running' ORDER BY updated_at")
			t.Errorf("%s tasks left running after a graceful stop (they wait for their lease to expire):\n%s\nlast lines of spool:\n%s", running, detail, s.serviceLog(t, ctx, "spool", 25))
		}

		x.dockerOut(t, ctx, "start", id)
		s.waitHealthy(t, ctx, "spool", time.Minute)
		api = newAPI(s.published(t, ctx, "spool", "8000"), s.apiKey)
		eventually(t, 60*time.Second, func() bool {
			if !api.poll("/v1/queues/stop", &q) {
				return false
			}
			total := 0
			for _, c := range q.Counts {
				total += c
			}
			return q.Counts["succeeded"] == total
		}, func() string { return fmt.Sprintf("stop queue %v", q.Counts) })
		for _, tid := range accepted {
			var tk apiTask
			api.must(t, http.MethodGet, "/v1/tasks/"+tid, nil, &tk)
			if tk.State != "succeeded" {
				t.Errorf("accepted task %s is %s", tid, tk.State)
			}
		}
		total := q.Counts["succeeded"]
		if total < len(accepted) {
			t.Errorf("queue holds %d tasks, %d were accepted", total, len(accepted))
		}
		var after sinkStats
		eventually(t, 10*time.Second, func() bool { return sink.poll("/stats", &after) && after.Unique-before.Unique >= int64(total) }, func() string { return fmt.Sprintf("sink %+v", after) })
		if got := after.Unique - before.Unique; got != int64(total) {
			t.Errorf("sink saw %d unique deliveries of %d tasks", got, total)
		}
		t.Logf("SIGTERM: %d tasks delivered, %d redelivered", after.Unique-before.Unique, after.Duplicates-before.Duplicates)
	})
}

// enqueueMany enqueues n tasks to target in batches of 50 and returns their ids.
func enqueueMany(t *testing.T, api *apiClient, queue, target string, n int) []string {
	t.Helper()
	var ids []string
	for i := 0; i < n; i += 50 {
		var tasks []map[string]any
		for j := i; j < min(n, i+50); j++ {
			tasks = append(tasks, map[string]any{"target": map[string]any{"url": target}, "payload": map[string]int{"n": j}})
		}
		var out struct{ Tasks []apiTask }
		api.must(t, http.MethodPost, "/v1/queues/"+queue+"/tasks", map[string]any{"tasks": tasks}, &out)
		for _, tk := range out.Tasks {
			ids = append(ids, tk.ID)
		}
	}
	if len(ids) != n {
		t.Fatalf("enqueued %d of %d", len(ids), n)
	}
	return ids
}
