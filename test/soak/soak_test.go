package soak

// The soak: `spool serve` (the real binary) under a steady mixed load,
// delivering to a real `spool sink`, with the shortest retention Spool
// allows so that pruning runs during the test. Sampled every few seconds:
// the serve process's resident memory (/proc/<pid>/status VmRSS), its
// goroutine count (go_goroutines on the admin port) and the number of
// tasks in the queue (GET /v1/queues/{queue}).
//
// Behaviour checked, stated as the test states it:
//   - memory is flat: the median RSS of the last third of the load is less
//     than 25% above the median of the second third (the first third is
//     warm-up: pools, caches and the heap find their size);
//   - goroutines are flat: the last third's median is at most 20% + 10
//     above the second third's;
//   - pruning keeps the table bounded: the queue never holds more than the
//     rate × (retention + prune interval + 30 s) tasks, and a prune that
//     removes tasks is seen (the count drops) once retention has passed;
//   - it keeps up: no enqueue fails, and the backlog (tasks not yet final)
//     stays under 15 seconds' worth;
//   - memory stays bounded under large requests: right after the load,
//     16 concurrent maximum-size batches (10 MiB each) leave the process's
//     peak RSS (VmHWM, over the whole run) under 200 MB, and every task
//     acknowledged with a 201 is stored (issue 14);
//   - it shuts down cleanly on SIGTERM at the end.
//
// SPOOL_SOAK_DURATION sets how long the load runs (default 2m, the CI
// version); SPOOL_SOAK_RATE the tasks per second (default 200). `make soak`
// runs 10 minutes. Skipped in -short.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/testbody"
	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

const (
	apiKey    = "soak-test-key"
	queue     = "soak"
	retention = time.Minute // SPOOL_RETENTION's minimum
	// pruneEvery is the maintainer's prune cadence (dispatch.Maintainer's
	// default; serve does not change it).
	pruneEvery = time.Minute
)

var spoolBin string

func TestMain(m *testing.M) {
	// testpg.Main exits the process, so the binary cannot be removed after
	// the run; binaries of runs over an hour old are swept instead.
	dir := filepath.Join(os.TempDir(), "spool-soak-bin")
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

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs for minutes; skipped in -short")
	}
	d := envDuration(t, "SPOOL_SOAK_DURATION", 2*time.Minute)
	rate := envInt(t, "SPOOL_SOAK_RATE", 200)
	for _, st := range []string{"sqlite", "postgres"} {
		t.Run(st, func(t *testing.T) {
			t.Parallel()
			dsn := ""
			if st == "postgres" {
				dsn = testpg.Shared(t).CreateDB(t)
			}
			runSoak(t, dsn, d, rate)
		})
	}
}

// sample is one observation of the serve process.
type sample struct {
	at         time.Duration // since the load started
	rssKB      int64
	goroutines int
	heapMB     float64
	tasks      int // in the queue, any state
	backlog    int // not yet final
	load       bool
}

