package fastapi

// The walk-through of examples/fastapi/README.md, as a test:
//
//   - an order placed (POST /orders) is stored and its task enqueued on
//     Spool, which delivers it to the app's /webhooks/spool; the order ends
//     processed once and the task succeeded on its first attempt;
//   - the delivery's signature is verified: Spool signs with two keys (a
//     rotation) and the app knows only the second; a request with a body
//     changed after signing, one without signature, one signed with an
//     unknown key and one whose timestamp is 10 minutes old are refused
//     with 4xx and change nothing;
//   - a redelivery of the same webhook-id (the captured delivery sent
//     again, byte for byte) is answered 200 and deduplicated: the order is
//     still processed once;
//   - a failing handler is retried: an order asking for two failures is
//     answered 503 twice, Spool retries with the same webhook-id, and the
//     third attempt processes it (task succeeded, attempt 3).
//
// Spool delivers through a recording proxy in front of the app (the app's
// ORDERS_WEBHOOK_URL points at it) so the test holds the exact requests
// Spool sent: the proxy forwards each one unchanged and returns the app's
// answer unchanged.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

// RequireEnv makes missing Python packages a failure instead of a skip.
const RequireEnv = "SPOOL_TEST_REQUIRE_PYTHON"

// pythonModules are what the app imports; Debian packages them as
// python3-fastapi, python3-uvicorn, python3-httpx and python3-asyncpg.
var pythonModules = []string{"fastapi", "uvicorn", "httpx", "asyncpg"}

const apiKey = "fastapi-e2e-key"

var spoolBin string

func TestMain(m *testing.M) {
	// testpg.Main exits the process, so the binary cannot be removed after
	// the run; binaries of runs over an hour old are swept instead.
	dir := filepath.Join(os.TempDir(), "spool-fastapi-bin")
	_ = os.MkdirAll(dir, 0o755)
	if old, _ := filepath.Glob(filepath.Join(dir, "spool-*")); len(old) > 0 {
		for _, f := range old {
			if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.Remove(f)
			}
		}
	}
	spoolBin = filepath.Join(dir, fmt.Sprintf("spool-%d", os.Getpid()))
	build := exec.Command("go", "build", "-o", spoolBin, "github.com/spoolhq/spool/cmd/spool")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build spool: %v\n%s", err, out)
		os.Exit(1)
	}
	testpg.Main(m)
}

// findPython returns an interpreter that imports every module the app
// needs: SPOOL_TEST_PYTHON, else Debian's /usr/bin/python3 (where apt puts
// python3-fastapi and the others), else python3 on PATH. Without one it
// skips, or fails under SPOOL_TEST_REQUIRE_PYTHON=1.
func findPython(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("SPOOL_TEST_PYTHON"), "/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	var tried []string
	for _, py := range candidates {
		if py == "" {
			continue
		}
		check := "import importlib.util, sys; missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]; print(' '.join(missing)); sys.exit(1 if missing else 0)"
		out, err := exec.Command(py, append([]string{"-c", check}, pythonModules...)...).CombinedOutput()
		if err == nil {
			return py
		}
		tried = append(tried, fmt.Sprintf("%s (missing: %s)", py, strings.TrimSpace(firstLine(string(out), err))))
	}
	msg := fmt.Sprintf("no Python with %s: tried %s; apt-get install python3-fastapi python3-uvicorn python3-httpx python3-asyncpg",
		strings.Join(pythonModules, ", "), strings.Join(tried, ", "))
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s=1 but %s", RequireEnv, msg)
	}
	t.Skip(msg + " (set " + RequireEnv + "=1 to fail instead)")
	return ""
}

