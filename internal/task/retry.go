package task

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Backoff is the retry policy: exponential with jitter, capped.
type Backoff struct {
	Min time.Duration // delay before the 2nd attempt, before jitter
	Max time.Duration // cap
}

// DefaultBackoff starts at 1s and doubles up to 1h, as Cloud Tasks and River do in spirit.
var DefaultBackoff = Backoff{Min: time.Second, Max: time.Hour}

// Delay returns the wait after attempt n (1-based) failed: Min·2^(n-1), capped
// at Max, then jittered into [d/2, d] so retries of a burst spread out.
func (b Backoff) Delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := b.Min
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}

// RetryAfter parses a Retry-After header value (delay-seconds or an
// HTTP-date) relative to now. ok is false when v is empty or malformed.
func RetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(MaxScheduleAhead/time.Second) {
			secs = int64(MaxScheduleAhead / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

// Retryable reports whether an HTTP status should be retried: 429 and 5xx
// are transient; other non-2xx statuses are permanent failures.
func Retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}
