package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/sink"
	"github.com/spoolhq/spool/webhook"
)

// syncBuffer is a bytes.Buffer the sink's logger and the test share.
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

// logLines decodes every JSON log line written so far.
func (s *syncBuffer) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

type runningSink struct {
	url    string
	stdout *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startSink runs Sink on 127.0.0.1:0 and learns the bound address from
// its first log line, as an operator would.
func startSink(t *testing.T, env map[string]string, extra ...string) *runningSink {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rs := &runningSink{stdout: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	args := append([]string{"--addr", "127.0.0.1:0"}, extra...)
	go func() {
		rs.done <- Sink(ctx, args, func(k string) string { return env[k] }, rs.stdout, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-rs.done:
		case <-time.After(15 * time.Second):
			t.Error("sink did not stop")
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-rs.done:
			t.Fatalf("sink exited early: %v", err)
		default:
		}
		if lines := rs.stdout.logLines(t); len(lines) > 0 {
			addr, _ := lines[0]["addr"].(string)
			if addr == "" || strings.HasSuffix(addr, ":0") {
				t.Fatalf("first log line has no bound address: %v", lines[0])
			}
			rs.url = "http://" + addr
			return rs
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("sink logged nothing within 5s")
	return nil
}

func (rs *runningSink) stop(t *testing.T) error {
	t.Helper()
	rs.cancel()
	select {
	case err := <-rs.done:
		rs.done <- err // let the cleanup see it too
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("sink did not stop within 15s")
		return nil
	}
}

func send(t *testing.T, url, id string, key []byte, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	webhook.SetHeaders(req.Header, [][]byte{key}, id, time.Now(), []byte(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func stats(t *testing.T, url string) sink.Stats {
	t.Helper()
	resp, err := http.Get(url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s sink.Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func genKey(t *testing.T) (string, []byte) {
	t.Helper()
	s, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, _ := webhook.ParseKey(s)
	return s, k
}

func TestSinkVerifiesWithEnvKeys(t *testing.T) {
	t.Parallel()
	oldS, oldK := genKey(t)
	newS, newK := genKey(t)
	_, otherK := genKey(t)
	rs := startSink(t, map[string]string{"SPOOL_SIGNING_KEYS": newS + ", " + oldS})

	first := rs.stdout.logLines(t)[0]
	if first["message"] != "sink listening" || first["verify_signatures"] != true || first["keys"] != float64(2) ||
		first["log.level"] != "info" || first["@timestamp"] == nil {
		t.Fatalf("start line %v", first)
	}
	if strings.Contains(rs.stdout.String(), strings.TrimPrefix(newS, "whsec_")) {
		t.Fatal("a key appeared in the log")
	}

	if got := send(t, rs.url+"/hook", "a", newK, "x"); got != 200 {
		t.Fatalf("new key = %d", got)
	}
	if got := send(t, rs.url+"/hook", "b", oldK, "x"); got != 200 {
		t.Fatalf("old key (rotation) = %d", got)
	}
	if got := send(t, rs.url+"/hook", "c", otherK, "x"); got != 401 {
		t.Fatalf("unknown key = %d", got)
	}
	if got := send(t, rs.url+"/hook?fail=1", "d", newK, "x"); got != 500 {
		t.Fatalf("fail=1 first = %d", got)
	}
	if got := send(t, rs.url+"/hook?fail=1", "d", newK, "x"); got != 200 {
		t.Fatalf("fail=1 second = %d", got)
	}
	if got := stats(t, rs.url); got != (sink.Stats{Received: 4, Unique: 3, BadSignatures: 1}) {
		t.Fatalf("stats %+v", got)
	}

	if err := rs.stop(t); err != nil {
		t.Fatalf("graceful stop returned %v", err)
	}
	lines := rs.stdout.logLines(t)
	last := lines[len(lines)-1]
	if last["message"] != "sink stopped" || last["received"] != float64(4) {
		t.Fatalf("stop line %v", last)
	}
}

func TestSinkUnsignedAndKeysFile(t *testing.T) {
	t.Parallel()
	rs := startSink(t, nil)
	if v := rs.stdout.logLines(t)[0]["verify_signatures"]; v != false {
		t.Fatalf("verify_signatures = %v without keys", v)
	}
	if got := send(t, rs.url+"/", "a", nil, "x"); got != 200 {
		t.Fatalf("unsigned = %d", got)
	}

	s, k := genKey(t)
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("# current key\n"+s+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs = startSink(t, map[string]string{"SPOOL_SIGNING_KEYS_FILE": file})
	if got := send(t, rs.url+"/", "a", nil, "x"); got != 401 {
		t.Fatalf("unsigned with keys file = %d", got)
	}
	if got := send(t, rs.url+"/", "a", k, "x"); got != 200 {
		t.Fatalf("signed with keys file = %d", got)
	}
}

func TestSinkStopsDuringDelay(t *testing.T) {
	t.Parallel()
	rs := startSink(t, nil)
	started := make(chan struct{})
	go func() {
		close(started)
		req, _ := http.NewRequest(http.MethodPost, rs.url+"/?delay=5m", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	// Wait until the delivery is being held.
	deadline := time.Now().Add(5 * time.Second)
	for stats(t, rs.url).Received == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	begin := time.Now()
	if err := rs.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if el := time.Since(begin); el > 5*time.Second {
		t.Fatalf("shutdown waited %s for a delayed answer", el)
	}
}

func TestSinkBadConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	err := Sink(ctx, nil, func(k string) string {
		if k == "SPOOL_SIGNING_KEYS" {
			return "whsec_c2VjcmV0LXNob3J0"
		}
		return ""
	}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SPOOL_SIGNING_KEYS: key 1 of 1") || strings.Contains(err.Error(), "c2VjcmV0LXNob3J0") {
		t.Fatalf("short key err = %v", err)
	}
	err = Sink(ctx, nil, func(k string) string {
		if k == "SPOOL_SIGNING_KEYS_FILE" {
			return "/nonexistent/keys"
		}
		return ""
	}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SPOOL_SIGNING_KEYS_FILE") {
		t.Fatalf("missing file err = %v", err)
	}
	err = Sink(ctx, []string{"--addr", "127.0.0.1:-1"}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "sink: listen 127.0.0.1:-1") {
		t.Fatalf("bad addr err = %v", err)
	}
	err = Sink(ctx, []string{"extra"}, nil, io.Discard, io.Discard)
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("extra arg err = %v", err)
	}
}

func TestSinkAddrFromEnv(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Sink(ctx, nil, func(k string) string {
			if k == "SPOOL_SINK_ADDR" {
				return "127.0.0.1:0"
			}
			return ""
		}, out, io.Discard)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), `"addr":"127.0.0.1:`) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"addr":"127.0.0.1:`) {
		t.Fatalf("SPOOL_SINK_ADDR not used: %s", out.String())
	}
}