func firstLine(s string, err error) string {
	s = strings.TrimSpace(s)
	if s == "" && err != nil {
		s = err.Error()
	}
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func TestOrdersOnSpool(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, spool serve and the Python app")
	}
	python := findPython(t)
	pg := testpg.Shared(t)
	repo := repoRoot(t)

	// Spool signs every delivery with both keys, as during a rotation; the
	// app knows only the new one and must find its entry in the header.
	oldKey, newKey := genKey(t), genKey(t)
	newKeyBytes, err := webhook.ParseKey(newKey)
	if err != nil {
		t.Fatal(err)
	}
	secrets := t.TempDir()
	writeFile(t, filepath.Join(secrets, "api_key"), apiKey+"\n")
	writeFile(t, filepath.Join(secrets, "signing_keys"), "# the app's key (Spool also signs with an older one)\n"+newKey+"\n")

	// --- Spool on PostgreSQL, its schema migrated the documented way ---
	spoolDSN := pg.CreateDB(t)
	mig := exec.Command(spoolBin, "migrate")
	mig.Env = append(os.Environ(), "SPOOL_DATABASE_URL="+spoolDSN, "DATABASE_URL=")
	if out, err := mig.CombinedOutput(); err != nil {
		t.Fatalf("spool migrate: %v\n%s", err, out)
	}
	spoolAddr, adminAddr := freePort(t), freePort(t)
	spool := start(t, "spool serve", exec.Command(spoolBin, "serve"), []string{
		"SPOOL_DATABASE_URL=" + spoolDSN, "DATABASE_URL=",
		"SPOOL_HTTP_ADDR=" + spoolAddr, "SPOOL_ADMIN_ADDR=" + adminAddr,
		"SPOOL_API_KEYS=" + apiKey, "SPOOL_SIGNING_KEYS=" + oldKey + "," + newKey,
		"SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "SPOOL_DRAIN_DELAY=0s", "SPOOL_POLL_INTERVAL=200ms",
		"SPOOL_RETRY_MIN_BACKOFF=100ms", "SPOOL_RETRY_MAX_BACKOFF=1s", "SPOOL_LOG_LEVEL=warn",
	})
	waitOK(t, "http://"+spoolAddr+"/readyz", spool)

	// --- the recording proxy Spool delivers through ---
	appAddr := freePort(t)
	rec := &recorder{upstream: "http://" + appAddr}
	proxy := httptest.NewServer(rec)
	t.Cleanup(proxy.Close)

	// --- the app, under uvicorn, on a database of its own ---
	appCmd := exec.Command(python, "-m", "uvicorn", "app.main:app",
		"--app-dir", filepath.Join(repo, "examples", "fastapi"),
		"--host", "127.0.0.1", "--port", portOf(t, appAddr))
	appCmd.Dir = t.TempDir()
	app := start(t, "orders app", appCmd, []string{
		"DATABASE_URL=" + pg.CreateDB(t),
		"SPOOL_URL=http://" + spoolAddr,
		"SPOOL_API_KEY_FILE=" + filepath.Join(secrets, "api_key"),
		"SPOOL_SIGNING_KEYS_FILE=" + filepath.Join(secrets, "signing_keys"),
		"ORDERS_WEBHOOK_URL=" + proxy.URL + "/webhooks/spool",
		"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
	})
	waitOK(t, "http://"+appAddr+"/readyz", app)
	appURL := "http://" + appAddr
	spoolAPI := "http://" + spoolAddr

	var placed order
	var delivered recorded
	t.Run("order placed and delivered", func(t *testing.T) {
		code := call(t, "POST", appURL+"/orders", "", map[string]any{"item": "The Go Programming Language", "quantity": 2}, &placed)
		if code != http.StatusCreated || placed.TaskID == "" {
			t.Fatalf("POST /orders: %d %+v, want 201 with a task id", code, placed)
		}
		got := waitOrder(t, appURL, placed.ID, func(o order) bool { return o.Status == "processed" })
		if got.Processed != 1 || got.Deliveries != 1 || got.Duplicates != 0 {
			t.Errorf("order after delivery: %+v, want processed 1, deliveries 1, duplicates 0", got)
		}
		task := waitTask(t, spoolAPI, placed.TaskID, "succeeded")
		if task.Attempt != 1 || task.LastStatus == nil || *task.LastStatus != 200 {
			t.Errorf("task %+v, want succeeded on attempt 1 with 200", task)
		}
		reqs := rec.byID(placed.TaskID)
		if len(reqs) != 1 {
			t.Fatalf("recorded %d deliveries with webhook-id %s, want 1 (all: %v)", len(reqs), placed.TaskID, rec.ids())
		}
		delivered = reqs[0]
		if n := len(strings.Fields(delivered.header.Get("webhook-signature"))); n != 2 {
			t.Errorf("webhook-signature has %d entries, want 2 (one per Spool key): %q", n, delivered.header.Get("webhook-signature"))
		}
		// Enqueueing again with the order's idempotency key is the same task.
		var again struct{ ID string }
		code = call(t, "POST", spoolAPI+"/v1/queues/orders/tasks", apiKey, map[string]any{
			"target":          map[string]any{"url": proxy.URL + "/webhooks/spool"},
			"payload":         map[string]any{"event": "order.placed", "order_id": placed.ID},
			"idempotency_key": "order-" + placed.ID, "max_attempts": 8, "timeout": "10s",
		}, &again)
		if code != http.StatusOK || again.ID != placed.TaskID {
			t.Errorf("enqueue replay: %d %s, want 200 and task %s", code, again.ID, placed.TaskID)
		}
	})
	if delivered.header == nil {
		t.Fatal("no delivery captured; the remaining checks need one")
	}

	t.Run("signature verified", func(t *testing.T) {
		// The captured delivery with its payload changed after signing.
		tampered := bytes.Replace(delivered.body, []byte(placed.ID), []byte("00000000-0000-4000-8000-000000000000"), 1)
		if bytes.Equal(tampered, delivered.body) {
			t.Fatalf("payload %q does not name the order", delivered.body)
		}
		unsigned := delivered.header.Clone()
		unsigned.Del("webhook-signature")
		foreign := delivered.header.Clone()
		other, _ := webhook.ParseKey(genKey(t))
		now := time.Now()
		foreign.Set("webhook-signature", webhook.Sign(other, placed.TaskID, now, delivered.body))
		foreign.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
		// Signed with the right key, but 10 minutes old: outside the
		// 5-minute tolerance, as a replay captured long ago would be.
		stale := delivered.header.Clone()
		old := now.Add(-10 * time.Minute)
		stale.Set("webhook-timestamp", fmt.Sprint(old.Unix()))
		stale.Set("webhook-signature", webhook.Sign(newKeyBytes, placed.TaskID, old, delivered.body))
		for _, c := range []struct {
			name   string
			header http.Header
			body   []byte
		}{
			{"body changed", delivered.header, tampered},
			{"no signature", unsigned, delivered.body},
			{"unknown key", foreign, delivered.body},
			{"stale timestamp", stale, delivered.body},
		} {
			status, body := post(t, appURL+"/webhooks/spool", c.header, c.body)
			if status < 400 || status > 499 {
				t.Errorf("%s: answered %d %s, want 4xx", c.name, status, body)
			}
		}
		// The same body signed the Standard Webhooks way by this test (not
		// by Spool) with the app's key, a fresh timestamp and a new
		// webhook-id is accepted, so the refusals above are for the reasons
		// given. A new webhook-id is a new message: the app does the work
		// again (deduplication is per webhook-id, as the specification has it).
		fresh := delivered.header.Clone()
		fresh.Set("webhook-id", "msg_signed_by_the_test")
		fresh.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
		fresh.Set("webhook-signature", webhook.Sign(newKeyBytes, "msg_signed_by_the_test", now, delivered.body))
		if status, body := post(t, appURL+"/webhooks/spool", fresh, delivered.body); status != http.StatusOK {
			t.Errorf("a valid request signed by the test: %d %s, want 200", status, body)
		}
		got := getOrder(t, appURL, placed.ID)
		if got.Processed != 2 || got.Deliveries != 2 {
			t.Errorf("order %+v, want processed 2 and deliveries 2 (refused requests count for nothing)", got)
		}
	})

	t.Run("redelivery deduplicated", func(t *testing.T) {
		before := getOrder(t, appURL, placed.ID)
		for i := range 2 {
			status, body := post(t, appURL+"/webhooks/spool", delivered.header, delivered.body)
			if status != http.StatusOK || !strings.Contains(body, "duplicate") {
				t.Errorf("redelivery %d of %s: %d %s, want 200 duplicate", i+1, placed.TaskID, status, body)
			}
		}
		got := getOrder(t, appURL, placed.ID)
		if got.Processed != before.Processed || got.Duplicates != before.Duplicates+2 || got.Deliveries != before.Deliveries+2 {
			t.Errorf("order after two redeliveries: %+v, before %+v: want processed unchanged, duplicates +2", got, before)
		}
	})

	t.Run("failing handler retried", func(t *testing.T) {
		var o order
		code := call(t, "POST", appURL+"/orders", "", map[string]any{"item": "flaky", "quantity": 1, "fail_times": 2}, &o)
		if code != http.StatusCreated || o.TaskID == "" {
			t.Fatalf("POST /orders: %d %+v", code, o)
		}
		task := waitTask(t, spoolAPI, o.TaskID, "succeeded")
		if task.Attempt != 3 {
			t.Errorf("task %+v, want succeeded on attempt 3 (two 503s retried)", task)
		}
		got := waitOrder(t, appURL, o.ID, func(o order) bool { return o.Status == "processed" })
		if got.Processed != 1 || got.Deliveries != 3 || got.Duplicates != 0 || got.FailRemaining != 0 {
			t.Errorf("order %+v, want processed once after 3 deliveries", got)
		}
		reqs := rec.byID(o.TaskID)
		var statuses []int
		for _, r := range reqs {
			statuses = append(statuses, r.status)
		}
		if fmt.Sprint(statuses) != "[503 503 200]" {
			t.Errorf("deliveries with webhook-id %s answered %v, want [503 503 200]: every attempt carries the task's id", o.TaskID, statuses)
		}
	})
}

