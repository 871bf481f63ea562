package main

// End-to-end tests: the real binary, built once, run as separate processes
// against a real PostgreSQL (internal/testpg) or the embedded SQLite file,
// delivering to a real `spool sink` over loopback.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/config"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

var spoolBin string

func TestMain(m *testing.M) {
	dir := filepath.Join(os.TempDir(), "spool-e2e-bin")
	_ = os.MkdirAll(dir, 0o755)
	if old, _ := filepath.Glob(filepath.Join(dir, "spool-*")); len(old) > 0 {
		for _, f := range old {
			if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.Remove(f)
			}
		}
	}
	spoolBin = filepath.Join(dir, fmt.Sprintf("spool-%d", os.Getpid()))
	build := exec.Command("go", "build", "-o", spoolBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build spool: %v\n%s", err, out)
		os.Exit(1)
	}
	testpg.Main(m) // removes nothing of ours; the binary is swept above next time
}

const testAPIKey = "e2e-test-key"

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(spoolBin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{t: t, name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", name, tail(p.out.String(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// wait returns the exit error, failing the test if the process outlives timeout.
func (p *proc) wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
		return nil
	}
}

type instance struct {
	*proc
	api, admin string
}

type serveOpts struct {
	dsn     string // "" = SQLite in dataDir
	dataDir string
	env     []string
}

func startServe(t *testing.T, name string, o serveOpts, signingKey string) *instance {
	t.Helper()
	for attempt := 1; ; attempt++ {
		in := &instance{api: freePort(t), admin: freePort(t)}
		env := []string{
			"SPOOL_HTTP_ADDR=" + in.api, "SPOOL_ADMIN_ADDR=" + in.admin,
			"SPOOL_API_KEYS=" + testAPIKey, "SPOOL_SIGNING_KEYS=" + signingKey,
			"SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "SPOOL_DRAIN_DELAY=0s", "SPOOL_POLL_INTERVAL=200ms",
			"SPOOL_RETRY_MIN_BACKOFF=50ms", "SPOOL_RETRY_MAX_BACKOFF=500ms", "SPOOL_LOG_LEVEL=warn",
			"SPOOL_DATABASE_URL=" + o.dsn, "DATABASE_URL=", "SPOOL_DATA_DIR=" + o.dataDir,
		}
		in.proc = startProc(t, name, append(env, o.env...), "serve")
		probe := in.api
		if slices.Contains(o.env, "SPOOL_ROLE=worker") {
			probe = in.admin // a worker has no API listener
		}
		if !waitReady(t, "http://"+probe+"/readyz", in.proc, attempt < 5) {
			return in
		}
	}
}

// waitHTTP waits until url answers 200, failing the test if p exits first.
func waitHTTP(t *testing.T, url string, p *proc) {
	t.Helper()
	waitReady(t, url, p, false)
}

// waitReady waits until url answers 200. With retryBind, a process that
// exited because its port was taken (another test grabbed it between
// freePort and the bind) is reported by returning true, so the caller can
// start it again on fresh ports.
func waitReady(t *testing.T, url string, p *proc, retryBind bool) (portTaken bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			if retryBind && strings.Contains(p.out.String(), "address already in use") {
				t.Logf("%s lost its port to another test; starting it again", p.name)
				return true
			}
			t.Fatalf("%s exited before %s was ready: %v\n%s", p.name, url, p.err, tail(p.out.String(), 3000))
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				// The answer may come from whoever holds the port: make sure
				// ours is still running and did not fail to bind.
				select {
				case <-p.done:
					continue
				default:
				}
				if !strings.Contains(p.out.String(), "address already in use") {
					return false
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 20s", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startSink(t *testing.T, signingKey string) (*proc, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr := freePort(t)
		p := startProc(t, "sink", []string{"SPOOL_SIGNING_KEYS=" + signingKey}, "sink", "--addr", addr)
		if !waitReady(t, "http://"+addr+"/stats", p, attempt < 5) {
			return p, "http://" + addr
		}
	}
}

