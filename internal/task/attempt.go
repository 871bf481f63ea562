package task

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Attempt is one delivery attempt of a task as its history keeps it: what
// was sent when, how it ended and what the target answered. Attempts are
// written with the completion that ends them (or by the rescue of an
// expired lease) and go when their task is pruned.
type Attempt struct {
	TaskID  string
	Attempt int // the task's attempt number (a released attempt's number is reused by the next)
	Outcome AttemptOutcome
	// StartedAt is when the request was sent (the dispatcher's clock); for
	// an expired attempt, when its lease was taken. Zero when unknown.
	StartedAt time.Time
	// FinishedAt is when the response ended (the dispatcher's clock); for
	// an expired attempt, when the rescue found the lease expired.
	FinishedAt time.Time
	// Duration is how long the attempt ran (monotonic for the
	// dispatcher's own attempts); 0 when unknown.
	Duration time.Duration
	Status   int // HTTP status, 0 when no response arrived
	// ErrorClass says why the attempt did not succeed ("" when it did);
	// ErrorMessage says it in words.
	ErrorClass   ErrorClass
	ErrorMessage string
	// ResponseExcerpt is the first bytes of the response body (at most the
	// configured SPOOL_ATTEMPT_BODY_BYTES), as text: see Excerpt. nil when
	// none was kept (no body, no response, or excerpts disabled).
	ResponseExcerpt *string
	// ResponseHeaders holds the response headers of KeptHeaders that were
	// present, under their canonical names; nil when none.
	ResponseHeaders map[string]string
	Replica         string // the replica that made the attempt ("" when unknown)
	TraceID         string // the trace id of the delivery span, 32 hex digits ("" when none)
}

// AttemptOutcome is how one attempt ended.
type AttemptOutcome string

// The attempt outcomes.
const (
	AttemptSucceeded AttemptOutcome = "succeeded" // a 2xx answer
	AttemptRetry     AttemptOutcome = "retry"     // failed; the task will be tried again
	AttemptFailed    AttemptOutcome = "failed"    // failed; the task failed (permanent error or attempts spent)
	// AttemptReleased: the request went out but the process shut down
	// before it finished; the attempt is given back and not counted.
	AttemptReleased AttemptOutcome = "released"
	// AttemptExpired: the lease expired with no completion (a crashed or
	// cut-off replica); the rescue recorded it.
	AttemptExpired AttemptOutcome = "expired"
)

// AttemptOutcomes lists every outcome.
var AttemptOutcomes = []AttemptOutcome{AttemptSucceeded, AttemptRetry, AttemptFailed, AttemptReleased, AttemptExpired}

// ErrorClass is a short, fixed name for why an attempt failed.
type ErrorClass string

// The error classes.
const (
	ErrorHTTPStatus   ErrorClass = "http_status"   // the target answered with a status that is not 2xx
	ErrorTimeout      ErrorClass = "timeout"       // no response within the task's timeout
	ErrorConnection   ErrorClass = "connection"    // dialing, TLS or reading the response failed
	ErrorTLS          ErrorClass = "tls"           // the TLS handshake or certificate check failed
	ErrorSSRFRefused  ErrorClass = "ssrf_refused"  // the target's address (or URL) is not allowed
	ErrorShutdown     ErrorClass = "shutdown"      // released at shutdown before the answer came
	ErrorLeaseExpired ErrorClass = "lease_expired" // the lease expired before a completion was stored
)

// KeptHeaders is the fixed allow-list of response headers an attempt keeps:
// enough to tell what the target answered and which of its requests it was,
// never a credential or a cookie.
var KeptHeaders = []string{"Content-Type", "Retry-After", "X-Request-Id", "X-Correlation-Id"}

// MaxAttemptBodyBytes bounds SPOOL_ATTEMPT_BODY_BYTES.
const (
	DefaultAttemptBodyBytes = 2048
	MaxAttemptBodyBytes     = 64 << 10
	// maxHeaderValue bounds one kept header's value.
	maxHeaderValue = 256
)

// Excerpt turns the first bytes of a response body into text that is safe
// to store and show, of at most max bytes: valid UTF-8 is kept as it is
// (a character cut by the limit is dropped); invalid bytes and NUL become
// U+FFFD, so a binary body reads as replacement characters rather than
// failing the write (PostgreSQL text takes neither).
func Excerpt(b []byte, max int) string {
	if len(b) >= max {
		// A character cut by the limit is not an invalid byte: drop it.
		b = b[:max]
		if len(b) > 0 && !utf8.FullRune(b[lastRuneStart(b):]) {
			b = b[:lastRuneStart(b)]
		}
	}
	s := string(b)
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	s = CleanText(s)
	for len(s) > max { // replacement characters are longer than the bytes they replace
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// lastRuneStart is where the last (perhaps incomplete) rune of b starts.
func lastRuneStart(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			return i
		}
	}
	return len(b)
}

// CleanText makes s storable as text in every store: invalid UTF-8 and NUL
// become U+FFFD. It returns s itself when there is nothing to change.
func CleanText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// HeaderValue bounds a kept header's value and makes it storable.
func HeaderValue(v string) string {
	if len(v) > maxHeaderValue {
		v = v[:maxHeaderValue]
	}
	return CleanText(v)
}
