package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestListenSurvivesIdleProbes: the LISTEN loop's idle timeouts and probes
// leave the connection working, so a signal still arrives after several.
func TestListenSurvivesIdleProbes(t *testing.T) {
	t.Parallel()
	s := migrated(t)
	s.probeEvery = 50 * time.Millisecond
	ch, err := s.Wakeups(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // several probe cycles
	select {
	case <-ch:
		t.Fatal("signalled while idle: a probe failed and the loop reconnected")
	default:
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	nt := store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: "q", Target: task.Target{URL: "http://127.0.0.1:9/"}}
	if _, err := s.Enqueue(ctx, []store.NewTask{nt}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no signal after idle probes")
	}
}

// TestRefill checks the token bucket arithmetic.
func TestRefill(t *testing.T) {
	cases := []struct {
		tokens, rate float64
		elapsed      time.Duration
		want         float64
	}{
		{0, 10, 100 * time.Millisecond, 1},
		{0, 10, 5 * time.Second, 10},  // capped at the burst, rate
		{0, 0.5, 10 * time.Second, 1}, // burst at least 1
		{0, 0.5, time.Second, 0.5},
		{3, 10, -time.Second, 3}, // a clock step back adds nothing
		{-1, 2, time.Second, 1},
	}
	for _, c := range cases {
		if got := refill(c.tokens, c.rate, c.elapsed); got != c.want {
			t.Errorf("refill(%v, %v, %v) = %v, want %v", c.tokens, c.rate, c.elapsed, got, c.want)
		}
	}
}