type sinkStats struct {
	Received      int `json:"received"`
	Unique        int `json:"unique"`
	Duplicates    int `json:"duplicates"`
	BadSignatures int `json:"bad_signatures"`
}

func getStats(t *testing.T, sinkURL string) sinkStats {
	t.Helper()
	var s sinkStats
	if code := call(t, "GET", sinkURL+"/stats", nil, &s); code != 200 {
		t.Fatalf("sink stats: %d", code)
	}
	return s
}

var httpc = &http.Client{Timeout: 30 * time.Second}

// call makes an authenticated JSON request and decodes the answer into out.
func call(t *testing.T, method, url string, body, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, r)
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, b, err)
		}
	}
	return resp.StatusCode
}

type apiTask struct {
	ID         string  `json:"id"`
	State      string  `json:"state"`
	Attempt    int     `json:"attempt"`
	LastError  *string `json:"last_error"`
	LastStatus *int    `json:"last_status"`
}

type apiQueue struct {
	Name   string         `json:"name"`
	Paused bool           `json:"paused"`
	Counts map[string]int `json:"counts"`
}

func newKey(t *testing.T) string {
	k, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// enqueueBatch enqueues n tasks to target in batches and returns their ids.
func enqueueBatch(t *testing.T, apis []string, queue, target string, n, batch int) []string {
	t.Helper()
	var ids []string
	for i := 0; i < n; i += batch {
		var tasks []map[string]any
		for j := i; j < min(n, i+batch); j++ {
			tasks = append(tasks, map[string]any{"target": map[string]any{"url": target}, "payload": map[string]int{"n": j}})
		}
		var out struct{ Tasks []apiTask }
		api := apis[(i/batch)%len(apis)]
		if code := call(t, "POST", "http://"+api+"/v1/queues/"+queue+"/tasks", map[string]any{"tasks": tasks}, &out); code != 201 {
			t.Fatalf("batch enqueue: status %d", code)
		}
		for _, tk := range out.Tasks {
			ids = append(ids, tk.ID)
		}
	}
	return ids
}

func waitUnique(t *testing.T, sinkURL string, want int, timeout time.Duration) sinkStats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := getStats(t, sinkURL)
		if s.Unique >= want {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink saw %d unique deliveries of %d within %s (%+v)", s.Unique, want, timeout, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKeyRolesEndToEnd: SPOOL_API_KEYS entries with roles, through the real
// server and CLI. A read key reads (header values redacted) but cannot
// enqueue or ask for view=full; the admin key (no suffix) can; the header
// value, delivered to the target, never appears in serve's debug log.
func TestKeyRolesEndToEnd(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	_, sinkURL := startSink(t, key)
	const reader = "e2e-reader-key"
	in := startServe(t, "serve", serveOpts{dataDir: t.TempDir(), env: []string{
		"SPOOL_API_KEYS=" + testAPIKey + "," + reader + ":read", "SPOOL_LOG_LEVEL=debug"}}, key)
	base := "http://" + in.api
	cli := func(apiKey string, args ...string) (string, error) {
		p := startProc(t, "cli "+strings.Join(args, " "), []string{"SPOOL_SERVER=" + base, "SPOOL_API_KEY=" + apiKey}, args...)
		err := p.wait(20 * time.Second)
		return p.out.String(), err
	}
	out, err := cli(testAPIKey, "enqueue", "roles", sinkURL+"/hook", "-H", "Authorization: Bearer receiver-secret", "--output", "json")
	var tk apiTask
	if err != nil || json.Unmarshal([]byte(out), &tk) != nil || strings.Contains(out, "receiver-secret") {
		t.Fatalf("enqueue as admin: %v\n%s", err, out)
	}
	if out, err := cli(reader, "tasks", "get", tk.ID); err != nil || !strings.Contains(out, "Authorization: [redacted]") {
		t.Errorf("tasks get as reader: %v\n%s", err, out)
	}
	if out, err := cli(reader, "tasks", "get", tk.ID, "--view", "full"); err == nil || !strings.Contains(out, "403") || strings.Contains(out, "receiver-secret") {
		t.Errorf("tasks get --view full as reader: %v\n%s", err, out)
	}
	if out, err := cli(reader, "enqueue", "roles", sinkURL+"/hook"); err == nil || !strings.Contains(out, "403") {
		t.Errorf("enqueue as reader: %v\n%s", err, out)
	}
	if out, err := cli(testAPIKey, "tasks", "get", tk.ID, "--view", "full"); err != nil || !strings.Contains(out, "Authorization: Bearer receiver-secret") {
		t.Errorf("tasks get --view full as admin: %v\n%s", err, out)
	}
	waitUnique(t, sinkURL, 1, 10*time.Second)
	if strings.Contains(in.out.String(), "receiver-secret") {
		t.Errorf("a target header value is in serve's log:\n%s", in.out.String())
	}
}

func TestEmbeddedEndToEnd(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	_, sinkURL := startSink(t, key)
	in := startServe(t, "serve", serveOpts{dataDir: t.TempDir()}, key)
	base := "http://" + in.api

	var tk apiTask
	body := map[string]any{"target": map[string]any{"url": sinkURL + "/hook"}, "payload": map[string]string{"hello": "world"}, "idempotency_key": "order-1"}
	if code := call(t, "POST", base+"/v1/queues/emails/tasks", body, &tk); code != 201 {
		t.Fatalf("enqueue: %d", code)
	}
	var replay apiTask
	if code := call(t, "POST", base+"/v1/queues/emails/tasks", body, &replay); code != 200 || replay.ID != tk.ID {
		t.Fatalf("idempotent replay: %d %s vs %s", code, replay.ID, tk.ID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for tk.State != "succeeded" {
		if time.Now().After(deadline) {
			t.Fatalf("task still %s", tk.State)
		}
		time.Sleep(20 * time.Millisecond)
		call(t, "GET", base+"/v1/tasks/"+tk.ID, nil, &tk)
	}
	if s := getStats(t, sinkURL); s.Unique != 1 || s.BadSignatures != 0 || s.Duplicates != 0 {
		t.Errorf("sink %+v", s)
	}

	// The CLI against the same server.
	cliEnv := []string{"SPOOL_SERVER=" + base, "SPOOL_API_KEY=" + testAPIKey}
	cli := func(args ...string) string {
		p := startProc(t, "cli "+strings.Join(args, " "), cliEnv, args...)
		if err := p.wait(20 * time.Second); err != nil {
			t.Fatalf("spool %v: %v\n%s", args, err, p.out.String())
		}
		return p.out.String()
	}
	if out := cli("tasks", "get", tk.ID, "--output", "json"); !strings.Contains(out, tk.ID) || !strings.Contains(out, "succeeded") {
		t.Errorf("tasks get: %s", out)
	}
	cli("queues", "pause", "emails")
	var q apiQueue
	call(t, "GET", base+"/v1/queues/emails", nil, &q)
	if !q.Paused || q.Counts["succeeded"] != 1 {
		t.Errorf("queue after pause: %+v", q)
	}
	// A paused queue accepts but does not deliver; resume delivers.
	out := cli("enqueue", "emails", sinkURL+"/later", "--data", `{"x":1}`, "--output", "json")
	var later apiTask
	if err := json.Unmarshal([]byte(out), &later); err != nil || later.ID == "" {
		t.Fatalf("enqueue output %q: %v", out, err)
	}
	time.Sleep(500 * time.Millisecond)
	call(t, "GET", base+"/v1/tasks/"+later.ID, nil, &later)
	if later.State != "available" {
		t.Errorf("task in paused queue is %s", later.State)
	}
	cli("queues", "resume", "emails")
	waitUnique(t, sinkURL, 2, 10*time.Second)

	// Admin port: metrics and pprof, not on the API port.
	resp, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`spool_tasks_finished_total{outcome="succeeded",queue="emails"} 2`)) {
		t.Errorf("metrics lack the delivered count:\n%s", grepLines(string(metrics), "spool_tasks_finished"))
	}
	if resp, err := http.Get(base + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("/metrics served on the API port")
		}
	}
	in.signal(syscall.SIGTERM)
	if err := in.wait(15 * time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}

func (p *proc) signal(sig syscall.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
}

// SIGTERM with deliveries in flight: the process exits in time, every task
// ends succeeded or available again, none stays running, none is lost.
func TestSIGTERMInFlight(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			key := newKey(t)
			_, sinkURL := startSink(t, key)
			o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_SHUTDOWN_TIMEOUT=1s", "SPOOL_WORKERS=40", "SPOOL_MIGRATE=true"}}
			if driver == "postgres" {
				o.dsn = testpg.Shared(t).CreateDB(t)
			}
			in := startServe(t, "serve-1", o, key)
			apis := []string{in.api}
			slow := enqueueBatch(t, apis, "q", sinkURL+"/slow?delay=5s", 30, 30) // cannot finish in 1s: released
			quick := enqueueBatch(t, apis, "q", sinkURL+"/quick?delay=200ms", 30, 30)
			// Wait until deliveries are in flight.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var q apiQueue
				call(t, "GET", "http://"+in.api+"/v1/queues/q", nil, &q)
				if q.Counts["running"] >= 40 { // every worker busy: the 30 slow and 10 quick
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("deliveries never in flight: %+v", q.Counts)
				}
				time.Sleep(20 * time.Millisecond)
			}
			in.signal(syscall.SIGTERM)
			if err := in.wait(10 * time.Second); err != nil {
				t.Fatalf("exit status after SIGTERM: %v", err)
			}

			// Straight from the store, before anything restarts: none running,
			// every task succeeded or available again.
			checkStates(t, o, append(slow, quick...))

			// Started again on the same store: everything is delivered.
			in2 := startServe(t, "serve-2", o, key)
			waitUnique(t, sinkURL, len(slow)+len(quick), 60*time.Second)
			// Delivered is not yet recorded: wait for every completion to land.
			for _, id := range append(slow, quick...) {
				waitState(t, in2.api, id, "succeeded", 10*time.Second)
			}
		})
	}
}

