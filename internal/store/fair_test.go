package store

import (
	"slices"
	"testing"
)

// TestPickFair pins the fair order and the reserve on small cases worked
// out by hand (the conformance suite holds both drivers to them too).
func TestPickFair(t *testing.T) {
	k := func(q string, w, prio int, id string) FairKey {
		return FairKey{Queue: q, Weight: w, Priority: prio, RunAt: 1, ID: id}
	}
	// Two backlogs; a's tasks have the better priority, b weighs 2.
	keys := []FairKey{
		k("a", 1, 0, "a1"), k("a", 1, 0, "a2"), k("a", 1, 0, "a3"),
		k("b", 2, 5, "b1"), k("b", 2, 5, "b2"), k("b", 2, 5, "b3"), k("b", 2, 5, "b4"),
		k("c", 1, 9, "c1"), k("c", 1, 9, "c2"),
	}
	ids := func(idx []int) []string {
		out := make([]string, len(idx))
		for i, j := range idx {
			out[i] = keys[j].ID
		}
		return out
	}
	for _, tc := range []struct {
		name string
		req  LeaseRequest
		want []string
	}{
		// Keys: b1 .5, a1 b2 c1 1 (priority breaks the tie), b3 1.5, a2 b4 c2 2, a3 3.
		{"nothing running", LeaseRequest{Limit: 5, Shared: 5}, []string{"b1", "a1", "b2", "c1", "b3"}},
		// a: 3+r, b: (1+r)/2, c: r.
		{"running counts", LeaseRequest{Limit: 4, Shared: 4, Running: map[string]int{"a": 3, "b": 1}},
			[]string{"b1", "c1", "b2", "b3"}}, // b3 and c2 tie at 2: priority
		// Reserve only: one each for the queues with nothing running.
		{"reserve", LeaseRequest{Limit: 4, Shared: 0, Running: map[string]int{"b": 1}}, []string{"a1", "c1"}},
		// One shared (b1), then the reserve skips b, which got it.
		{"shared then reserve", LeaseRequest{Limit: 4, Shared: 1}, []string{"b1", "a1", "c1"}},
		{"shared above limit", LeaseRequest{Limit: 2, Shared: 9}, []string{"b1", "a1"}},
		{"no limit", LeaseRequest{Limit: 0, Shared: 0}, []string{}},
	} {
		if got := ids(PickFair(keys, tc.req)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: picked %v, want %v", tc.name, got, tc.want)
		}
	}
	// Input order does not matter.
	rev := slices.Clone(keys)
	slices.Reverse(rev)
	keys = rev
	if got := ids(PickFair(keys, LeaseRequest{Limit: 5, Shared: 5})); !slices.Equal(got, []string{"b1", "a1", "b2", "c1", "b3"}) {
		t.Errorf("reversed input: picked %v", got)
	}
}