func runSoak(t *testing.T, dsn string, d time.Duration, rate int) {
	key, err := webhook.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sinkAddr := freeAddr(t)
	sink := start(t, "sink", []string{"SPOOL_SIGNING_KEYS=" + key}, "sink", "--addr", sinkAddr)
	waitOK(t, "http://"+sinkAddr+"/stats", sink)

	api, admin := freeAddr(t), freeAddr(t)
	serve := start(t, "serve", []string{
		"SPOOL_HTTP_ADDR=" + api, "SPOOL_ADMIN_ADDR=" + admin,
		"SPOOL_API_KEYS=" + apiKey, "SPOOL_SIGNING_KEYS=" + key,
		"SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "SPOOL_DRAIN_DELAY=0s",
		"SPOOL_RETRY_MIN_BACKOFF=200ms", "SPOOL_RETRY_MAX_BACKOFF=1s",
		"SPOOL_RETENTION=" + retention.String(), "SPOOL_LOG_LEVEL=warn",
		"SPOOL_DATABASE_URL=" + dsn, "DATABASE_URL=", "SPOOL_DATA_DIR=" + t.TempDir(), "SPOOL_MIGRATE=true",
	}, "serve")
	waitOK(t, "http://"+api+"/readyz", serve)
	served := time.Now() // the maintainer's first (empty) prune is about now

	c := &client{t: t, base: "http://" + api, http: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute},
	}}
	// Create the queue before sampling reads it.
	c.enqueue([]string{"http://" + sinkAddr + "/hook"})

	var (
		mu      sync.Mutex
		samples []sample
		loading atomic.Bool
	)
	loading.Store(true)
	begin := time.Now()
	every := max(2*time.Second, d/40)
	observe := func() sample {
		s := sample{at: time.Since(begin).Round(time.Second), load: loading.Load()}
		s.rssKB = rssKB(t, serve.cmd.Process.Pid)
		m := scrape(t, "http://"+admin+"/metrics")
		s.goroutines = int(m["go_goroutines"])
		s.heapMB = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
		s.tasks, s.backlog = c.queueCounts()
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
		return s
	}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tk.C:
				observe()
			}
		}
	}()

	// The load: every 50 ms, rate/20 tasks, half in one batch request and
	// half as single requests, from a pool of senders. 80% succeed at once,
	// 15% fail once then succeed (?fail=1), 5% fail permanently (?status=400).
	target := func(i int) string {
		switch i % 20 {
		case 0:
			return fmt.Sprintf("http://%s/hook?status=400", sinkAddr)
		case 1, 2, 3:
			return fmt.Sprintf("http://%s/hook?fail=1", sinkAddr)
		}
		return fmt.Sprintf("http://%s/hook", sinkAddr)
	}
	jobs := make(chan []string, 256)
	var senders sync.WaitGroup
	for range 16 {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for j := range jobs {
				c.enqueue(j)
			}
		}()
	}
	perTick := max(2, rate/20)
	tick := time.NewTicker(50 * time.Millisecond)
	deadline := time.After(d)
	n, behind := 0, 0