// Three replicas on one PostgreSQL share 5,000 tasks: each delivered once,
// and every replica does part of the work.
func TestThreeReplicasPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the 5,000-task replica test in -short mode")
	}
	dsn := testpg.Shared(t).CreateDB(t)
	mig := startProc(t, "migrate", []string{"SPOOL_DATABASE_URL=" + dsn}, "migrate")
	if err := mig.wait(30 * time.Second); err != nil {
		t.Fatalf("spool migrate: %v\n%s", err, mig.out.String())
	}
	bulk(t, "3 replicas on PostgreSQL", 3, serveOpts{dsn: dsn, env: []string{"SPOOL_WORKERS=50"}})
}

// The same 5,000 tasks through one process on the embedded SQLite store.
func TestBulkSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the 5,000-task test in -short mode")
	}
	bulk(t, "1 process on SQLite", 1, serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_WORKERS=100"}})
}

func bulk(t *testing.T, name string, replicas int, o serveOpts) {
	key := newKey(t)
	_, sinkURL := startSink(t, key)
	var ins []*instance
	var apis []string
	for i := 0; i < replicas; i++ {
		in := startServe(t, fmt.Sprintf("replica-%d", i), o, key)
		ins = append(ins, in)
		apis = append(apis, in.api)
	}
	const n = 5000
	start := time.Now()
	ids := enqueueBatch(t, apis, "bulk", sinkURL+"/bulk", n, 250)
	enqueued := time.Since(start)
	waitUnique(t, sinkURL, n, 120*time.Second)
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond) // let completions land before reading counts
	s := getStats(t, sinkURL)
	if len(ids) != n || s.Unique != n || s.Duplicates != 0 || s.BadSignatures != 0 {
		t.Errorf("ids %d, sink %+v: want %d unique and no duplicates", len(ids), s, n)
	}
	total := 0
	for i, in := range ins {
		got := scrapeCounter(t, in.admin, `spool_tasks_finished_total{outcome="succeeded",queue="bulk"}`)
		t.Logf("replica %d delivered %d", i, got)
		if got == 0 {
			t.Errorf("replica %d delivered nothing: the work was not spread", i)
		}
		total += got
	}
	if total != n {
		t.Errorf("replicas report %d deliveries, want %d", total, n)
	}
	t.Logf("%s: %d tasks enqueued in batches of 250 in %s, all delivered in %s (%.0f tasks/s end to end)",
		name, n, enqueued.Round(time.Millisecond), elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
}