// --- the recording proxy ---

type recorded struct {
	header http.Header
	body   []byte
	status int
}

type recorder struct {
	upstream string
	mu       sync.Mutex
	reqs     []recorded
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, rc.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recorded{header: r.Header.Clone(), body: body, status: resp.StatusCode})
	rc.mu.Unlock()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func (rc *recorder) byID(id string) []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []recorded
	for _, r := range rc.reqs {
		if r.header.Get("webhook-id") == id {
			out = append(out, r)
		}
	}
	return out
}

func (rc *recorder) ids() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, r := range rc.reqs {
		out = append(out, r.header.Get("webhook-id"))
	}
	return out
}

// --- the app's and Spool's answers ---

type order struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	TaskID        string `json:"task_id"`
	Deliveries    int    `json:"deliveries"`
	Duplicates    int    `json:"duplicates"`
	Processed     int    `json:"processed"`
	FailRemaining int    `json:"fail_remaining"`
}

type task struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Attempt    int    `json:"attempt"`
	LastStatus *int   `json:"last_status"`
}

func getOrder(t *testing.T, appURL, id string) order {
	t.Helper()
	var o order
	if code := call(t, "GET", appURL+"/orders/"+id, "", nil, &o); code != http.StatusOK {
		t.Fatalf("GET /orders/%s: %d", id, code)
	}
	return o
}

