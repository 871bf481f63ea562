package store

import "bytes"

// SameRequest reports whether two fingerprints of requests sharing an
// idempotency key stand for the same request: equal, or either unknown
// (nil).
func SameRequest(a, b []byte) bool {
	return a == nil || b == nil || bytes.Equal(a, b)
}

// FirstOfKeys is the part of Enqueue's idempotency contract that needs no
// database: firstOf[i] is the index of the earlier task of tasks with the
// same queue and idempotency key, or -1. Two such tasks whose fingerprints
// differ are an *IdempotencyError for the later one. Drivers store only
// the tasks with firstOf -1 and answer the others with their first.
func FirstOfKeys(tasks []NewTask) (firstOf []int, err error) {
	type queueKey struct{ queue, key string }
	firstOf = make([]int, len(tasks))
	var seen map[queueKey]int
	for i, nt := range tasks {
		firstOf[i] = -1
		if nt.IdempotencyKey == "" {
			continue
		}
		k := queueKey{nt.Queue, nt.IdempotencyKey}
		j, ok := seen[k]
		if !ok {
			if seen == nil {
				seen = make(map[queueKey]int)
			}
			seen[k] = i
			continue
		}
		if !SameRequest(tasks[j].Fingerprint, nt.Fingerprint) {
			return nil, &IdempotencyError{Err: ErrIdempotencyMismatch, Index: i, Queue: nt.Queue, Key: nt.IdempotencyKey}
		}
		firstOf[i] = j
	}
	return firstOf, nil
}