func scrapeCounter(t *testing.T, admin, series string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), series+" ") {
			var v float64
			fmt.Sscanf(strings.TrimPrefix(sc.Text(), series+" "), "%g", &v)
			return int(v)
		}
	}
	return 0
}

// wantRefusal starts serve on a non-loopback address with env and wants it
// to exit 1 with one line naming flag, the way to override the refusal.
func wantRefusal(t *testing.T, env []string, flag string) {
	t.Helper()
	p := startProc(t, "serve", env, "serve", "--http-addr", "0.0.0.0:0", "--admin-addr", "")
	err := p.wait(10 * time.Second)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v", err)
	}
	out := strings.TrimSpace(p.out.String())
	if !strings.Contains(out, flag) || strings.Count(out, "\n") > 0 {
		t.Errorf("want one line naming %s, got %q", flag, out)
	}
}

func TestRefusesUnauthenticatedPublicAddress(t *testing.T) {
	t.Parallel()
	wantRefusal(t, []string{"SPOOL_API_KEYS=", "SPOOL_SIGNING_KEYS=" + newKey(t), "SPOOL_DATA_DIR=" + t.TempDir()}, "--insecure-no-auth")
}

// TestRefusesUnsignedPublicAddress: with no signing key, serve refuses a
// non-loopback address in one line naming --insecure-unsigned; with the
// flag it starts and says once in its log that deliveries are unsigned.
func TestRefusesUnsignedPublicAddress(t *testing.T) {
	t.Parallel()
	env := []string{"SPOOL_API_KEYS=" + testAPIKey, "SPOOL_SIGNING_KEYS=", "SPOOL_SIGNING_KEYS_FILE=", "SPOOL_DATA_DIR=" + t.TempDir(), "SPOOL_DRAIN_DELAY=0s"}
	wantRefusal(t, env, "--insecure-unsigned")

	admin := freePort(t)
	p := startProc(t, "serve", env, "serve", "--http-addr", "0.0.0.0:0", "--admin-addr", admin, "--insecure-unsigned")
	waitHTTP(t, "http://"+admin+"/readyz", p)
	_ = p.cmd.Process.Signal(os.Interrupt)
	if err := p.wait(20 * time.Second); err != nil {
		t.Fatalf("serve --insecure-unsigned: %v\n%s", err, p.out.String())
	}
	if n := strings.Count(p.out.String(), "deliveries are not signed"); n != 1 {
		t.Errorf("the unsigned warning appears %d times, want once:\n%s", n, p.out.String())
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	cmds := [][]string{
		{"serve"}, {"migrate"}, {"healthcheck"}, {"enqueue"}, {"tasks"}, {"tasks", "get"}, {"tasks", "list"},
		{"tasks", "cancel"}, {"tasks", "retry"}, {"queues"}, {"queues", "list"}, {"queues", "get"},
		{"queues", "pause"}, {"queues", "resume"}, {"queues", "set"}, {"destinations"}, {"destinations", "list"},
		{"destinations", "get"}, {"destinations", "set"}, {"sink"}, {"bench"},
	}
	for _, c := range cmds {
		var out, errb bytes.Buffer
		err := run(context.Background(), append(c, "--help"), func(string) (string, bool) { return "", false }, &out, &errb)
		if err != nil && !strings.Contains(err.Error(), "help requested") {
			t.Errorf("%v --help: %v", c, err)
		}
		if !strings.Contains(out.String()+errb.String(), "Usage") {
			t.Errorf("%v --help printed no usage: %q", c, out.String()+errb.String())
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) (string, bool) { return "", false }, &out, &out); err != nil || !strings.HasPrefix(out.String(), "spool ") {
		t.Errorf("version: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"frobnicate"}, func(string) (string, bool) { return "", false }, io.Discard, io.Discard); err == nil {
		t.Error("unknown command accepted")
	}
}

func waitState(t *testing.T, api, id, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var tk apiTask
		call(t, "GET", "http://"+api+"/v1/tasks/"+id, nil, &tk)
		if tk.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %s after %s, want %s", id, tk.State, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkStates(t *testing.T, o serveOpts, ids []string) {
	t.Helper()
	cfg := &config.Config{DatabaseURL: config.Secret(o.dsn), DataDir: o.dataDir}
	st, _, err := openStore(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	counts := map[task.State]int{}
	for _, id := range ids {
		tk, err := st.GetTask(context.Background(), id)
		if err != nil {
			t.Fatalf("task %s after shutdown: %v", id, err)
		}
		counts[tk.State]++
		if tk.State != task.Succeeded && tk.State != task.Available {
			t.Errorf("task %s is %s after shutdown (attempt %d)", id, tk.State, tk.Attempt)
		}
	}
	t.Logf("after SIGTERM: %v", counts)
	if counts[task.Available] == 0 || counts[task.Succeeded] == 0 {
		t.Errorf("want both finished and released tasks, got %v", counts)
	}
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	in := startServe(t, "serve", serveOpts{dataDir: t.TempDir()}, newKey(t))
	ok := startProc(t, "healthcheck", []string{"SPOOL_HTTP_ADDR=" + in.api}, "healthcheck")
	if err := ok.wait(10 * time.Second); err != nil {
		t.Errorf("healthcheck of a ready instance: %v %s", err, ok.out.String())
	}
	bad := startProc(t, "healthcheck", []string{"SPOOL_HTTP_ADDR=" + freePort(t)}, "healthcheck")
	if err := bad.wait(10 * time.Second); err == nil {
		t.Errorf("healthcheck of nothing succeeded")
	}
}

// A task enqueued to an idle queue starts within milliseconds: wake-ups
// (LISTEN/NOTIFY on PostgreSQL, in-process on SQLite), not polling — the
// poll interval here is a minute.
func TestIdleQueueWakesUp(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			key := newKey(t)
			_, sinkURL := startSink(t, key)
			o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_POLL_INTERVAL=1m", "SPOOL_MIGRATE=true"}}
			if driver == "postgres" {
				o.dsn = testpg.Shared(t).CreateDB(t)
			}
			in := startServe(t, "serve", o, key)
			if driver == "postgres" {
				// The notification crosses processes: an API-only replica
				// enqueues, a worker-only replica delivers.
				api := o
				api.env = append(slices.Clone(o.env), "SPOOL_ROLE=api")
				worker := o
				worker.env = append(slices.Clone(o.env), "SPOOL_ROLE=worker")
				in.signal(syscall.SIGTERM)
				in.wait(10 * time.Second)
				in = startServe(t, "api", api, key)
				startServe(t, "worker", worker, key)
			}
			time.Sleep(300 * time.Millisecond) // idle: the first poll has passed
			var worst time.Duration
			for i := 0; i < 5; i++ {
				start := time.Now()
				enqueueBatch(t, []string{in.api}, "idle", sinkURL+"/idle", 1, 1)
				waitUnique(t, sinkURL, i+1, 10*time.Second)
				worst = max(worst, time.Since(start))
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s: worst enqueue→delivery on an idle queue %s (poll interval 1m)", driver, worst)
			if worst > 5*time.Second {
				t.Errorf("idle queue waited %s: wake-ups are not working", worst)
			}
		})
	}
}

// TestEnqueueLeaseEndToEnd: with free workers, each enqueue of the real
// binary leases its own task in its transaction (spool_enqueue_leased_total
// counts it), on both stores; SPOOL_ENQUEUE_LEASE=false leaves the lease to
// the dispatcher's wake-up, and the tasks arrive all the same. The poll is
// a minute, so neither way waits for it.
func TestEnqueueLeaseEndToEnd(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		for _, on := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/%v", driver, on), func(t *testing.T) {
				t.Parallel()
				key := newKey(t)
				_, sinkURL := startSink(t, key)
				o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_POLL_INTERVAL=1m", "SPOOL_MIGRATE=true",
					fmt.Sprintf("SPOOL_ENQUEUE_LEASE=%v", on)}}
				if driver == "postgres" {
					o.dsn = testpg.Shared(t).CreateDB(t)
				}
				in := startServe(t, "serve", o, key)
				time.Sleep(300 * time.Millisecond) // the first poll has passed
				const n = 5
				for i := range n {
					enqueueBatch(t, []string{in.api}, "direct", sinkURL+"/direct", 1, 1)
					waitUnique(t, sinkURL, i+1, 10*time.Second)
				}
				got := scrapeCounter(t, in.admin, "spool_enqueue_leased_total")
				want := 0
				if on {
					want = n
				}
				if got != want {
					t.Errorf("spool_enqueue_leased_total = %d after %d single enqueues, want %d", got, n, want)
				}
			})
		}
	}
}

