package chaos

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// haproxy health-check timing. The drain delay must outlast
// checkInterval*checkFall (readiness off → marked down), with room to spare.
const (
	checkInterval = 200 * time.Millisecond
	checkFall     = 1
	drainDelay    = 1 * time.Second
)

// haproxy is a load balancer in front of the replicas' API ports.
type haproxy struct {
	front string // host:port clients use
	stats string // host:port of the stats page
	p     *proc
}

// startHAProxy writes a config for servers and runs haproxy in the
// foreground as a child of the test.
func startHAProxy(t *testing.T, servers []string) *haproxy {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		missing(t, "haproxy (Debian's haproxy package)", err)
	}
	h := &haproxy{front: freeAddr(t, "127.0.0.1"), stats: freeAddr(t, "127.0.0.1")}
	var b strings.Builder
	fmt.Fprintf(&b, `global
	maxconn 2000

defaults
	mode http
	timeout connect 1s
	timeout client 30s
	timeout server 10s
	timeout check 1s
	timeout http-keep-alive 10s
	# A request that reaches a replica as it closes is sent again: to another
	# replica after a refused connection (redispatch), and also when the
	# connection closes without an answer or the answer times out. Enqueues
	# carry idempotency keys, so sending one twice creates one task.
	retries 3
	option redispatch 1
	retry-on conn-failure empty-response response-timeout

frontend api
	bind %s
	default_backend spool

frontend stats
	bind %s
	stats enable
	stats uri /stats

backend spool
	balance roundrobin
	option httpchk GET /readyz
	http-check expect status 200
	default-server inter %dms fastinter %dms downinter %dms fall %d rise 1
`, h.front, h.stats, checkInterval.Milliseconds(), checkInterval.Milliseconds(), checkInterval.Milliseconds(), checkFall)
	for i, s := range servers {
		fmt.Fprintf(&b, "\tserver r%d %s check\n", i, s)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(bin, "-c", "-f", cfg)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, b.String())
	}
	h.p = startCmd(t, "haproxy", &syncBuffer{}, nil, bin, "-db", "-f", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- haproxy output (tail) ---\n%s", tail(h.p.out.String(), 4000))
		}
	})
	return h
}

// serverStats reads haproxy's CSV stats: per server, its status (UP, DOWN…)
// and counters. Keys are svname; values map the CSV header to the field.
func (h *haproxy) serverStats(t *testing.T) map[string]map[string]string {
	t.Helper()
	out, err := h.readStats()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (h *haproxy) readStats() (map[string]map[string]string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + h.stats + "/stats;csv")
	if err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) < 2 {
		return nil, fmt.Errorf("haproxy stats csv: %v (%d rows)", err, len(rows))
	}
	head := rows[0]
	head[0] = strings.TrimPrefix(head[0], "# ")
	out := map[string]map[string]string{}
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, k := range head {
			if i < len(row) {
				m[k] = row[i]
			}
		}
		if m["pxname"] == "spool" {
			out[m["svname"]] = m
		}
	}
	return out, nil
}

