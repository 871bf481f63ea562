package chaos

// The harness: the binary built once, replicas as child processes that can
// be stopped, killed and started again on the same ports, a throwaway
// PostgreSQL per test (some tests stop or reconfigure it), and an
// in-process receiver (internal/sink) that knows, per task, how often it
// was asked and how often it answered 2xx.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/sink"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

// requireEnv makes a part that cannot run (haproxy, ip netns, PostgreSQL)
// a failure instead of a skip.
const requireEnv = "SPOOL_TEST_REQUIRE_CHAOS"

const apiKey = "chaos-test-key"

// spoolBin is the binary under test, built once by TestMain and never
// changed afterwards.
var spoolBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself in -short mode; no build needed
	}
	dir, err := os.MkdirTemp("", "spool-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable, so a process started in a network namespace (as
	// root here, but also under a different user elsewhere) can run it.
	_ = os.Chmod(dir, 0o755)
	spoolBin = filepath.Join(dir, "spool")
	build := exec.Command("go", "build", "-o", spoolBin, "github.com/spoolhq/spool/cmd/spool")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build spool: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// skipShort skips a chaos test in -short mode: each takes tens of seconds.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the chaos test in -short mode")
	}
}

// missing skips t because a part the test needs cannot run here, or fails
// it when SPOOL_TEST_REQUIRE_CHAOS (or, for PostgreSQL, SPOOL_TEST_REQUIRE_PG)
// is set, so CI cannot pass by skipping.
func missing(t *testing.T, what string, err error, alsoRequiredBy ...string) {
	t.Helper()
	for _, k := range append([]string{requireEnv}, alsoRequiredBy...) {
		if os.Getenv(k) != "" {
			t.Fatalf("%s is required (%s is set) but cannot run here: %v", what, k, err)
		}
	}
	t.Skipf("skipping: %s cannot run here: %v (set %s=1 to fail instead)", what, err, requireEnv)
}

// startPG starts a throwaway PostgreSQL cluster for this test alone (tests
// here stop, restart and reconfigure it) and closes it at the end.
func startPG(t *testing.T) *testpg.Server {
	t.Helper()
	if _, err := testpg.FindBinDir(); err != nil {
		missing(t, "PostgreSQL (Debian's postgresql package)", err, testpg.RequireEnv)
	}
	pg, err := testpg.Start()
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := pg.Close(); err != nil {
			t.Errorf("close PostgreSQL: %v", err)
		}
	})
	return pg
}

// migrate applies the schema once with `spool migrate`, as a deployment
// would before starting replicas.
func migrate(t *testing.T, dsn string) {
	t.Helper()
	p := startProc(t, "migrate", nil, []string{"SPOOL_DATABASE_URL=" + dsn}, "migrate")
	if err := p.wait(60 * time.Second); err != nil {
		t.Fatalf("spool migrate: %v\n%s", err, p.out.String())
	}
}

func freeAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a process's output (every incarnation of a replica).
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

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// proc is one child process.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// startProc runs spool (or, with a prefix such as `ip netns exec ns`, the
// prefix followed by spool) with args and env added to ours. The process
// is killed when the test ends if it still runs, and when the test binary
// dies (parent-death signal), so nothing outlives a timed-out run.
func startProc(t *testing.T, name string, prefix, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, &syncBuffer{}, env, append(append(prefix, spoolBin), args...)...)
}