// Queue concurrency is global: two replicas never run more than the limit
// at once, and the rate limit caps starts per second across both.
func TestQueueLimitsAcrossReplicas(t *testing.T) {
	key := newKey(t)
	var mu sync.Mutex
	cur, peak, total := 0, 0, 0
	var first time.Time
	var starts []time.Duration
	target := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cur++
		total++
		if first.IsZero() {
			first = time.Now()
		}
		starts = append(starts, time.Since(first))
		peak = max(peak, cur)
		mu.Unlock()
		time.Sleep(150 * time.Millisecond)
		mu.Lock()
		cur--
		mu.Unlock()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go target.Serve(ln)
	defer target.Close()
	url := "http://" + ln.Addr().String() + "/"

	dsn := testpg.Shared(t).CreateDB(t)
	o := serveOpts{dsn: dsn, env: []string{"SPOOL_MIGRATE=true", "SPOOL_POLL_INTERVAL=50ms"}}
	a := startServe(t, "replica-a", o, key)
	b := startServe(t, "replica-b", o, key)
	if code := call(t, "PATCH", "http://"+a.api+"/v1/queues/limited", map[string]any{"concurrency": 3}, nil); code != 200 {
		t.Fatalf("patch: %d", code)
	}
	enqueueBatch(t, []string{a.api, b.api}, "limited", url, 30, 10)
	waitQueueDone(t, a.api, "limited", 30, 60*time.Second)
	mu.Lock()
	t.Logf("concurrency 3: peak %d of %d deliveries", peak, total)
	if peak > 3 || peak < 2 {
		t.Errorf("peak concurrency %d with a limit of 3 across two replicas", peak)
	}
	mu.Unlock()

	if code := call(t, "PATCH", "http://"+a.api+"/v1/queues/rated", map[string]any{"rate_limit": 5}, nil); code != 200 {
		t.Fatalf("patch: %d", code)
	}
	mu.Lock()
	first, starts = time.Time{}, nil
	mu.Unlock()
	enqueueBatch(t, []string{a.api, b.api}, "rated", url, 20, 10)
	waitQueueDone(t, a.api, "rated", 20, 60*time.Second)
	mu.Lock()
	defer mu.Unlock()
	inFirstSecond := 0
	for _, s := range starts {
		if s < time.Second {
			inFirstSecond++
		}
	}
	t.Logf("rate limit 5/s: %d of %d starts in the first second, last at %s", inFirstSecond, len(starts), starts[len(starts)-1])
	if inFirstSecond > 11 { // 5/s plus a burst of 5, with slack for the bucket's start
		t.Errorf("%d starts in the first second with rate_limit 5", inFirstSecond)
	}
}

func waitQueueDone(t *testing.T, api, queue string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var q apiQueue
		call(t, "GET", "http://"+api+"/v1/queues/"+queue, nil, &q)
		if q.Counts["succeeded"] == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s: %v after %s", queue, q.Counts, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
