package task

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// A destination is where deliveries go, as far as protecting a receiver is
// concerned: a target URL's scheme, host and port ("https://api.example.com:443").
// Spool keeps one adaptive concurrency limit and one circuit breaker per
// destination, shared by every queue and replica that sends there.

// DestinationOf returns the destination of a target URL: lower-case scheme
// and host, the scheme's default port filled in, IPv6 hosts in brackets.
func DestinationOf(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("destination: %v", err)
	}
	return destinationOfURL(u)
}

func destinationOfURL(u *url.URL) (string, error) {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if (scheme != "http" && scheme != "https") || host == "" {
		return "", fmt.Errorf("destination: %q is not an http(s) URL with a host", u.Redacted())
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// ParseDestination reads a destination name as an operator writes it: a
// destination ("https://api.example.com:443") or any URL on it (path, query
// and default port optional), normalized by DestinationOf.
func ParseDestination(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("destination: empty")
	}
	return DestinationOf(s)
}

// Breaker is a destination's circuit breaker state.
type Breaker string

const (
	// BreakerClosed: requests flow, within the adaptive limit.
	BreakerClosed Breaker = "closed"
	// BreakerOpen: the destination failed repeatedly; tasks wait, without
	// spending attempts, until OpenUntil, when one probe may go.
	BreakerOpen Breaker = "open"
	// BreakerHalfOpen: a probe is in flight (ProbeOwner sent it); the others wait for its answer.
	BreakerHalfOpen Breaker = "half_open"
)

// Destination is a destination's shared state, as every replica sees it.
type Destination struct {
	Name string
	// MaxConcurrency is the operator's ceiling on requests in flight across
	// all replicas (PATCH); 0 = none. The adaptive limit never exceeds it.
	MaxConcurrency int
	// RateLimit is the operator's ceiling on requests started per second
	// across all replicas (PATCH); 0 = none.
	RateLimit float64
	// Limit is the adaptive concurrency limit shared by all replicas; each
	// replica sends at most its share of it.
	Limit float64
	// LimitChangedAt is when Limit last moved down (decreases are spaced so
	// that one congestion episode seen by many replicas halves it once).
	LimitDecreasedAt time.Time
	Breaker          Breaker
	// Failures counts consecutive failed requests (reported at sync).
	Failures int
	// OpenUntil: while open, no request before this; then one probe.
	OpenUntil time.Time
	// Cooldown is the current open period; it doubles at each failed probe.
	Cooldown time.Duration
	// ProbeOwner is the replica whose probe is in flight (half open) until ProbeUntil.
	ProbeOwner string
	ProbeUntil time.Time
	// HoldUntil: a 429 or 503 with Retry-After asked the whole destination
	// to wait; no request before this.
	HoldUntil time.Time
	CreatedAt time.Time
	UpdatedAt time.Time

	// Figures summed over the replicas that reported in the last few
	// seconds (store.DestinationReport); read-only.
	Stats DestinationStats
}

// DestinationStats are a destination's recent figures, summed over live replicas.
type DestinationStats struct {
	Replicas  int           // replicas that reported recently
	InFlight  int           // requests in flight now
	Successes int64         // requests answered well in the last reporting window
	Failures  int64         // failed or refused requests in that window
	Latency   time.Duration // mean latency of the window's answered requests
}

// SuccessRate is Successes / (Successes + Failures), or 1 with no requests.
func (s DestinationStats) SuccessRate() float64 {
	if n := s.Successes + s.Failures; n > 0 {
		return float64(s.Successes) / float64(n)
	}
	return 1
}

// DestinationPatch sets the operator's ceilings of a destination; nil fields stay.
type DestinationPatch struct {
	MaxConcurrency *int
	RateLimit      *float64
}
