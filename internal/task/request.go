package task

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"time"
)

// DefaultIdempotencyRetention is how long an idempotency key stays reserved
// after its first use when nothing says otherwise (SPOOL_IDEMPOTENCY_RETENTION).
// A key is held at least as long as its task is kept, whatever this is.
const DefaultIdempotencyRetention = 24 * time.Hour

// Request is an enqueue request as its sender gave it: what an idempotency
// key stands for. Two requests with one key are the same request when their
// fingerprints are equal.
type Request struct {
	Target      Target // Method as delivered (the default POST filled in)
	Payload     []byte // the bytes as sent (a JSON payload is not re-encoded)
	ContentType string
	Priority    int
	MaxAttempts int           // 0 = the queue's
	Timeout     time.Duration // 0 = the queue's
	// The schedule as sent, not the run time computed from it, so that a
	// retried request with a delay matches its first sending. Delay 0 and
	// no RunAt mean "now".
	Delay time.Duration
	RunAt time.Time // zero = not given
}

// fingerprintVersion starts every encoding, so that a later change of the
// encoding cannot make an old fingerprint equal to a new one by accident.
const fingerprintVersion = "spool.request.v1"

// Fingerprint is the SHA-256 of r's canonical encoding: each field in a
// fixed order, length-prefixed, headers sorted by name. Header names are
// compared as given; the API canonicalizes them before.
func (r Request) Fingerprint() []byte {
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	num := func(v int64) { // fixed width: no length needed
		binary.BigEndian.PutUint64(n[:], uint64(v))
		h.Write(n[:])
	}
	field([]byte(fingerprintVersion))
	field([]byte(r.Target.URL))
	field([]byte(r.Target.Method))
	names := make([]string, 0, len(r.Target.Headers))
	for k := range r.Target.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	num(int64(len(names)))
	for _, k := range names {
		field([]byte(k))
		field([]byte(r.Target.Headers[k]))
	}
	// nil and empty payloads differ: "no payload" is not "an empty body".
	if r.Payload == nil {
		num(0)
	} else {
		num(1)
		field(r.Payload)
	}
	field([]byte(r.ContentType))
	num(int64(r.Priority))
	num(int64(r.MaxAttempts))
	num(int64(r.Timeout))
	switch {
	case !r.RunAt.IsZero():
		field([]byte("run_at"))
		num(r.RunAt.Unix()) // not UnixNano: a run_at long past overflows it
		num(int64(r.RunAt.Nanosecond()))
	case r.Delay > 0:
		field([]byte("delay"))
		num(int64(r.Delay))
	default:
		field([]byte("now"))
	}
	return h.Sum(nil)
}
