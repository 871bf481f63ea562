package task

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// RetryStatuses is a queue's retry_statuses setting: which outcomes of an
// attempt are worth another attempt. Every other HTTP status fails the task
// at once. Its text form is a comma-separated list of tokens: a status
// ("429"), an inclusive range ("500-599"), "timeout" (no response within
// the task's timeout) and "connection" (the target could not be reached:
// refused, reset, DNS, TLS).
type RetryStatuses struct {
	ranges     [][2]int // inclusive, sorted, merged
	timeout    bool
	connection bool
}

// DefaultRetryStatuses is the default: 408 Request Timeout, 425 Too Early,
// 429 Too Many Requests and every 5xx (the receiver says later may work),
// plus timeouts and connection errors (transient by nature). Other 4xx say
// the request itself is wrong, so sending it again cannot help.
var DefaultRetryStatuses = MustRetryStatuses("408,425,429,500-599,timeout,connection")

// ParseRetryStatuses parses the text form (tokens separated by commas,
// spaces allowed). An empty string is the empty set: nothing retries.
func ParseRetryStatuses(s string) (RetryStatuses, error) {
	var r RetryStatuses
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		switch tok {
		case "":
			continue
		case "timeout":
			r.timeout = true
			continue
		case "connection":
			r.connection = true
			continue
		}
		lo, hi, isRange := strings.Cut(tok, "-")
		a, err := parseStatus(lo)
		if err != nil {
			return RetryStatuses{}, fmt.Errorf("retry_statuses: %q: %v", tok, err)
		}
		b := a
		if isRange {
			if b, err = parseStatus(hi); err != nil {
				return RetryStatuses{}, fmt.Errorf("retry_statuses: %q: %v", tok, err)
			}
			if b < a {
				return RetryStatuses{}, fmt.Errorf("retry_statuses: %q: range ends before it starts", tok)
			}
		}
		if a < 300 {
			return RetryStatuses{}, fmt.Errorf("retry_statuses: %q: 1xx and 2xx are not failures", tok)
		}
		r.ranges = append(r.ranges, [2]int{a, b})
	}
	r.normalize()
	return r, nil
}

// MustRetryStatuses is ParseRetryStatuses for constants.
func MustRetryStatuses(s string) RetryStatuses {
	r, err := ParseRetryStatuses(s)
	if err != nil {
		panic(err)
	}
	return r
}

func parseStatus(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 100 || n > 599 {
		return 0, fmt.Errorf("not an HTTP status (100-599), timeout or connection")
	}
	return n, nil
}

func (r *RetryStatuses) normalize() {
	slices.SortFunc(r.ranges, func(a, b [2]int) int { return a[0] - b[0] })
	out := r.ranges[:0]
	for _, g := range r.ranges {
		if n := len(out); n > 0 && g[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], g[1])
			continue
		}
		out = append(out, g)
	}
	r.ranges = out
}

// Status reports whether an HTTP status retries.
func (r RetryStatuses) Status(code int) bool {
	for _, g := range r.ranges {
		if code >= g[0] && code <= g[1] {
			return true
		}
	}
	return false
}

// Timeout reports whether a timed-out attempt retries.
func (r RetryStatuses) Timeout() bool { return r.timeout }

// Connection reports whether a connection error retries.
func (r RetryStatuses) Connection() bool { return r.connection }

// String is the canonical text form (what ParseRetryStatuses reads back).
func (r RetryStatuses) String() string { return strings.Join(r.Tokens(), ",") }

// Tokens is the canonical form as a list, the API's JSON shape.
func (r RetryStatuses) Tokens() []string {
	out := make([]string, 0, len(r.ranges)+2)
	for _, g := range r.ranges {
		if g[0] == g[1] {
			out = append(out, strconv.Itoa(g[0]))
		} else {
			out = append(out, strconv.Itoa(g[0])+"-"+strconv.Itoa(g[1]))
		}
	}
	if r.timeout {
		out = append(out, "timeout")
	}
	if r.connection {
		out = append(out, "connection")
	}
	return out
}

// Equal reports whether two sets are the same.
func (r RetryStatuses) Equal(o RetryStatuses) bool {
	return r.String() == o.String()
}
