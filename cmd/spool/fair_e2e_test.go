package main

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/testpg"
)

// fairReceiver is a target the test controls: requests of queue "busy"
// hang until Spool gives up on them (the task's timeout) or the test ends;
// a request of any other queue is answered at once and reported on got.
type fairReceiver struct {
	url      string // the busy queue's destination
	otherURL string // the other queues' destination
	got      chan time.Time
	stop     chan struct{}

	mu         sync.Mutex
	busy, peak int // busy requests hanging now, and at most
}

func startFairReceiver(t *testing.T) *fairReceiver {
	t.Helper()
	fr := &fairReceiver{got: make(chan time.Time, 16), stop: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Spool-Queue") != "busy" {
			fr.got <- time.Now()
			return
		}
		fr.mu.Lock()
		fr.busy++
		fr.peak = max(fr.peak, fr.busy)
		fr.mu.Unlock()
		select {
		case <-r.Context().Done(): // the attempt timed out
		case <-fr.stop:
		}
		fr.mu.Lock()
		fr.busy--
		fr.mu.Unlock()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	// The other queues' tasks go to a second listener, another
	// destination: tasks for one destination share its limit and circuit
	// breaker whatever their queue, and the busy queue's requests, held to
	// their timeout, would open that breaker.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln2)
	t.Cleanup(func() { close(fr.stop); srv.Close() })
	fr.url = "http://" + ln.Addr().String() + "/"
	fr.otherURL = "http://" + ln2.Addr().String() + "/"
	return fr
}

func (fr *fairReceiver) hanging() (now, peak int) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return fr.busy, fr.peak
}

// TestBusyQueueDoesNotDelayOthers is issue 12's bound, end to end: with
// every worker of every replica offered slow tasks of queue "busy" (each
// runs to its full timeout of 5s, and there are more than the workers), a
// task due in queue "other" is received within 1 s, on one replica of each
// store and on two replicas sharing one PostgreSQL. The busy queue holds
// at most the 10 workers of each replica, never the reserve slot beside
// them.
func TestBusyQueueDoesNotDelayOthers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		postgres bool
	}{
		{"sqlite", 1, false},
		{"postgres", 1, true},
		{"postgres-2-replicas", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key := newKey(t)
			fr := startFairReceiver(t)
			const workers = 10
			o := serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_WORKERS=10", "SPOOL_MIGRATE=true"}}
			if tc.postgres {
				o.dsn = testpg.Shared(t).CreateDB(t)
			}
			var apis []string
			for i := range tc.replicas {
				apis = append(apis, startServe(t, "serve-"+string(rune('a'+i)), o, key).api)
			}

			// More slow tasks than all the workers together.
			var tasks []map[string]any
			for range 3 * workers * tc.replicas {
				tasks = append(tasks, map[string]any{"target": map[string]any{"url": fr.url}, "timeout": "5s"})
			}
			if code := call(t, "POST", "http://"+apis[0]+"/v1/queues/busy/tasks", map[string]any{"tasks": tasks}, nil); code != 201 {
				t.Fatalf("enqueue busy: %d", code)
			}
			wantBusy := workers * tc.replicas
			deadline := time.Now().Add(10 * time.Second)
			for {
				if n, _ := fr.hanging(); n >= wantBusy {
					break
				}
				if time.Now().After(deadline) {
					n, _ := fr.hanging()
					t.Fatalf("%d busy requests hanging after 10s, want %d", n, wantBusy)
				}
				time.Sleep(10 * time.Millisecond)
			}

			for i, api := range apis {
				start := time.Now()
				one := map[string]any{"target": map[string]any{"url": fr.otherURL}}
				if code := call(t, "POST", "http://"+api+"/v1/queues/other/tasks", one, nil); code != 201 {
					t.Fatalf("enqueue other: %d", code)
				}
				select {
				case at := <-fr.got:
					wait := at.Sub(start)
					now, _ := fr.hanging()
					t.Logf("task %d of queue other received %s after its enqueue began, beside %d hanging busy requests", i+1, wait.Round(time.Millisecond), now)
					if wait > time.Second {
						t.Errorf("task of queue other received %s after its enqueue began; want within 1s", wait)
					}
				case <-time.After(10 * time.Second):
					now, _ := fr.hanging()
					t.Fatalf("task of queue other not received within 10s, beside %d hanging busy requests", now)
				}
			}
			if _, peak := fr.hanging(); peak > wantBusy {
				t.Errorf("queue busy held %d workers at once; at most %d of %d may be", peak, wantBusy, workers*tc.replicas)
			}
		})
	}
}