func waitOrder(t *testing.T, appURL, id string, cond func(order) bool) order {
	t.Helper()
	var o order
	deadline := time.Now().Add(30 * time.Second)
	for {
		o = getOrder(t, appURL, id)
		if cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s did not get there within 30s: %+v", id, o)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitTask(t *testing.T, spoolAPI, id, state string) task {
	t.Helper()
	var tk task
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code := call(t, "GET", spoolAPI+"/v1/tasks/"+id, apiKey, nil, &tk); code == http.StatusOK && tk.State == state {
			return tk
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %s within 30s: %+v", id, state, tk)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// call sends JSON and decodes a 2xx JSON answer into out.
func call(t *testing.T, method, url, key string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 300 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, b, err)
		}
	} else if resp.StatusCode >= 300 {
		t.Logf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// post sends body with exactly the given headers, as a redelivery would.
func post(t *testing.T, url string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	req.Header.Del("Content-Length")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// --- processes ---

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
	name string
	out  *syncBuffer
	done chan struct{}
	err  error
}

// start runs cmd with env added, stopping it when the test ends (SIGTERM,
// then SIGKILL after 10s) and showing its output if the test failed.
func start(t *testing.T, name string, cmd *exec.Cmd, env []string) *proc {
	t.Helper()
	cmd.Env = append(os.Environ(), env...)
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", name, tail(p.out.String(), 6000))
		}
	})
	return p
}

func waitOK(t *testing.T, url string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered: %v\n%s", p.name, url, p.err, tail(p.out.String(), 4000))
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not 200 within 60s\n%s", p.name, url, tail(p.out.String(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func genKey(t *testing.T) string {
	t.Helper()
	k, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd() // go test runs in the package's directory
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(wd, "..", "..")
	if _, err := os.Stat(filepath.Join(root, "examples", "fastapi", "app", "main.py")); err != nil {
		t.Fatalf("examples/fastapi not found from %s: %v", wd, err)
	}
	return root
}