// waitStatus waits until server sv is reported with status prefix want.
func (h *haproxy) waitStatus(t *testing.T, sv, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		stats, err := h.readStats() // haproxy may still be starting
		st := stats[sv]["status"]
		if err == nil && strings.HasPrefix(st, want) {
			return
		}
		if h.p.exited() {
			t.Fatalf("haproxy exited: %v\n%s", h.p.err, tail(h.p.out.String(), 3000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy: server %s is %q after %s, want %s (%v)", sv, st, timeout, want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Three replicas behind haproxy; eight clients enqueue without pause while
// each replica in turn gets SIGTERM and starts again on the same ports.
// No request may fail and no accepted task may be lost.
func TestRollingRestartBehindHAProxy(t *testing.T) {
	skipShort(t)
	if _, err := exec.LookPath("haproxy"); err != nil {
		missing(t, "haproxy (Debian's haproxy package)", err)
	}
	began := time.Now()
	pg := startPG(t)
	dsn := pg.CreateDB(t)
	migrate(t, dsn)
	key, raw := newSigningKey(t)
	rcv := startReceiver(t, "127.0.0.1", raw, nil)
	target := rcv.url + "/rolling"

	env := append(baseEnv(dsn, key, "127.0.0.0/8"),
		"SPOOL_DRAIN_DELAY="+drainDelay.String(), "SPOOL_SHUTDOWN_TIMEOUT=10s", "SPOOL_WORKERS=20")
	if drainDelay < 2*checkInterval*checkFall {
		t.Fatalf("drain delay %s is shorter than two health-check periods", drainDelay)
	}
	var reps []*replica
	var apis []string
	for i := 0; i < 3; i++ {
		r := newReplica(t, fmt.Sprintf("replica-%d", i), env)
		r.start()
		reps = append(reps, r)
		apis = append(apis, r.api)
	}
	lb := startHAProxy(t, apis)
	for i := range reps {
		lb.waitStatus(t, fmt.Sprintf("r%d", i), "UP", 10*time.Second)
	}
	base := "http://" + lb.front
	t.Logf("3 replicas behind haproxy ready after %s", time.Since(began).Round(time.Millisecond))

	// The load: 8 clients, one task per request, each with its own key.
	const clients, clientPace = 8, 25 * time.Millisecond // ≤ 320 requests/s
	var (
		mu        sync.Mutex
		accepted  = map[string]string{} // task id -> idempotency key
		requests  int
		replays   int
		failures  int
		failNotes []string
		slowest   time.Duration
	)
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	c := newClient(30 * time.Second)
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Paced so that delivery keeps up on a busy 2-core machine: the
			// point is continuous load through every restart, not throughput.
			tick := time.NewTicker(clientPace)
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				<-tick.C
				k := fmt.Sprintf("rolling-%d-%d", g, i)
				id, r := c.enqueueOne(base, "rolling", target, k)
				mu.Lock()
				requests++
				slowest = max(slowest, r.took)
				switch {
				case id != "":
					if prev, dup := accepted[id]; dup && prev != k {
						failNotes = append(failNotes, fmt.Sprintf("task %s returned for keys %s and %s", id, prev, k))
						failures++
					}
					accepted[id] = k
					if r.status == 200 {
						replays++
					}
				default:
					failures++
					if len(failNotes) < 20 {
						failNotes = append(failNotes, fmt.Sprintf("%s: status %d err %v body %.200s (after %s)",
							time.Now().Format("15:04:05.000"), r.status, r.err, r.body, r.took.Round(time.Millisecond)))
					}
				}
				mu.Unlock()
			}
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return requests
	}

	time.Sleep(time.Second)
	start := time.Now()
	for i, r := range reps {
		before := count()
		sv := fmt.Sprintf("r%d", i)
		t0 := time.Now()
		r.stop(drainDelay + 15*time.Second)
		down := time.Since(t0)
		r.start()
		lb.waitStatus(t, sv, "UP", 10*time.Second)
		t.Logf("%s: SIGTERM → exit in %s, back UP in haproxy after %s; %d requests meanwhile",
			r.name, down.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), count()-before)
		time.Sleep(500 * time.Millisecond)
	}
	restarts := time.Since(start)
	time.Sleep(time.Second)
	stopLoad()
	wg.Wait()

	mu.Lock()
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	mu.Unlock()
	loadEnd := time.Now()
	rcv.waitUnique(t, len(ids), 60*time.Second)
	t.Logf("every accepted task delivered %s after the load stopped", time.Since(loadEnd).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond) // let late duplicates, if any, arrive before counting
	lost := rcv.lost(ids)
	stats := rcv.Stats()
	var retries, redispatches, downs int
	for _, sv := range lb.serverStats(t) {
		n, _ := strconv.Atoi(sv["wretr"])
		retries += n
		n, _ = strconv.Atoi(sv["wredis"])
		redispatches += n
		n, _ = strconv.Atoi(sv["chkdown"])
		downs += n
	}
	t.Logf("rolling restart of 3 replicas in %s under %d clients: %d requests, %d failed, %d accepted tasks (%d idempotent replays), slowest request %s; receiver: %d unique, %d duplicates, %d lost, %d bad signatures; haproxy: %d retries, %d redispatches, %d UP→DOWN transitions",
		restarts.Round(time.Millisecond), clients, requests, failures, len(ids), replays, slowest.Round(time.Millisecond),
		stats.Unique, stats.Duplicates, len(lost), stats.BadSignatures, retries, redispatches, downs)
	if failures > 0 {
		t.Errorf("%d of %d enqueue requests failed during the rolling restart:\n%s", failures, requests, strings.Join(failNotes, "\n"))
	}
	if len(lost) > 0 {
		t.Errorf("%d accepted tasks never delivered, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	if int(stats.Unique) != len(ids) {
		t.Errorf("receiver saw %d distinct tasks, %d were accepted", stats.Unique, len(ids))
	}
	if stats.BadSignatures != 0 {
		t.Errorf("%d deliveries with bad signatures", stats.BadSignatures)
	}
	if downs < len(reps) {
		t.Errorf("haproxy marked servers down %d times for %d restarts: the health checks did not see the drains", downs, len(reps))
	}
	if requests < 100 {
		t.Errorf("only %d requests: the load did not run", requests)
	}
}