load:
	for {
		select {
		case <-deadline:
			break load
		case <-tick.C:
			var batch []string
			for k := range perTick {
				u := target(n)
				n++
				if k < perTick/2 {
					batch = append(batch, u)
					continue
				}
				select {
				case jobs <- []string{u}:
				default:
					behind++
				}
			}
			select {
			case jobs <- batch:
			default:
				behind += len(batch)
			}
		}
	}
	tick.Stop()
	close(jobs)
	senders.Wait()
	loading.Store(false)
	loadTime := time.Since(begin)

	// Memory under large requests (issue 14): after the steady load, while
	// the prune is awaited anyway, a burst of maximum-size batches.
	burst := c.maxBatchBurst(serve.cmd.Process.Pid)

	// Pruning: a prune deletes tasks finished more than the retention ago,
	// and runs every pruneEvery, so one that removes something must have
	// run within retention + pruneEvery of the first finished task. Wait
	// for a drop in the count, up to that and a margin.
	pruneBy := served.Add(retention + pruneEvery + 20*time.Second)
	dropped := false
	for !dropped {
		mu.Lock()
		for i := 1; i < len(samples); i++ {
			if samples[i].tasks < samples[i-1].tasks-100 {
				dropped = true
			}
		}
		mu.Unlock()
		if dropped || time.Now().After(pruneBy) {
			break
		}
		time.Sleep(time.Second)
	}
	close(stopSampling)
	<-sampled
	last := observe()

	// Clean shutdown.
	if err := serve.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.wait(30 * time.Second); err != nil {
		t.Errorf("serve exited with %v after SIGTERM", err)
	}

	// Report.
	accepted, failed := c.accepted.Load(), c.failed.Load()
	t.Logf("load: %s, %d tasks accepted (%.0f/s, asked %d/s), %d enqueue failures, %d tasks dropped by the generator falling behind",
		loadTime.Round(time.Second), accepted, float64(accepted)/loadTime.Seconds(), rate, failed, behind)
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "%6s %9s %10s %8s %8s %8s\n", "t", "RSS MiB", "goroutines", "heap MiB", "tasks", "backlog")
	for _, s := range samples {
		mark := ""
		if !s.load {
			mark = "  (load over)"
		}
		fmt.Fprintf(&tbl, "%6s %9.1f %10d %8.1f %8d %8d%s\n", s.at, float64(s.rssKB)/1024, s.goroutines, s.heapMB, s.tasks, s.backlog, mark)
	}
	t.Logf("samples every %s:\n%s", every, tbl.String())

	// Checks.
	t.Logf("burst of %d concurrent maximum-size batches: peak RSS (VmHWM) %.1f MiB; %d answered 201, %d answered 503; %d tasks acknowledged, %d stored",
		burstSenders, float64(burst.peakKB)/1024, burst.created, burst.refused, burst.acked, burst.stored)
	if burst.peakKB >= peakRSSLimitKB {
		t.Errorf("peak RSS %.1f MiB with %d concurrent maximum-size batches; want under %d kB (200 MB)", float64(burst.peakKB)/1024, burstSenders, peakRSSLimitKB)
	}
	if burst.created == 0 || burst.stored != burst.acked {
		t.Errorf("burst: %d batches accepted; %d tasks acknowledged but %d stored", burst.created, burst.acked, burst.stored)
	}
	if failed > 0 {
		t.Errorf("%d enqueue requests failed", failed)
	}
	var during []sample
	for _, s := range samples {
		if s.load {
			during = append(during, s)
		}
	}
	if len(during) < 9 {
		t.Fatalf("only %d samples during the load; run longer", len(during))
	}
	third := len(during) / 3
	mid, end := during[third:2*third], during[2*third:]
	rssMid, rssEnd := median(mid, func(s sample) float64 { return float64(s.rssKB) }), median(end, func(s sample) float64 { return float64(s.rssKB) })
	grMid, grEnd := median(mid, func(s sample) float64 { return float64(s.goroutines) }), median(end, func(s sample) float64 { return float64(s.goroutines) })
	t.Logf("RSS median %.1f MiB → %.1f MiB (%+.1f%%); goroutines median %.0f → %.0f", rssMid/1024, rssEnd/1024, 100*(rssEnd/rssMid-1), grMid, grEnd)
	if rssEnd > 1.25*rssMid {
		t.Errorf("RSS grew: median %.1f MiB in the second third, %.1f MiB in the last (limit +25%%)", rssMid/1024, rssEnd/1024)
	}
	if grEnd > 1.2*grMid+10 {
		t.Errorf("goroutines grew: median %.0f in the second third, %.0f in the last (limit +20%% + 10)", grMid, grEnd)
	}
	bound := int(float64(rate) * (retention + pruneEvery + 30*time.Second).Seconds())
	for _, s := range samples {
		if s.tasks > bound {
			t.Errorf("at %s the queue held %d tasks, over the bound %d (rate × (retention + prune interval + 30s))", s.at, s.tasks, bound)
			break
		}
	}
	if !dropped {
		t.Errorf("no prune was seen: the task count never dropped within retention + prune interval (%s) of the start", retention+pruneEvery)
	}
	if int64(last.tasks) >= accepted {
		t.Errorf("the queue holds %d tasks of %d accepted: nothing was pruned", last.tasks, accepted)
	}
	if lim := rate * 15; slices.ContainsFunc(end, func(s sample) bool { return s.backlog > lim }) {
		t.Errorf("backlog over %d tasks (15 s of load) in the last third: delivery is not keeping up", lim)
	}
}

