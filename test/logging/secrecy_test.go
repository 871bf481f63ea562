package logging

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
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

// syncBuffer collects one stream of a child process.
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
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	err            error
}

// start runs the spool binary with only the given environment (plus PATH
// and HOME), so nothing from the developer's shell leaks in.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(spoolBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	p := &proc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
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
			t.Logf("--- stdout ---\n%s\n--- stderr ---\n%s", tail(p.stdout.String()), tail(p.stderr.String()))
		}
	})
	return p
}

func tail(s string) string {
	if len(s) > 6000 {
		return "…" + s[len(s)-6000:]
	}
	return s
}

func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("spool %v still running after %s", p.cmd.Args[1:], d)
		return nil
	}
}

var httpc = &http.Client{Timeout: 10 * time.Second}

// do sends one request and returns the status and body.
func do(t *testing.T, method, u, auth, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// passwordDSN makes a login role with a password, hands it the database and
// returns the database URL carrying that password. The throwaway cluster
// trusts loopback, so the password is not checked, but it is exactly what a
// production URL would carry into the process.
func passwordDSN(t *testing.T) (dsn, password string) {
	t.Helper()
	adminDSN := testpg.Shared(t).CreateDB(t)
	u, err := url.Parse(adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	dbname := strings.TrimPrefix(u.Path, "/")
	role := "spool_" + randHex(t, 4)
	password = "pw" + randHex(t, 12)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", role, password),
		fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", dbname, role),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u.User = url.UserPassword(role, password)
	return u.String(), password
}

type secret struct{ name, value string }

// assertNoSecrets fails for each secret found anywhere in out.
func assertNoSecrets(t *testing.T, where, out string, secrets []secret) {
	t.Helper()
	for _, s := range secrets {
		if s.value == "" {
			t.Fatalf("empty secret %s: the check would pass vacuously", s.name)
		}
		if i := strings.Index(out, s.value); i >= 0 {
			line := out[strings.LastIndexByte(out[:i], '\n')+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("%s: the %s appears in the output:\n%s", where, s.name, line)
		}
	}
}

// TestServeNeverLogsSecrets runs the real service at debug level against a
// real PostgreSQL reached through a password-bearing URL, sends it right and
// wrong credentials in every shape, enqueues deliveries that fail (so errors
// are logged) and stops it with SIGTERM; no secret may appear on stdout or
// stderr, and every stdout line must be one Filebeat can ship.
func TestServeNeverLogsSecrets(t *testing.T) {
	t.Parallel()
	dsn, dbPassword := passwordDSN(t)
	apiKey := "sk_" + randHex(t, 16)
	wrongKey := "sk_" + randHex(t, 16)
	signingKey, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	targetToken := "tt_" + randHex(t, 16)  // a task's own Authorization header to its target
	targetURLPass := "up" + randHex(t, 12) // a password in a task's target URL
	basicPass := "bp" + randHex(t, 12)     // HTTP Basic credentials sent to the API
	secrets := []secret{
		{"API key", apiKey},
		{"bearer header", "Bearer " + apiKey},
		{"wrong API key", wrongKey},
		{"signing key", signingKey},
		{"signing key's base64 body", strings.TrimPrefix(signingKey, webhook.KeyPrefix)},
		{"database password", dbPassword},
		{"task target's Authorization token", targetToken},
		{"task target URL's password", targetURLPass},
		{"HTTP Basic credentials", base64.StdEncoding.EncodeToString([]byte("admin:" + basicPass))},
		{"HTTP Basic password", basicPass},
	}

	// Targets that fail: 500 (echoing the Authorization it was sent, as a
	// careless receiver might), 400, and a port where nothing listens.
	targets := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail500":
			http.Error(w, "upstream broke; you sent Authorization: "+r.Header.Get("Authorization"), http.StatusInternalServerError)
		case "/fail400":
			http.Error(w, "bad payload", http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer targets.Close()
	refused := "http://" + freeAddr(t) + "/nobody-home"

	apiAddr, adminAddr := freeAddr(t), freeAddr(t)
	p := start(t, []string{
		"SPOOL_HTTP_ADDR=" + apiAddr, "SPOOL_ADMIN_ADDR=" + adminAddr,
		"SPOOL_DATABASE_URL=" + dsn, "SPOOL_MIGRATE=true",
		"SPOOL_API_KEYS=" + apiKey, "SPOOL_SIGNING_KEYS=" + signingKey,
		"SPOOL_LOG_LEVEL=debug", "SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8",
		"SPOOL_DRAIN_DELAY=0s", "SPOOL_POLL_INTERVAL=100ms",
		"SPOOL_RETRY_MIN_BACKOFF=20ms", "SPOOL_RETRY_MAX_BACKOFF=100ms",
	}, "serve")
	api := "http://" + apiAddr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-p.done:
			t.Fatalf("serve exited before it was ready: %v", p.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	bearer := "Bearer " + apiKey
	// Credentials right and wrong, in every shape a client gets them wrong.
	for _, tc := range []struct {
		name, method, path, auth, body string
		want                           int
	}{
		{"right key", "GET", "/v1/queues", bearer, "", 200},
		{"wrong key", "GET", "/v1/queues", "Bearer " + wrongKey, "", 401},
		{"no header", "GET", "/v1/queues", "", "", 401},
		{"key without scheme", "GET", "/v1/queues", apiKey, "", 401},
		{"key in lower-case scheme", "GET", "/v1/queues", "bearer " + apiKey, "", 0},
		{"basic credentials", "GET", "/v1/queues", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+basicPass)), "", 401},
		{"key in the query", "GET", "/v1/queues?api_key=" + apiKey, "", "", 401},
		{"key in the path", "GET", "/v1/tasks/" + apiKey, bearer, "", 0},
		{"malformed JSON", "POST", "/v1/queues/mail/tasks", bearer, `{"target":`, 400},
		{"secrets in a bad request", "POST", "/v1/queues/mail/tasks", bearer,
			`{"target":{"url":"postgres://x:` + dbPassword + `@h/d"},"password":"` + dbPassword + `","api_key":"` + apiKey + `"}`, 0},
		{"unknown route", "GET", "/v1/nope", bearer, "", 404},
	} {
		code, body := do(t, tc.method, api+tc.path, tc.auth, tc.body)
		if tc.want != 0 && code != tc.want {
			t.Errorf("%s: status %d, want %d: %s", tc.name, code, tc.want, body)
		}
	}

	// A target URL carrying credentials is refused (they belong in headers).
	tu, _ := url.Parse(targets.URL)
	withPass := `{"target":{"url":"http://deliver:` + targetURLPass + "@" + tu.Host + `/ok"}}`
	if code, body := do(t, "POST", api+"/v1/queues/sms/tasks", bearer, withPass); code != 422 {
		t.Errorf("target URL with a password: %d %s", code, body)
	}

	// Deliveries that fail and log their errors, and one that succeeds.
	enq := func(queue, target string, headers map[string]string) string {
		t.Helper()
		b, _ := json.Marshal(map[string]any{
			"target":       map[string]any{"url": target, "headers": headers},
			"payload":      map[string]string{"hello": "world"},
			"max_attempts": 2,
		})
		code, body := do(t, "POST", api+"/v1/queues/"+queue+"/tasks", bearer, string(b))
		if code != 201 {
			t.Fatalf("enqueue to %s: %d %s", target, code, body)
		}
		var tk struct{ ID string }
		if err := json.Unmarshal(body, &tk); err != nil || tk.ID == "" {
			t.Fatalf("enqueue answer %s: %v", body, err)
		}
		return tk.ID
	}
	ids := []string{
		enq("mail", targets.URL+"/fail500", map[string]string{"Authorization": "Bearer " + targetToken}),
		enq("mail", targets.URL+"/fail400", nil),
		enq("sms", refused, nil),
		enq("sms", targets.URL+"/ok", nil),
	}
	for _, id := range ids {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var tk struct{ State string }
			code, body := do(t, "GET", api+"/v1/tasks/"+id, bearer, "")
			if code != 200 || json.Unmarshal(body, &tk) != nil {
				t.Fatalf("get task %s: %d %s", id, code, body)
			}
			if tk.State == "succeeded" || tk.State == "failed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s still %s after 30s", id, tk.State)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The dropped-lines counter is exported (and nothing was dropped at
	// this trickle).
	code, metrics := do(t, "GET", "http://"+adminAddr+"/metrics", "", "")
	if code != 200 || !bytes.Contains(metrics, []byte("\nspool_log_lines_dropped_total 0\n")) {
		t.Errorf("/metrics: %d, spool_log_lines_dropped_total 0 not found", code)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("serve exited with %v", err)
	}

	stdout, stderr := p.stdout.String(), p.stderr.String()
	assertNoSecrets(t, "stdout", stdout, secrets)
	assertNoSecrets(t, "stderr", stderr, secrets)

	// The test saw real traffic, not an empty log: the assertions above
	// would pass vacuously otherwise.
	lines := checkShippable(t, stdout)
	var (
		unauthorized, failedAttempts, debug int
		redactedEcho                        bool
	)
	for _, m := range lines {
		if m["http.response.status_code"] == json.Number("401") {
			unauthorized++
		}
		if m["message"] == "attempt failed" {
			failedAttempts++
			if id, _ := m["spool.task.id"].(string); id == "" {
				t.Errorf("attempt failed without spool.task.id: %v", m)
			}
			if s, _ := m["error.message"].(string); strings.Contains(s, "Authorization: [redacted]") {
				redactedEcho = true
			}
		}
		if m["log.level"] == "debug" {
			debug++
		}
	}
	if unauthorized < 4 || failedAttempts < 3 || debug == 0 {
		t.Errorf("expected traffic missing from the log: %d 401 lines, %d failed attempts, %d debug lines", unauthorized, failedAttempts, debug)
	}
	if !redactedEcho {
		t.Errorf("no attempt-failed line shows the target's echoed credentials redacted")
	}
	// The last line is written at exit by the writer's Close: nothing queued
	// is lost on a normal stop.
	if last := lines[len(lines)-1]; last["message"] != "shutdown complete" {
		t.Errorf("last stdout line is %v, want shutdown complete", last["message"])
	}
}

// TestStartupErrorsHideDatabasePassword: when the database cannot be
// reached or its URL cannot be parsed, serve and migrate say so on stderr
// without the URL's password.
func TestStartupErrorsHideDatabasePassword(t *testing.T) {
	t.Parallel()
	password := "pw" + randHex(t, 12)
	refused := freeAddr(t) // nothing listens there
	for _, tc := range []struct{ name, cmd, dsn string }{
		{"unreachable URL", "serve", "postgres://spool:" + password + "@" + refused + "/spool?sslmode=disable&connect_timeout=3"},
		{"unreachable URL, migrate", "migrate", "postgres://spool:" + password + "@" + refused + "/spool?sslmode=disable&connect_timeout=3"},
		{"bad port", "serve", "postgres://spool:" + password + "@127.0.0.1:notaport/spool"},
		{"bad option", "serve", "postgres://spool:" + password + "@" + refused + "/spool?sslmode=sometimes"},
		{"keyword form", "serve", "host=127.0.0.1 port=" + strings.Split(refused, ":")[1] + " user=spool password=" + password + " dbname=spool connect_timeout=3 sslmode=disable"},
		{"keyword form, bad option", "migrate", "host=127.0.0.1 user=spool password=" + password + " sslmode=sometimes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, []string{
				"SPOOL_DATABASE_URL=" + tc.dsn, "SPOOL_HTTP_ADDR=127.0.0.1:0", "SPOOL_ADMIN_ADDR=",
				"SPOOL_API_KEYS=k" + randHex(t, 8), "SPOOL_LOG_LEVEL=debug",
			}, tc.cmd)
			err := p.wait(t, 30*time.Second)
			if err == nil {
				t.Fatalf("%s succeeded against %s", tc.cmd, tc.name)
			}
			out := p.stdout.String() + p.stderr.String()
			if !strings.Contains(p.stderr.String(), "spool:") {
				t.Errorf("no error reported on stderr: %q", p.stderr.String())
			}
			assertNoSecrets(t, tc.cmd, out, []secret{{"database password", password}})
		})
	}
}

// TestBadSigningKeyNotEchoed: a malformed signing key is refused at start
// without being printed.
func TestBadSigningKeyNotEchoed(t *testing.T) {
	t.Parallel()
	body := "Zm9v!" + randHex(t, 16) // not base64
	p := start(t, []string{
		"SPOOL_DATA_DIR=" + t.TempDir(), "SPOOL_HTTP_ADDR=127.0.0.1:0", "SPOOL_ADMIN_ADDR=",
		"SPOOL_API_KEYS=k" + randHex(t, 8), "SPOOL_SIGNING_KEYS=whsec_" + body,
	}, "serve")
	if err := p.wait(t, 30*time.Second); err == nil {
		t.Fatal("serve accepted a malformed signing key")
	}
	if !strings.Contains(p.stderr.String(), "SPOOL_SIGNING_KEYS") {
		t.Errorf("the error does not name the variable: %q", p.stderr.String())
	}
	assertNoSecrets(t, "serve", p.stdout.String()+p.stderr.String(), []secret{{"signing key", body}, {"signing key tail", body[5:]}})
}
