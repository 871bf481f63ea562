package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/benchstat"
)

func TestBenchBadUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tasks", "0"}, "--tasks must be"},
		{[]string{"--tasks", "-5"}, "--tasks must be"},
		{[]string{"--batch", "0"}, "--batch must be"},
		{[]string{"--batch", "1001"}, "--batch must be"},
		{[]string{"--concurrency", "0"}, "--concurrency must be"},
		{[]string{"--rate", "-1"}, "--rate must be"},
		{[]string{"--rate", "NaN"}, "--rate must be"},
		{[]string{"--queue", " "}, "--queue is empty"},
		{[]string{"--wait", "0s"}, "--wait must be"},
		{[]string{"--target", "ftp://example.com/x"}, "--target must be"},
		{[]string{"--target", "/relative"}, "--target must be"},
		{[]string{"--sink-addr", "nonsense"}, "--sink-addr must be"},
		{[]string{"--output", "yaml"}, "--output must be"},
		{[]string{"--server", "ftp://x"}, "--server"},
		{[]string{"--frobnicate"}, "flag provided but not defined"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		_, _, err := h.run(Bench, c.args...)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%v: error %v is not a usage error", c.args, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%v: error %q, want one line containing %q", c.args, msg, c.want)
		}
	}
}

func TestBenchHelp(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out, _, err := h.run(Bench, "--help")
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"Usage: spool bench", "SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "--drain", "--rate", "--batch", "--concurrency", "--target", "SPOOL_SIGNING_KEYS"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

// With --target nothing is delivered to bench, so only enqueue is measured;
// the fake API records what bench sent.
func TestBenchTargetMeasuresEnqueueOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// The fake, unlike the server, does not create a queue on PATCH.
	h.ok(Enqueue, "fake", "http://127.0.0.1:9/hook")
	out := h.ok(Bench, "--tasks", "25", "--batch", "10", "--concurrency", "3", "--queue", "fake",
		"--target", "http://127.0.0.1:9/hook", "--drain", "--output", "json")
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if rep.Delivery != nil {
		t.Errorf("delivery measured with --target: %+v", rep.Delivery)
	}
	e := rep.Enqueue
	if e.Tasks != 25 || e.Requests != 3 || e.Errors != 0 || e.RequestLatency.N != 3 {
		t.Errorf("enqueue = %+v, want 25 tasks in 3 requests (10+10+5), no errors", e)
	}
	if e.Seconds <= 0 || e.PerSecond <= 0 {
		t.Errorf("enqueue timing not measured: %+v", e)
	}
	if rep.Target != "http://127.0.0.1:9/hook" {
		t.Errorf("target = %q", rep.Target)
	}
	// The last request is the resume.
	last := h.srv.Last()
	if last.Method != http.MethodPatch || !strings.Contains(string(last.Body), `"paused":false`) {
		t.Errorf("last request %s %s %s, want the resume", last.Method, last.Path, last.Body)
	}
	// --drain paused the queue while enqueueing and must leave it resumed.
	q := h.ok(Queues, "get", "fake", "--output", "json")
	if !strings.Contains(q, `"paused": false`) {
		t.Errorf("queue left paused after --drain: %s", q)
	}
	list := h.ok(Tasks, "list", "fake", "--output", "json")
	if n := strings.Count(list, `"url": "http://127.0.0.1:9/hook"`); n != 26 {
		t.Errorf("%d tasks target --target, want 26 (25 + the one that created the queue)", n)
	}
}

// --rate releases request j at start + j/rate: 20 tasks at 100/s cannot
// finish in less than 190ms however fast the server is.
func TestBenchRatePaces(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	begin := time.Now()
	out := h.ok(Bench, "--tasks", "20", "--rate", "100", "--concurrency", "4",
		"--target", "http://127.0.0.1:9/hook", "--output", "json")
	if took := time.Since(begin); took < 190*time.Millisecond {
		t.Errorf("20 tasks at 100/s took %s", took)
	}
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Enqueue.Tasks != 20 || rep.Enqueue.Requests != 20 || rep.Rate != 100 {
		t.Errorf("report %+v", rep)
	}
	if rep.Enqueue.PerSecond > 110 {
		t.Errorf("paced at 100/s but measured %.0f/s", rep.Enqueue.PerSecond)
	}
}

