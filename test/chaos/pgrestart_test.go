package chaos

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// failFastBound is how long a request may take while the database is down.
// A behaviour check, not a benchmark: it separates "answers 503 at once"
// from "hangs until some TCP or pool timeout".
const failFastBound = 10 * time.Second

type probe struct {
	at     time.Time
	path   string
	status int // 0: transport error
}

type enqueueRecord struct {
	start time.Time
	result
	id string
}

// PostgreSQL is stopped for a few seconds under load and started again.
// /livez stays 200 all along; /readyz turns 503 and back to 200; enqueues
// during the outage are answered 503 quickly, never hang; every task
// accepted before or after is delivered.
func TestPostgresRestartUnderLoad(t *testing.T) {
	skipShort(t)
	const outage = 3 * time.Second
	pg := startPG(t)
	dsn := pg.CreateDB(t)
	migrate(t, dsn)
	key, raw := newSigningKey(t)
	rcv := startReceiver(t, "127.0.0.1", raw, nil)
	target := rcv.url + "/pgrestart"

	env := append(baseEnv(dsn, key, "127.0.0.0/8"), "SPOOL_LEASE_DURATION=10s", "SPOOL_WORKERS=20", "SPOOL_DRAIN_DELAY=0s")
	reps := []*replica{newReplica(t, "replica-0", env), newReplica(t, "replica-1", env)}
	for _, r := range reps {
		r.start()
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var probes []probe
	var records []enqueueRecord

	// Probes: /livez and /readyz on each admin port, every 50ms.
	pc := &http.Client{Timeout: 5 * time.Second}
	for _, r := range reps {
		for _, path := range []string{"/livez", "/readyz"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for ctx.Err() == nil {
					at := time.Now()
					p := probe{at: at, path: r.name + path}
					if resp, err := pc.Get("http://" + r.admin + path); err == nil {
						resp.Body.Close()
						p.status = resp.StatusCode
					}
					mu.Lock()
					probes = append(probes, p)
					mu.Unlock()
					select {
					case <-ctx.Done():
					case <-tick.C:
					}
				}
			}()
		}
	}
	// Load: 4 clients, one task per request, alternating replicas.
	c := newClient(2 * failFastBound) // the client gives up later than the bound it checks
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				base := "http://" + reps[(g+i)%len(reps)].api
				start := time.Now()
				id, r := c.enqueueOne(base, "pgrestart", target, fmt.Sprintf("pg-%d-%d", g, i))
				mu.Lock()
				records = append(records, enqueueRecord{start: start, result: r, id: id})
				mu.Unlock()
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		}()
	}

	time.Sleep(2 * time.Second)
	stopAt := time.Now()
	if err := pg.Stop(); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	stopped := time.Now()
	time.Sleep(outage)
	restartAt := time.Now()
	if err := pg.Restart(); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	restarted := time.Now()
	for _, r := range reps {
		waitReady(t, "http://"+r.admin+"/readyz", r.cur, 30*time.Second)
	}
	readyAgain := time.Now()
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()

	// Health.
	var livezBad []probe
	livez := 0
	readyDown := map[string]time.Time{} // first 503 after the stop
	readyUp := map[string]time.Time{}   // first 200 after the restart
	for _, p := range probes {
		name, path, _ := strings.Cut(p.path, "/")
		switch path {
		case "livez":
			livez++
			if p.status != 200 {
				livezBad = append(livezBad, p)
			}
		case "readyz":
			if p.at.After(stopAt) && p.status == 503 && readyDown[name].IsZero() {
				readyDown[name] = p.at
			}
			if p.at.After(restartAt) && p.status == 200 && readyUp[name].IsZero() {
				readyUp[name] = p.at
			}
			if p.status != 200 && p.status != 503 {
				t.Errorf("%s answered %d (0 = no answer) at %s", p.path, p.status, p.at.Format("15:04:05.000"))
			}
		}
	}
	if len(livezBad) > 0 {
		t.Errorf("/livez failed %d times, first %+v", len(livezBad), livezBad[0])
	}
	for _, r := range reps {
		down, up := readyDown[r.name], readyUp[r.name]
		if down.IsZero() || down.After(restartAt) {
			t.Errorf("%s: /readyz never turned 503 during the outage (first 503 at %v)", r.name, down)
		}
		if up.IsZero() {
			t.Errorf("%s: /readyz never came back to 200", r.name)
		}
		t.Logf("%s: /readyz 503 %s after the stop began, 200 again %s after the restart began",
			r.name, down.Sub(stopAt).Round(time.Millisecond), up.Sub(restartAt).Round(time.Millisecond))
	}

	// Enqueues.
	var accepted []string
	var failed, duringOutage, afterReady, acceptedAfter int
	var failTimes []time.Duration
	var slowest time.Duration
	for _, r := range records {
		slowest = max(slowest, r.took)
		if r.took > failFastBound {
			t.Errorf("an enqueue started at %s took %s (status %d, err %v): it hung", r.start.Format("15:04:05.000"), r.took, r.status, r.err)
		}
		switch {
		case r.id != "":
			accepted = append(accepted, r.id)
			if r.start.After(readyAgain) {
				acceptedAfter++
			}
		case r.err != nil:
			t.Errorf("enqueue at %s: no HTTP answer after %s: %v", r.start.Format("15:04:05.000"), r.took, r.err)
		case r.status != 503:
			t.Errorf("enqueue at %s: status %d, want 503 while the store is down: %s", r.start.Format("15:04:05.000"), r.status, r.body)
		default:
			failed++
			failTimes = append(failTimes, r.took)
			if !strings.HasPrefix(r.ctype, "application/problem+json") {
				t.Errorf("503 with Content-Type %q, want application/problem+json", r.ctype)
			}
			if r.start.After(stopped) && r.start.Add(r.took).Before(restartAt) {
				duringOutage++
			}
			if r.start.After(readyAgain) {
				afterReady++
			}
		}
	}
	if duringOutage == 0 {
		t.Errorf("no enqueue was answered 503 while PostgreSQL was down: the outage was not exercised")
	}
	if acceptedAfter == 0 {
		t.Errorf("no enqueue succeeded after the replicas were ready again")
	}
	slices.Sort(failTimes)
	var p50, worst time.Duration
	if len(failTimes) > 0 {
		p50, worst = failTimes[len(failTimes)/2], failTimes[len(failTimes)-1]
	}

	rcv.waitUnique(t, len(accepted), 60*time.Second)
	snap := waitFinal(t, dsn, accepted, 60*time.Second)
	if lost := rcv.lost(accepted); len(lost) > 0 {
		t.Errorf("%d accepted tasks never delivered, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	st := rcv.Stats()
	t.Logf("PostgreSQL stopped for %s (stop took %s, restart took %s), replicas ready %s after the restart completed; %d enqueues: %d accepted, %d answered 503 (%d entirely inside the outage, %d after the replicas were ready again), 503 latency median %s max %s, slowest request %s; /livez failures %d of %d probes; target: %d unique, %d duplicates; store: %v",
		restartAt.Sub(stopped).Round(time.Millisecond), stopped.Sub(stopAt).Round(time.Millisecond), restarted.Sub(restartAt).Round(time.Millisecond),
		readyAgain.Sub(restarted).Round(time.Millisecond), len(records), len(accepted), failed, duringOutage, afterReady,
		p50.Round(time.Microsecond), worst.Round(time.Microsecond), slowest.Round(time.Millisecond), len(livezBad), livez,
		st.Unique, st.Duplicates, countStates(snap))
}
