package dispatch

import (
	"errors"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func TestJudge(t *testing.T) {
	for _, c := range []struct {
		status int
		err    error
		want   verdict
	}{
		{200, nil, verdict{}},
		{404, nil, verdict{}}, // the request's fault, not the destination's
		{429, nil, verdict{congestion: true, refused: true}},
		{503, nil, verdict{congestion: true, failure: true, refused: true}},
		{500, nil, verdict{failure: true}},
		{0, errTimeout, verdict{congestion: true, failure: true}},
		{0, errors.New("connection refused"), verdict{congestion: true, failure: true}},
	} {
		if got := judge(c.status, c.err); got != c.want {
			t.Errorf("judge(%d, %v) = %+v, want %+v", c.status, c.err, got, c.want)
		}
	}
}

// The shares of a limit add up to the limit, whatever the number of
// replicas: ten replicas never send ten times the limit.
func TestShareAddsUpToTheLimit(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, total := range []float64{1, 2.7, 3, 10, 100} {
		for peers := 1; peers <= 12; peers++ {
			for turn := 0; turn < 3; turn++ {
				at := now.Add(time.Duration(turn) * 10 * time.Second)
				sum := 0
				for rank := range peers {
					sum += share(total, peers, rank, at)
				}
				if sum != int(total) {
					t.Errorf("limit %.1f over %d replicas: shares add up to %d", total, peers, sum)
				}
			}
		}
	}
	// The remainder turns: over a minute every replica of three gets the
	// one slot of a limit of 1 at some point.
	got := map[int]bool{}
	for s := range 6 {
		at := now.Add(time.Duration(s) * 10 * time.Second)
		for rank := range 3 {
			if share(1, 3, rank, at) == 1 {
				got[rank] = true
			}
		}
	}
	if len(got) != 3 {
		t.Errorf("the slot went to replicas %v only", got)
	}
}

// While the remainder of a limit changes hands, the shares in use never
// add up to more than the limit: the replica that gains a slot waits out
// the guard, the one that loses it stops at once.
func TestStableSharesNeverOverlap(t *testing.T) {
	boundary := time.Unix(1_700_000_010, 0) // a turn of the remainder
	for _, total := range []float64{1, 3, 5} {
		for peers := 2; peers <= 4; peers++ {
			for ms := -3000; ms <= 3000; ms += 250 {
				at := boundary.Add(time.Duration(ms) * time.Millisecond)
				// Each replica looks at its own moment: up to 0.9 s apart.
				sum := 0
				for rank := range peers {
					sum += stableShare(total, peers, rank, at.Add(time.Duration(rank)*300*time.Millisecond))
				}
				if sum > int(total) {
					t.Errorf("limit %v over %d replicas at %+dms: stable shares add up to %d", total, peers, ms, sum)
				}
				if ms >= int(rotationGuard/time.Millisecond) && ms < 10000-1000 && sum != int(total) {
					t.Errorf("limit %v over %d replicas %dms after the turn: %d of it in use", total, peers, ms, sum)
				}
			}
		}
	}
}

func TestApplyHalvesOncePerEpisodeAndGrowsSlowly(t *testing.T) {
	p := DestinationPolicy{}.withDefaults()
	now := time.Unix(1_700_000_000, 0)
	d := &task.Destination{}
	if !p.apply(d, store.DestinationReport{Limit: 10, Peers: 1}, now) || d.Limit != p.InitialLimit {
		t.Fatalf("a new destination starts at %v, want %v", d.Limit, p.InitialLimit)
	}
	// Two replicas saw 10 each in slow start; the first reports congestion
	// after cutting its own limit to 5: the shared limit becomes 10.
	d.Limit = 20
	if !p.apply(d, store.DestinationReport{Congested: true, Limit: 5, Peers: 2}, now) || d.Limit != 10 {
		t.Fatalf("after congestion: %v, want 10", d.Limit)
	}
	// The second replica's report of the same episode does not halve again.
	p.apply(d, store.DestinationReport{Congested: true, Limit: 5, Peers: 2}, now.Add(100*time.Millisecond))
	if d.Limit != 10 {
		t.Fatalf("halved twice in one episode: %v", d.Limit)
	}
	// Growth: about +1 a second in all, shared between the two reporters.
	later := now.Add(2 * time.Second)
	p.apply(d, store.DestinationReport{Saturated: true, Successes: 50, Peers: 2, Limit: 5}, later)
	p.apply(d, store.DestinationReport{Saturated: true, Successes: 50, Peers: 2, Limit: 5}, later)
	if d.Limit < 10.9 || d.Limit > 11.1 {
		t.Fatalf("after two saturated reports of two replicas: %v, want about 11", d.Limit)
	}
	// An unsaturated destination does not grow: an idle limit proves nothing.
	if p.apply(d, store.DestinationReport{Successes: 50, Peers: 2}, later.Add(time.Second)) {
		t.Fatalf("grew while not saturated: %v", d.Limit)
	}
	// The operator's ceiling caps it.
	d.MaxConcurrency = 4
	p.apply(d, store.DestinationReport{Peers: 1}, later)
	if d.Limit != 4 {
		t.Fatalf("ceiling 4: limit %v", d.Limit)
	}
	// A Retry-After hold is capped by the longest backoff.
	p.MaxBackoff = time.Minute
	p.apply(d, store.DestinationReport{Hold: 200 * 365 * 24 * time.Hour}, later)
	if want := later.Add(time.Minute); !d.HoldUntil.Equal(want) {
		t.Fatalf("hold until %s, want %s", d.HoldUntil, want)
	}
}

func TestDestinationOf(t *testing.T) {
	for in, want := range map[string]string{
		"https://API.example.com/hook?x=1":  "https://api.example.com:443",
		"http://example.com":                "http://example.com:80",
		"http://127.0.0.1:8081/a":           "http://127.0.0.1:8081",
		"https://[2001:db8::1]/x":           "https://[2001:db8::1]:443",
		"https://user:pw@example.com:8443/": "https://example.com:8443",
	} {
		if got, err := task.DestinationOf(in); err != nil || got != want {
			t.Errorf("DestinationOf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://example.com", "/relative", "http://"} {
		if got, err := task.DestinationOf(bad); err == nil {
			t.Errorf("DestinationOf(%q) = %q, want an error", bad, got)
		}
	}
}
