package store

import (
	"cmp"
	"slices"
)

// FairKey is what the fair order (see LeaseRequest) needs of a candidate
// task. Drivers that merge candidates in Go (SQLite always, PostgreSQL
// when limited queues have work) pass them through PickFair, so that both
// order them the same way as PostgreSQL's free lease does in SQL.
type FairKey struct {
	Queue    string
	Weight   int // the queue's weight; < 1 counts as 1
	Priority int
	RunAt    int64 // unix microseconds (what both databases keep)
	ID       string
}

// PickFair returns the indexes into keys of the candidates req leases, in
// the fair order: the shared positions first, then the reserve. keys must
// hold, for each queue, a prefix of its due tasks in (priority, run_at,
// id) order (any order between and inside queues: PickFair ranks them).
// A queue's candidates may be capped (a concurrency or rate limit): any
// subset PickFair returns keeps a prefix of each queue, so caps hold.
func PickFair(keys []FairKey, req LeaseRequest) []int {
	limit := min(req.Limit, len(keys))
	if limit <= 0 {
		return nil
	}
	shared := max(min(req.Shared, limit), 0)

	// Rank each queue's candidates 1, 2, … in (priority, run_at, id) order;
	// inside a queue that is also the order of the fair key.
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	byTask := func(a, b FairKey) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.RunAt, b.RunAt), cmp.Compare(a.ID, b.ID))
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(cmp.Compare(keys[i].Queue, keys[j].Queue), byTask(keys[i], keys[j]))
	})
	fair := make([]float64, len(keys))
	rank := 0
	for k, i := range order {
		if k == 0 || keys[order[k-1]].Queue != keys[i].Queue {
			rank = 0
		}
		rank++
		// Divisions of small integers are exact enough that equal ratios
		// compare equal ((2+1)/3 == (0+1)/1), as in PostgreSQL's float8.
		fair[i] = float64(req.Running[keys[i].Queue]+rank) / float64(max(keys[i].Weight, 1))
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(cmp.Compare(fair[i], fair[j]), byTask(keys[i], keys[j]))
	})

	out := make([]int, 0, limit)
	out = append(out, order[:shared]...)
	if shared == limit {
		return out
	}
	got := make(map[string]bool, shared)
	for _, i := range out {
		got[keys[i].Queue] = true
	}
	for _, i := range order[shared:] {
		if len(out) == limit {
			break
		}
		if q := keys[i].Queue; req.Running[q] == 0 && !got[q] {
			got[q] = true
			out = append(out, i)
		}
	}
	return out
}