func startCmd(t *testing.T, name string, out *syncBuffer, env []string, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{t: t, name: name, cmd: cmd, out: out, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// wait returns the exit error, failing the test if the process outlives timeout.
func (p *proc) wait(timeout time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s\n%s", p.name, timeout, tail(p.out.String(), 3000))
		return nil
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// replica is one `spool serve` that keeps its ports and configuration
// across restarts, so a load balancer in front finds it again.
type replica struct {
	t          *testing.T
	name       string
	api, admin string   // host:port
	env        []string // SPOOL_* for every incarnation
	prefix     []string // e.g. ip netns exec <ns>
	out        *syncBuffer
	cur        *proc
	starts     int
}

// baseEnv is what every replica gets; tests add to it.
func baseEnv(dsn, signingKey, allowedCIDRs string) []string {
	return []string{
		"SPOOL_DATABASE_URL=" + dsn, "DATABASE_URL=",
		"SPOOL_API_KEYS=" + apiKey, "SPOOL_SIGNING_KEYS=" + signingKey,
		"SPOOL_ALLOWED_TARGET_CIDRS=" + allowedCIDRs,
		"SPOOL_POLL_INTERVAL=200ms", "SPOOL_RETRY_MIN_BACKOFF=50ms", "SPOOL_RETRY_MAX_BACKOFF=500ms",
		"SPOOL_LOG_LEVEL=warn", "SPOOL_MIGRATE=false",
	}
}

func newReplica(t *testing.T, name string, env []string) *replica {
	return &replica{t: t, name: name, api: freeAddr(t, "127.0.0.1"), admin: freeAddr(t, "127.0.0.1"), env: env, out: &syncBuffer{}}
}

// start runs a new incarnation and waits until its API answers /readyz.
func (r *replica) start() {
	r.t.Helper()
	r.starts++
	fmt.Fprintf(r.out, "=== %s start #%d at %s\n", r.name, r.starts, time.Now().Format("15:04:05.000"))
	env := append([]string{"SPOOL_HTTP_ADDR=" + r.api, "SPOOL_ADMIN_ADDR=" + r.admin}, r.env...)
	argv := append(append(append([]string{}, r.prefix...), spoolBin), "serve")
	r.cur = startCmd(r.t, fmt.Sprintf("%s#%d", r.name, r.starts), r.out, env, argv...)
	if r.starts == 1 {
		r.t.Cleanup(func() {
			if r.t.Failed() {
				r.t.Logf("--- %s output (tail) ---\n%s", r.name, tail(r.out.String(), 6000))
			}
		})
	}
	waitReady(r.t, "http://"+r.api+"/readyz", r.cur, 30*time.Second)
}

// stop sends SIGTERM and waits for a clean exit.
func (r *replica) stop(timeout time.Duration) {
	r.t.Helper()
	r.cur.signal(syscall.SIGTERM)
	if err := r.cur.wait(timeout); err != nil {
		r.t.Fatalf("%s exit after SIGTERM: %v", r.name, err)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (r *replica) kill() {
	r.t.Helper()
	r.cur.signal(syscall.SIGKILL)
	_ = r.cur.wait(10 * time.Second)
}

func waitReady(t *testing.T, url string, p *proc, timeout time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if p != nil && p.exited() {
			t.Fatalf("%s exited before %s was ready: %v\n%s", p.name, url, p.err, tail(p.out.String(), 3000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %s (last: %v)", url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric reads one series (name with its labels, exactly as exposed) from
// a replica's admin port; a series not exposed yet reads 0.
func metric(admin, series string) (float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, sc.Err()
}

func mustMetric(t *testing.T, admin, series string) float64 {
	t.Helper()
	v, err := metric(admin, series)
	if err != nil {
		t.Fatalf("scrape %s from %s: %v", series, admin, err)
	}
	return v
}

// countLines counts log lines whose message is msg, and collects their
// spool.task.id attributes.
func countLines(logs, msg string) (int, []string) {
	n := 0
	var ids []string
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["message"] != msg {
			continue
		}
		n++
		if id, ok := line["spool.task.id"].(string); ok {
			ids = append(ids, id)
		}
	}
	return n, ids
}

func newSigningKey(t *testing.T) (string, []byte) {
	t.Helper()
	k, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := webhook.ParseKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, raw
}

// receiver is the delivery target: internal/sink (signature checks and
// per-task counts) on a real listener, optionally behind a wrapper that
// holds or delays chosen requests.
type receiver struct {
	*sink.Sink
	url string // base URL; append a path and ?delay=… as needed
}

func startReceiver(t *testing.T, host string, key []byte, wrap func(http.Handler) http.Handler) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := sink.New(sink.Config{Keys: [][]byte{key}})
	var h http.Handler = s
	if wrap != nil {
		h = wrap(s)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &receiver{Sink: s, url: "http://" + ln.Addr().String()}
}

// waitUnique waits until the receiver has answered 2xx for want distinct tasks.
func (r *receiver) waitUnique(t *testing.T, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := r.Stats()
		if int(s.Unique) >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver saw %d distinct tasks of %d within %s (%+v)", s.Unique, want, timeout, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lost lists accepted ids the receiver never answered 2xx for.
func (r *receiver) lost(ids []string) []string {
	var out []string
	for _, id := range ids {
		if r.Seen(id) == 0 {
			out = append(out, id)
		}
	}
	return out
}

// client talks to the API with the test key.
type client struct{ hc *http.Client }

func newClient(timeout time.Duration) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &client{hc: &http.Client{Timeout: timeout, Transport: tr}}
}

// result of one API call: err is a transport error (connection refused,
// reset, timeout), status otherwise.
type result struct {
	status int
	body   []byte
	ctype  string
	err    error
	took   time.Duration
}

func (c *client) do(method, url string, body any) result {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return result{err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return result{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, body: b, ctype: resp.Header.Get("Content-Type"), err: err, took: time.Since(start)}
}

type apiTask struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// enqueueOne enqueues one task with an idempotency key; ok means 201 (or
// 200, an idempotent replay) with the task's id.
func (c *client) enqueueOne(base, queue, target, key string) (id string, r result) {
	body := map[string]any{"target": map[string]any{"url": target}, "payload": map[string]string{"key": key}, "idempotency_key": key}
	r = c.do("POST", base+"/v1/queues/"+queue+"/tasks", body)
	if r.err == nil && (r.status == 201 || r.status == 200) {
		var tk apiTask
		if err := json.Unmarshal(r.body, &tk); err != nil || tk.ID == "" {
			r.err = fmt.Errorf("decode enqueue answer %q: %v", r.body, err)
			return "", r
		}
		return tk.ID, r
	}
	return "", r
}

// enqueueBatch enqueues n tasks atomically and returns their ids.
func (c *client) enqueueBatch(t *testing.T, base, queue, target string, n int) []string {
	t.Helper()
	tasks := make([]map[string]any, n)
	for i := range tasks {
		tasks[i] = map[string]any{"target": map[string]any{"url": target}, "payload": map[string]int{"n": i}}
	}
	r := c.do("POST", base+"/v1/queues/"+queue+"/tasks", map[string]any{"tasks": tasks})
	if r.err != nil || r.status != 201 {
		t.Fatalf("batch enqueue to %s: %v %d %s", base, r.err, r.status, r.body)
	}
	var out struct{ Tasks []apiTask }
	if err := json.Unmarshal(r.body, &out); err != nil || len(out.Tasks) != n {
		t.Fatalf("batch enqueue answer %q: %v", r.body, err)
	}
	ids := make([]string, n)
	for i, tk := range out.Tasks {
		ids[i] = tk.ID
	}
	return ids
}

// snapshot is what the store says about one task; a final state must never
// change once reached.
type snapshot struct {
	State      task.State
	Attempt    int
	FinishedAt time.Time
	UpdatedAt  time.Time
	LastStatus int
	LastError  string
}

// readTasks reads ids straight from the store (not through a replica, which
// may be down).
func readTasks(t *testing.T, dsn string, ids []string) map[string]snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	defer st.Close()
	out := make(map[string]snapshot, len(ids))
	for _, id := range ids {
		tk, err := st.GetTask(ctx, id)
		if err != nil {
			t.Fatalf("read task %s: %v", id, err)
		}
		s := snapshot{State: tk.State, Attempt: tk.Attempt, UpdatedAt: tk.UpdatedAt, LastStatus: tk.LastStatus, LastError: tk.LastError}
		if tk.FinishedAt != nil {
			s.FinishedAt = *tk.FinishedAt
		}
		out[id] = s
	}
	return out
}

// waitFinal waits until every task is in a final state in the store and
// returns the snapshot.
func waitFinal(t *testing.T, dsn string, ids []string, timeout time.Duration) map[string]snapshot {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		snap := readTasks(t, dsn, ids)
		counts := map[task.State]int{}
		for _, s := range snap {
			counts[s.State]++
		}
		if counts[task.Succeeded]+counts[task.Failed]+counts[task.Cancelled] == len(ids) {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks not final within %s: %v", timeout, counts)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func countStates(snap map[string]snapshot) map[task.State]int {
	counts := map[task.State]int{}
	for _, s := range snap {
		counts[s.State]++
	}
	return counts
}
