package dispatch

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
)

func TestReserveSlots(t *testing.T) {
	for workers, want := range map[int]int{1: 0, 2: 1, 5: 1, 10: 1, 19: 1, 20: 2, 100: 10, 1000: 100} {
		if got := reserveSlots(workers); got != want {
			t.Errorf("reserveSlots(%d) = %d, want %d", workers, got, want)
		}
	}
}

// TestBusyQueueLeavesASlot: a queue whose tasks hang holds at most
// Workers slots, never the reserve's; a task due in another queue is
// delivered while every one of them still hangs (without the reserve it
// would wait for one of them to end, which here is never before the test
// ends).
func TestBusyQueueLeavesASlot(t *testing.T) {
	h := newHarness(t)
	var (
		mu      sync.Mutex
		held    = map[string]int{} // requests in progress, by queue
		release = make(chan struct{})
		other   = make(chan struct{}, 1)
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.Header.Get("Spool-Queue")
		if q == "other" {
			other <- struct{}{}
			return
		}
		mu.Lock()
		held[q]++
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	// The other queue's task goes to another destination: tasks for one
	// destination share its limit and breaker (hanging requests time out,
	// and timeouts open the breaker), whatever their queues.
	otherSrv := httptest.NewServer(srv.Config.Handler)
	defer otherSrv.Close()

	const workers = 5 // and a reserve of 1
	d := h.dispatcher(func(c *Config) { c.Workers = workers })
	defer stop(d)
	defer close(release) // first, so that stop finds the deliveries ending
	busyIDs := make([]string, 3*workers)
	for i := range busyIDs {
		busyIDs[i] = h.enqueue(srv.URL, func(nt *store.NewTask) { nt.Queue = "busy"; nt.Timeout = time.Minute })
	}
	heldBusy := func() int {
		mu.Lock()
		defer mu.Unlock()
		return held["busy"]
	}
	deadline := time.Now().Add(10 * time.Second)
	for heldBusy() < workers {
		if time.Now().After(deadline) {
			t.Fatalf("%d busy requests held after 10s, want %d", heldBusy(), workers)
		}
		time.Sleep(10 * time.Millisecond)
	}

	h.enqueue(otherSrv.URL, func(nt *store.NewTask) { nt.Queue = "other" })
	select {
	case <-other:
	case <-time.After(10 * time.Second):
		t.Fatalf("the other queue's task was not delivered while %d busy tasks hang", heldBusy())
	}
	if n := heldBusy(); n != workers {
		t.Errorf("%d busy requests held; the busy queue may hold the %d workers, not the reserve", n, workers)
	}
}