// A refused enqueue (4xx) ends the run at once with one line, with a hint
// when the target is what was refused.
func TestBenchStopsOnClientError(t *testing.T) {
	t.Parallel()
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		if r.Method == http.MethodGet {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"title":"Not Found","status":404}`)
			return
		}
		posts.Add(1)
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprint(w, `{"title":"Invalid request","status":422,"errors":[{"field":"target.url","detail":"refused: loopback address"}]}`)
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t)
	h.env["SPOOL_SERVER"] = srv.URL
	begin := time.Now()
	out, _, err := h.run(Bench, "--tasks", "100000", "--concurrency", "4")
	if err == nil || !strings.Contains(err.Error(), "422") || !strings.Contains(err.Error(), "SPOOL_ALLOWED_TARGET_CIDRS") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line with the 422 and the allow-list hint", err)
	}
	if out != "" {
		t.Errorf("printed a report although nothing was enqueued: %q", out)
	}
	if n := posts.Load(); n > 8 {
		t.Errorf("%d enqueue requests sent after the first was refused", n)
	}
	if time.Since(begin) > 5*time.Second {
		t.Errorf("took %s to give up", time.Since(begin))
	}
}

// buildSpool compiles the real binary once for this test.
func buildSpool(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(t.TempDir(), "spool")
	build := exec.Command("go", "build", "-o", bin, "./cmd/spool")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build spool: %v\n%s", err, out)
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

// TestBenchRealServer runs the real binary: `spool serve` on SQLite, then
// `spool bench` against it with its built-in receiver verifying signatures.
func TestBenchRealServer(t *testing.T) {
	t.Parallel()
	bin := buildSpool(t)
	signKey, _ := genKey(t)
	api, admin := freeAddr(t), freeAddr(t)
	const key = "bench-test-key"
	serve := exec.Command(bin, "serve")
	serve.Env = append(os.Environ(),
		"SPOOL_HTTP_ADDR="+api, "SPOOL_ADMIN_ADDR="+admin, "SPOOL_DATA_DIR="+t.TempDir(),
		"SPOOL_DATABASE_URL=", "DATABASE_URL=", "SPOOL_API_KEYS="+key, "SPOOL_SIGNING_KEYS="+signKey,
		"SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "SPOOL_LOG_LEVEL=warn", "SPOOL_DRAIN_DELAY=0s")
	var serveOut syncBuffer
	serve.Stdout, serve.Stderr = &serveOut, &serveOut
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Kill()
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("serve output:\n%s", serveOut.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	bench := func(signingKey string, args ...string) (*benchReport, string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"bench", "--output", "json", "--wait", "10s"}, args...)...)
		cmd.Env = append(os.Environ(), "SPOOL_SERVER=http://"+api, "SPOOL_API_KEY="+key, "SPOOL_SIGNING_KEYS="+signingKey)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if out.Len() == 0 {
			return nil, errb.String(), err
		}
		var rep benchReport
		if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
			t.Fatalf("bench output is not one JSON object: %v\n%s", jerr, out.String())
		}
		return &rep, errb.String(), err
	}

	rep, stderr, err := bench(signKey, "--tasks", "200", "--concurrency", "8")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	e, d := rep.Enqueue, rep.Delivery
	if e.Tasks != 200 || e.Requests != 200 || e.Errors != 0 {
		t.Errorf("enqueue = %+v, want 200 tasks in 200 requests", e)
	}
	if d == nil {
		t.Fatal("no delivery measured with the built-in receiver")
	}
	if d.Tasks != 200 || d.Duplicates != 0 {
		t.Errorf("delivery = %+v, want 200 tasks, no duplicates", d)
	}
	if e.Seconds <= 0 || e.PerSecond <= 0 || d.Seconds <= 0 || d.PerSecond <= 0 {
		t.Errorf("throughput not measured: enqueue %+v delivery %+v", e, d)
	}
	if d.Latency == nil || d.Latency.N != 200 {
		t.Fatalf("latency = %+v, want 200 samples", d.Latency)
	}
	checkOrdered(t, "delivery latency", *d.Latency)
	checkOrdered(t, "request latency", e.RequestLatency)
	if e.RequestLatency.N != 200 {
		t.Errorf("request latency has %d samples, want 200", e.RequestLatency.N)
	}

	// Batched, with the queue paused while enqueueing.
	rep, stderr, err = bench(signKey, "--tasks", "200", "--batch", "50", "--concurrency", "2", "--drain", "--queue", "drained")
	if err != nil {
		t.Fatalf("bench --drain: %v\n%s", err, stderr)
	}
	if rep.Enqueue.Tasks != 200 || rep.Enqueue.Requests != 4 || rep.Delivery == nil || rep.Delivery.Tasks != 200 {
		t.Errorf("drain run: enqueue %+v delivery %+v", rep.Enqueue, rep.Delivery)
	}
	if rep.Delivery != nil && rep.Delivery.Latency != nil {
		t.Errorf("--drain reported a latency: %+v", rep.Delivery.Latency)
	}

	// A receiver with the wrong key refuses every delivery: bench says so
	// in one line and fails instead of waiting.
	otherKey, _ := genKey(t)
	_, stderr, err = bench(otherKey, "--tasks", "5", "--queue", "wrongkey")
	if err == nil || !strings.Contains(stderr, "signature verification") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("wrong key: err %v, stderr %q; want a one-line signature error", err, stderr)
	}
}

func checkOrdered(t *testing.T, what string, l benchstat.Latency) {
	t.Helper()
	if !(l.P50MS > 0 && l.P50MS <= l.P95MS && l.P95MS <= l.P99MS && l.P99MS <= l.MaxMS && l.MeanMS > 0 && l.MeanMS <= l.MaxMS) {
		t.Errorf("%s percentiles not ordered: %+v", what, l)
	}
}
