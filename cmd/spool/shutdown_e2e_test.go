package main

// End-to-end tests of the shutdown sequence: leasing stops at the first
// SIGTERM, and a second signal exits at once after releasing what is held.

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/testpg"
)

// hangingReceiver answers nothing until the request is cancelled; it
// records the webhook-id of every request.
func hangingReceiver(t *testing.T) *receiver {
	rc := startReceiver(t)
	rc.set(func(rc *receiver) {
		rc.answer = func(w http.ResponseWriter, r *http.Request) bool {
			rc.mu.Lock()
			rc.ok[r.Header.Get("webhook-id")] = false
			rc.mu.Unlock()
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return false
		}
	})
	return rc
}

func (rc *receiver) saw(id string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	_, ok := rc.ok[id]
	return ok
}

// Leasing stops at the first SIGTERM: a task enqueued during the drain
// delay (the API still serves) is not leased, so it is not sent and then
// released at the shutdown timeout; it waits, unattempted, for the next
// process. Tasks in flight before the signal are released at the timeout.
func TestNothingLeasedDuringTheDrain(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			key := newKey(t)
			rc := hangingReceiver(t)
			o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_DRAIN_DELAY=2s", "SPOOL_SHUTDOWN_TIMEOUT=1s", "SPOOL_MIGRATE=true"}}
			if driver == "postgres" {
				o.dsn = testpg.Shared(t).CreateDB(t)
			}
			in := startServe(t, "serve", o, key)
			before := enqueueBatch(t, []string{in.api}, "q", rc.url, 5, 5)
			rc.waitRequests(t, 5, 10*time.Second)
			in.signal(syscall.SIGTERM)
			time.Sleep(300 * time.Millisecond) // inside the 2 s drain
			during := enqueueBatch(t, []string{in.api}, "q", rc.url, 5, 5)
			if err := in.wait(15 * time.Second); err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
			st := openTestStore(t, o)
			for _, id := range during {
				tk, err := st.GetTask(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if rc.saw(id) || tk.State != task.Available || tk.Attempt != 0 {
					t.Errorf("task %s enqueued during the drain: sent %v, state %s, attempt %d; want never leased", id, rc.saw(id), tk.State, tk.Attempt)
				}
			}
			for _, id := range before {
				tk, err := st.GetTask(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if tk.State != task.Available || tk.Attempt != 0 {
					t.Errorf("task %s in flight at SIGTERM: state %s, attempt %d; want released", id, tk.State, tk.Attempt)
				}
			}
		})
	}
}

// A second SIGTERM during the shutdown exits at once: in-flight deliveries
// are released (attempts not counted), not waited for through a 30 s drain
// and a 30 s timeout.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	rc := hangingReceiver(t)
	o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_DRAIN_DELAY=30s", "SPOOL_SHUTDOWN_TIMEOUT=30s"}}
	in := startServe(t, "serve", o, key)
	ids := enqueueBatch(t, []string{in.api}, "q", rc.url, 5, 5)
	rc.waitRequests(t, 5, 10*time.Second)
	in.signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	in.signal(syscall.SIGTERM)
	if err := in.wait(10 * time.Second); err != nil {
		t.Fatalf("exit after the second SIGTERM: %v", err)
	}
	t.Logf("exited %s after the second SIGTERM", time.Since(start).Round(time.Millisecond))
	st := openTestStore(t, o)
	for _, id := range ids {
		tk, err := st.GetTask(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.State != task.Available || tk.Attempt != 0 {
			t.Errorf("task %s after a hurried exit: state %s, attempt %d; want released", id, tk.State, tk.Attempt)
		}
	}
}
