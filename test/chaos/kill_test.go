package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/task"
)

// Three replicas deliver to a slow target while one of them is SIGKILLed
// every few seconds and started again. Afterwards every task is delivered
// and succeeded, none stays running, a task's attempt count covers every
// delivery the target saw, and no final state changes afterwards.
func TestKill9WhileDelivering(t *testing.T) {
	skipShort(t)
	const (
		lease    = 2 * time.Second
		workers  = 10
		delay    = 150 * time.Millisecond // each delivery is in flight this long
		n        = 2800
		kills    = 6
		killGap  = 2 * time.Second
		downTime = 300 * time.Millisecond
	)
	pg := startPG(t)
	dsn := pg.CreateDB(t)
	migrate(t, dsn)
	key, raw := newSigningKey(t)
	rcv := startReceiver(t, "127.0.0.1", raw, nil)
	target := fmt.Sprintf("%s/kill9?delay=%s", rcv.url, delay)

	env := append(baseEnv(dsn, key, "127.0.0.0/8"),
		"SPOOL_LEASE_DURATION="+lease.String(), fmt.Sprintf("SPOOL_WORKERS=%d", workers),
		"SPOOL_POLL_INTERVAL=100ms", "SPOOL_DRAIN_DELAY=0s")
	var reps []*replica
	for i := 0; i < 3; i++ {
		r := newReplica(t, fmt.Sprintf("replica-%d", i), env)
		r.start()
		reps = append(reps, r)
	}
	c := newClient(30 * time.Second)
	var ids []string
	for len(ids) < n {
		ids = append(ids, c.enqueueBatch(t, "http://"+reps[len(ids)/200%3].api, "kill9", target, 200)...)
	}
	start := time.Now()

	var busyAtKill []int
	for i := 0; i < kills; i++ {
		time.Sleep(killGap)
		victim := reps[i%len(reps)]
		busy := int(mustMetric(t, victim.admin, "spool_workers_busy"))
		leader := mustMetric(t, victim.admin, "spool_leader") == 1
		victim.kill()
		busyAtKill = append(busyAtKill, busy)
		t.Logf("%s: SIGKILL at %s with %d deliveries in flight (leader: %v); receiver has %d distinct tasks",
			victim.name, time.Since(start).Round(time.Millisecond), busy, leader, rcv.Stats().Unique)
		time.Sleep(downTime)
		victim.start()
	}
	killsWhileBusy := 0
	for _, b := range busyAtKill {
		if b > 0 {
			killsWhileBusy++
		}
	}
	if killsWhileBusy == 0 {
		t.Fatalf("no replica had a delivery in flight when it was killed (%v): the test exercised nothing", busyAtKill)
	}

	// A killed leader holds leadership for its TTL (10s) before another
	// replica rescues; allow for that, several times over.
	rcv.waitUnique(t, n, 120*time.Second)
	snap := waitFinal(t, dsn, ids, 60*time.Second)
	delivered := time.Since(start)

	var rescued, redelivered, maxAttempt int
	for _, id := range ids {
		s := snap[id]
		if s.State != task.Succeeded {
			t.Errorf("task %s ended %s (attempt %d, last error %q)", id, s.State, s.Attempt, s.LastError)
		}
		got := rcv.Attempts(id)
		if s.Attempt < got {
			t.Errorf("task %s: the target saw %d attempts but the store counts %d", id, got, s.Attempt)
		}
		if got > 1 && s.Attempt <= 1 {
			t.Errorf("task %s was delivered %d times but its attempt count is %d", id, got, s.Attempt)
		}
		if s.Attempt > 1 {
			rescued++ // the target never fails: a second attempt means a rescue
		}
		if got > 1 {
			redelivered++
		}
		maxAttempt = max(maxAttempt, s.Attempt)
		if rcv.Seen(id) == 0 {
			t.Errorf("task %s succeeded in the store but the target never answered 2xx for it", id)
		}
	}
	if rescued == 0 {
		t.Errorf("no task needed a second attempt after %d kills with deliveries in flight", killsWhileBusy)
	}

	// A final state is final: with every replica still running, and leases
	// expiring several times over, nothing changes any more.
	time.Sleep(3 * lease)
	again := readTasks(t, dsn, ids)
	changed := 0
	for _, id := range ids {
		if again[id] != snap[id] {
			changed++
			if changed <= 5 {
				t.Errorf("task %s changed after reaching %s: %+v → %+v", id, snap[id].State, snap[id], again[id])
			}
		}
	}
	var rescuedByLive float64
	for _, r := range reps {
		rescuedByLive += mustMetric(t, r.admin, "spool_leases_rescued_total")
	}
	st := rcv.Stats()
	t.Logf("kill -9: %d tasks, %d SIGKILLs (in flight at each: %v), all delivered in %s; store: %v, %d tasks needed more than one attempt (max attempt %d), %d changed afterwards; target: %d requests, %d unique, %d duplicates, %d tasks seen more than once, %d bad signatures; spool_leases_rescued_total on the surviving incarnations: %.0f",
		n, kills, busyAtKill, delivered.Round(time.Millisecond), countStates(snap), rescued, maxAttempt, changed,
		st.Received, st.Unique, st.Duplicates, redelivered, st.BadSignatures, rescuedByLive)
	if int(st.Unique) != n || st.BadSignatures != 0 {
		t.Errorf("target: %+v, want %d unique and no bad signatures", st, n)
	}
}