func median(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// client is the load generator's API client.
type client struct {
	t        *testing.T
	base     string
	http     *http.Client
	accepted atomic.Int64
	failed   atomic.Int64
	logged   atomic.Int64
}

// enqueue sends one task, or a batch when given several targets.
func (c *client) enqueue(targets []string) {
	task := func(u string) map[string]any {
		return map[string]any{"target": map[string]any{"url": u}, "payload": map[string]any{"soak": true, "at": time.Now().UnixNano()}}
	}
	var body any
	if len(targets) == 1 {
		body = task(targets[0])
	} else {
		var ts []map[string]any
		for _, u := range targets {
			ts = append(ts, task(u))
		}
		body = map[string]any{"tasks": ts}
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", c.base+"/v1/queues/"+queue+"/tasks", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		c.fail(fmt.Sprintf("enqueue: %v", err), len(targets))
		return
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		c.fail(fmt.Sprintf("enqueue: %d %s", resp.StatusCode, out), len(targets))
		return
	}
	c.accepted.Add(int64(len(targets)))
}

func (c *client) fail(msg string, n int) {
	c.failed.Add(int64(n))
	if c.logged.Add(1) <= 5 {
		c.t.Log(msg)
	}
}

// queueCounts returns the queue's tasks in any state, and those not final.
func (c *client) queueCounts() (total, backlog int) {
	req, _ := http.NewRequest("GET", c.base+"/v1/queues/"+queue, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Errorf("queue counts: %v", err)
		return 0, 0
	}
	defer resp.Body.Close()
	var q struct {
		Counts map[string]int `json:"counts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil || resp.StatusCode != 200 {
		c.t.Errorf("queue counts: %d %v", resp.StatusCode, err)
		return 0, 0
	}
	for st, n := range q.Counts {
		total += n
		switch st {
		case "succeeded", "failed", "cancelled":
		default:
			backlog += n
		}
	}
	return total, backlog
}

const (
	// burstSenders post a maximum-size batch each, at once.
	burstSenders = 16
	// peakRSSLimitKB is issue 14's bound on the serve process's peak
	// resident memory under burstSenders maximum-size batches: 200 MB.
	peakRSSLimitKB = 200_000_000 / 1024
	// maxBatchBytes is the default batch body limit (10 × 1 MiB).
	maxBatchBytes = 10 << 20
)

// burstResult is what maxBatchBurst saw.
type burstResult struct {
	created, refused int   // answers 201 and 503
	acked, stored    int64 // tasks acknowledged with 201; tasks in the burst queue
	peakKB           int64 // VmHWM after the burst
}

// maxBatchBurst posts burstSenders maximum-size batches (1,000 tasks just
// under 10 MiB, delayed an hour) at once to queue "soak-burst"; each
// sender retries once after a 503's Retry-After. Then it reads the serve
// process's peak RSS and how many tasks the queue holds.
func (c *client) maxBatchBurst(pid int) burstResult {
	body := testbody.Batch(1000, maxBatchBytes, "http://127.0.0.1:9/burst", false)
	var r burstResult
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range burstSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for try := 0; try < 2; try++ {
				req, _ := http.NewRequest("POST", c.base+"/v1/queues/soak-burst/tasks", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+apiKey)
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.http.Do(req)
				if err != nil {
					c.t.Errorf("burst: %v", err)
					return
				}
				var out struct{ Tasks []json.RawMessage }
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				mu.Lock()
				switch resp.StatusCode {
				case http.StatusCreated:
					r.created++
					r.acked += int64(len(out.Tasks))
				case http.StatusServiceUnavailable:
					r.refused++
				default:
					c.t.Errorf("burst: %d (%v)", resp.StatusCode, err)
				}
				mu.Unlock()
				if resp.StatusCode != http.StatusServiceUnavailable {
					return
				}
				wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
				time.Sleep(time.Duration(max(wait, 1)) * time.Second)
			}
		}()
	}
	wg.Wait()
	r.peakKB = statusKB(c.t, pid, "VmHWM")
	req, _ := http.NewRequest("GET", c.base+"/v1/queues/soak-burst", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if resp, err := c.http.Do(req); err == nil {
		var q struct{ Counts map[string]int64 }
		_ = json.NewDecoder(resp.Body).Decode(&q)
		resp.Body.Close()
		for _, n := range q.Counts {
			r.stored += n
		}
	}
	return r
}

// rssKB reads VmRSS from /proc/<pid>/status.
func rssKB(t *testing.T, pid int) int64 { return statusKB(t, pid, "VmRSS") }

// statusKB reads a field in kB (VmRSS, VmHWM) from /proc/<pid>/status.
func statusKB(t *testing.T, pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Errorf("read RSS: %v", err)
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Errorf("%s %q: %v", field, v, err)
			}
			return n
		}
	}
	t.Errorf("no %s in /proc/%d/status", field, pid)
	return 0
}

// scrape reads the unlabelled samples of a Prometheus text exposition.
func scrape(t *testing.T, url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		t.Errorf("scrape: %v", err)
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
			out[name] = f
		}
	}
	if _, ok := out["go_goroutines"]; !ok {
		t.Errorf("no go_goroutines at %s", url)
	}
	return out
}

// proc is a child process whose output is kept (its last 64 KiB) for
// failure messages.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(spoolBin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{t: t, name: name, cmd: cmd, out: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill() // this process only, by its own pid
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running %s after SIGTERM", p.name, timeout)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = append([]byte(nil), w.b[len(w.b)-w.max:]...)
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

func waitOK(t *testing.T, url string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered: %v\n%s", p.name, url, p.err, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within 30s", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
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

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 30*time.Second {
		t.Fatalf("%s=%q: want a duration of at least 30s", name, v)
	}
	return d
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
