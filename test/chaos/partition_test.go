package chaos

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/task"
)

// holder keeps the target's answers to one client address (the partitioned
// replica) until released: the replica's deliveries stay in flight through
// the partition and are answered just after it heals, so its completions
// reach the store late, after the tasks were rescued and delivered by the
// other replicas.
type holder struct {
	from    string
	release chan struct{}

	mu        sync.Mutex
	inflight  map[string]bool // webhook-id, currently held
	held      []string        // every id ever held, in order
	abandoned []string        // the replica gave up waiting (its lease was lost)
	answered  []string        // passed on to the sink after the release
}

func newHolder(from string) *holder {
	return &holder{from: from, release: make(chan struct{}), inflight: map[string]bool{}}
}

func (h *holder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if host != h.from {
			next.ServeHTTP(w, r)
			return
		}
		id := r.Header.Get("webhook-id")
		h.mu.Lock()
		h.inflight[id] = true
		h.held = append(h.held, id)
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			delete(h.inflight, id)
			h.mu.Unlock()
		}()
		select {
		case <-h.release:
		case <-r.Context().Done():
			h.mu.Lock()
			h.abandoned = append(h.abandoned, id)
			h.mu.Unlock()
			return
		}
		h.mu.Lock()
		h.answered = append(h.answered, id)
		h.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (h *holder) holding() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for id := range h.inflight {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// One replica runs in its own network namespace and is cut off from
// PostgreSQL for 10 s while it has deliveries in flight. Its leases expire,
// the other replicas deliver its tasks, and when it comes back its late
// completions are refused: each task keeps the one final state it reached.
func TestNetworkPartition(t *testing.T) {
	skipShort(t)
	const (
		lease     = 3 * time.Second
		workers   = 10
		partition = 10 * time.Second
	)
	lab := newNetLab(t)
	pg := startPG(t)
	listenAlso(t, pg, lab.pgIP, lab.inNS+"/32")
	dsn := pg.CreateDB(t)
	nsDSN := strings.Replace(dsn, "@127.0.0.1:", "@"+lab.pgIP+":", 1)
	if nsDSN == dsn {
		t.Fatalf("cannot point %q at %s", dsn, lab.pgIP)
	}
	migrate(t, dsn)
	key, raw := newSigningKey(t)
	hold := newHolder(lab.inNS)
	rcv := startReceiver(t, lab.host, raw, hold.wrap)
	target := rcv.url + "/partition?delay=20ms"

	env := append(baseEnv(dsn, key, lab.host+"/32"),
		"SPOOL_LEASE_DURATION="+lease.String(), fmt.Sprintf("SPOOL_WORKERS=%d", workers),
		"SPOOL_POLL_INTERVAL=100ms", "SPOOL_DRAIN_DELAY=0s")
	a := newReplica(t, "replica-a", env)
	a.start()
	// a leads maintenance (rescue) before the others start, so the replica
	// that is cut off is not the leader: this test is about its leases.
	waitMetric(t, a.admin, "spool_leader", 1, 15*time.Second)
	b := newReplica(t, "replica-b", env)
	b.start()
	p := &replica{
		t: t, name: "replica-p (namespace)", prefix: lab.exec(), out: &syncBuffer{},
		api: lab.inNS + ":8000", admin: lab.inNS + ":9090",
		env: append(append([]string{}, env...), "SPOOL_DATABASE_URL="+nsDSN, "SPOOL_LOG_LEVEL=info"),
	}
	p.start()
	if v := mustMetric(t, p.admin, "spool_leader"); v != 0 {
		t.Fatalf("the namespaced replica leads maintenance (spool_leader %v)", v)
	}

	// Feed tasks through every replica, as a load balancer would, until
	// the namespaced replica holds a full set of deliveries in flight (the
	// others answer in 20ms). A replica with free workers leases the tasks
	// of the enqueues it takes itself (SPOOL_ENQUEUE_LEASE): fed through a
	// alone, a kept every task and the namespaced replica none.
	c := newClient(30 * time.Second)
	var ids []string
	deadline := time.Now().Add(20 * time.Second)
	apis := []string{a.api, b.api, p.api}
	for i := 0; len(hold.holding()) < workers && time.Now().Before(deadline); i++ {
		ids = append(ids, c.enqueueBatch(t, "http://"+apis[i%len(apis)], "partition", target, 10)...)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	held := hold.holding()
	if len(held) == 0 {
		t.Fatalf("the namespaced replica took no task in 20s (%d enqueued)", len(ids))
	}

	// The partition.
	lab.cut()
	cutAt := time.Now()
	// Enqueues through the cut-off replica itself, sent as the cut begins:
	// one that opens a new connection fails when the dial times out; one
	// handed a pooled connection waits on it. Each must get an answer once
	// the partition heals. The times are reported, not asserted.
	type cutCall struct {
		id string
		r  result
	}
	const cutCalls = 4
	cutResults := make(chan cutCall, cutCalls)
	for k := 0; k < cutCalls; k++ {
		go func() {
			id, r := newClient(partition+20*time.Second).enqueueOne("http://"+p.api, "partition-cut", target, fmt.Sprintf("during-the-cut-%d", k))
			cutResults <- cutCall{id, r}
		}()
	}
	var readyDown, rescuedAt time.Time
	pc := &http.Client{Timeout: 3 * time.Second}
	for time.Since(cutAt) < partition {
		// The others keep taking new work meanwhile.
		ids = append(ids, c.enqueueBatch(t, "http://"+b.api, "partition", target, 10)...)
		if readyDown.IsZero() {
			if resp, err := pc.Get("http://" + p.admin + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 503 {
					readyDown = time.Now()
				}
			}
		}
		if rescuedAt.IsZero() {
			done := true
			for _, s := range readTasks(t, dsn, held) {
				done = done && s.State == task.Succeeded
			}
			if done {
				rescuedAt = time.Now()
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if readyDown.IsZero() {
		t.Errorf("the namespaced replica stayed ready through the partition: the cut did not take")
	}
	if rescuedAt.IsZero() {
		t.Fatalf("the %d tasks held by the cut-off replica were not delivered by the others within the %s partition: %v",
			len(held), partition, countStates(readTasks(t, dsn, held)))
	}
	// Before the heal: every task final, the held ones delivered once, by
	// the others, after a rescue.
	before := readTasks(t, dsn, ids)
	for _, id := range held {
		s := before[id]
		if s.Attempt < 2 || rcv.Seen(id) != 1 {
			t.Errorf("held task %s before the heal: attempt %d, target answered 2xx %d times; want a rescue (attempt ≥ 2) and one success", id, s.Attempt, rcv.Seen(id))
		}
	}
	if n := countStates(before)[task.Succeeded]; n != len(ids) {
		t.Errorf("before the heal %d of %d tasks succeeded: %v", n, len(ids), countStates(before))
	}

	// The heal; the held deliveries are answered just after it.
	lab.heal()
	healAt := time.Now()
	close(hold.release)
	const (
		refusedMsg = "completion refused: lease no longer held"
		lostMsg    = "lease lost; delivery abandoned"
		// The delivery had ended but its completion was not stored yet when
		// the heartbeat found the lease gone: refused before it was sent.
		lostDoneMsg = "lease lost before the completion was stored; the task will be delivered again"
		notStoreMsg = "completions not stored; their tasks will be rescued and delivered again"
	)
	var readyAgain time.Time
	var refused, abandonedLines, notStored int
	var refusedIDs, lostIDs []string
	settle := time.Now().Add(20 * time.Second)
	for {
		if readyAgain.IsZero() {
			if resp, err := pc.Get("http://" + p.admin + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					readyAgain = time.Now()
				}
			}
		}
		logs := p.out.String()
		refused, refusedIDs = countLines(logs, refusedMsg)
		abandonedLines, lostIDs = countLines(logs, lostMsg)
		lostDone, lostDoneIDs := countLines(logs, lostDoneMsg)
		refused += lostDone
		refusedIDs = append(refusedIDs, lostDoneIDs...)
		notStored, _ = countLines(logs, notStoreMsg)
		accounted := map[string]bool{}
		for _, id := range append(append([]string{}, refusedIDs...), lostIDs...) {
			accounted[id] = true
		}
		all := true
		for _, id := range held {
			all = all && accounted[id]
		}
		busy, err := metric(p.admin, "spool_workers_busy")
		if !readyAgain.IsZero() && err == nil && busy == 0 && (all || notStored > 0) {
			break
		}
		if time.Now().After(settle) {
			t.Errorf("the namespaced replica did not settle within 20s of the heal: ready %v, busy %v (%v), held %d, refused %d, abandoned %d, not stored %d",
				!readyAgain.IsZero(), busy, err, len(held), refused, abandonedLines, notStored)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	lostTotal := mustMetric(t, p.admin, "spool_leases_lost_total")

	// After: nothing the late replica said changed a final state.
	after := readTasks(t, dsn, ids)
	changed := 0
	for _, id := range ids {
		if after[id] != before[id] {
			changed++
			if changed <= 5 {
				t.Errorf("task %s changed after the heal: %+v → %+v", id, before[id], after[id])
			}
		}
	}
	if lostTotal < 1 {
		t.Errorf("spool_leases_lost_total on the namespaced replica is %v: its late completions were not refused", lostTotal)
	}

	// The replica works again: tasks enqueued through its own API are delivered.
	more := c.enqueueBatch(t, "http://"+p.api, "partition-after", rcv.url+"/after", 20)
	var cutNotes []string
	for k := 0; k < cutCalls; k++ {
		cc := <-cutResults
		cutNotes = append(cutNotes, fmt.Sprintf("%d after %s", cc.r.status, cc.r.took.Round(time.Millisecond)))
		switch {
		case cc.r.err != nil:
			t.Errorf("an enqueue sent through the replica as it was cut off got no answer within %s: %v", partition+20*time.Second, cc.r.err)
		case cc.id != "":
			more = append(more, cc.id)
		case cc.r.status != 503:
			t.Errorf("an enqueue sent through the replica as it was cut off: status %d, want 201 or 503: %s", cc.r.status, cc.r.body)
		}
	}
	slices.Sort(cutNotes)
	t.Logf("enqueues through the replica as it was cut off (%s partition): %s", partition, strings.Join(cutNotes, ", "))
	all := append(append([]string{}, ids...), more...)
	rcv.waitUnique(t, len(all), 30*time.Second)
	final := waitFinal(t, dsn, all, 30*time.Second)
	if lost := rcv.lost(all); len(lost) > 0 {
		t.Errorf("%d tasks never delivered: %v", len(lost), lost[:min(5, len(lost))])
	}
	if n := countStates(final)[task.Succeeded]; n != len(all) {
		t.Errorf("%d of %d tasks succeeded: %v", n, len(all), countStates(final))
	}

	// Of the deliveries held through the partition: answered after the
	// heal, or given up by the replica (its lease found lost first).
	hold.mu.Lock()
	var answered, abandoned int
	for _, id := range hold.answered {
		if slices.Contains(held, id) {
			answered++
		}
	}
	for _, id := range hold.abandoned {
		if slices.Contains(held, id) {
			abandoned++
		}
	}
	hold.mu.Unlock()
	st := rcv.Stats()
	t.Logf("partition: %d tasks; the namespaced replica held %d deliveries when cut off for %s; /readyz 503 after %s; its tasks rescued and delivered by the others %s after the cut; after the heal: ready again in %s, %d held deliveries answered by the target and %d abandoned by the replica, log lines %q ×%d, %q ×%d, %q ×%d, spool_leases_lost_total %.0f (for %d lost leases); %d final states changed; target: %d unique, %d duplicates, %d bad signatures",
		len(ids), len(held), partition, readyDown.Sub(cutAt).Round(time.Millisecond), rescuedAt.Sub(cutAt).Round(time.Millisecond),
		readyAgain.Sub(healAt).Round(time.Millisecond), answered, abandoned,
		refusedMsg, refused, lostMsg, abandonedLines, notStoreMsg, notStored, lostTotal, len(held), changed,
		st.Unique, st.Duplicates, st.BadSignatures)
	if st.BadSignatures != 0 {
		t.Errorf("%d bad signatures", st.BadSignatures)
	}
}

// waitMetric waits until a replica exports series with value want.
func waitMetric(t *testing.T, admin, series string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := metric(admin, series)
		if err == nil && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s is %v (%v) after %s, want %v", series, admin, v, err, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
