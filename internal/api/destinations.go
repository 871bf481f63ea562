package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// The operator's surface for destinations: read the shared adaptive limit,
// circuit breaker and recent figures of each destination, and set the
// ceilings (max_concurrency, rate_limit) that the adaptive limit stays under.

// destinationLive is the window of replica reports summed into a
// destination's figures: three of the dispatcher's default 1 s syncs, the
// same window the dispatcher counts replicas over, so a replica that
// missed one sync is not reported gone. (api must not import dispatch.)
const destinationLive = 3 * time.Second

// Limit states of a destination's adaptive concurrency limit.
const (
	// limitSlowStart: never congested yet, so the limit still grows each
	// round trip instead of probing slowly upwards.
	limitSlowStart = "slow_start"
	// limitLearned: the limit has been cut by congestion at least once and
	// now tracks what the destination takes.
	limitLearned = "learned"
)

// destinationJSON is the wire shape of a destination.
type destinationJSON struct {
	Destination         string       `json:"destination"`
	Limit               float64      `json:"limit"`
	LimitState          string       `json:"limit_state"`
	MaxConcurrency      int          `json:"max_concurrency"`
	RateLimit           float64      `json:"rate_limit"`
	InFlight            int          `json:"in_flight"`
	Replicas            int          `json:"replicas"`
	Breaker             task.Breaker `json:"breaker"`
	ConsecutiveFailures int          `json:"consecutive_failures"`
	OpenUntil           *string      `json:"open_until"`
	Cooldown            string       `json:"cooldown"`
	HoldUntil           *string      `json:"hold_until"`
	SuccessRate         float64      `json:"success_rate"`
	Latency             string       `json:"latency"`
	RecentSuccesses     int64        `json:"recent_successes"`
	RecentFailures      int64        `json:"recent_failures"`
	CreatedAt           string       `json:"created_at"`
	UpdatedAt           string       `json:"updated_at"`
}

type destinationListJSON struct {
	Destinations []destinationJSON `json:"destinations"`
}

// toDestinationJSON renders d as seen at now: a Retry-After hold that has
// passed is no longer reported, since nothing waits for it any more.
func toDestinationJSON(d task.Destination, now time.Time) destinationJSON {
	j := destinationJSON{
		Destination:         d.Name,
		Limit:               d.Limit,
		LimitState:          limitLearned,
		MaxConcurrency:      d.MaxConcurrency,
		RateLimit:           d.RateLimit,
		InFlight:            d.Stats.InFlight,
		Replicas:            d.Stats.Replicas,
		Breaker:             d.Breaker,
		ConsecutiveFailures: d.Failures,
		Cooldown:            fmtDuration(d.Cooldown),
		SuccessRate:         d.Stats.SuccessRate(),
		// A mean of nanosecond latencies prints as "12.345678912ms";
		// microseconds are all an operator can use.
		Latency:         fmtDuration(d.Stats.Latency.Round(time.Microsecond)),
		RecentSuccesses: d.Stats.Successes,
		RecentFailures:  d.Stats.Failures,
		CreatedAt:       fmtTime(d.CreatedAt),
		UpdatedAt:       fmtTime(d.UpdatedAt),
	}
	if d.LimitDecreasedAt.IsZero() {
		j.LimitState = limitSlowStart
	}
	if j.Breaker == "" {
		j.Breaker = task.BreakerClosed
	}
	if d.Breaker == task.BreakerOpen && !d.OpenUntil.IsZero() {
		s := fmtTime(d.OpenUntil)
		j.OpenUntil = &s
	}
	if d.HoldUntil.After(now) {
		s := fmtTime(d.HoldUntil)
		j.HoldUntil = &s
	}
	return j
}

// destinationName reads {destination}: a destination or any http(s) URL on
// it, escaped as one path segment, normalized as the dispatcher names
// destinations (task.ParseDestination), so "https%3A%2F%2Fapi.example.com"
// and "https%3A%2F%2Fapi.example.com%3A443%2Fhook" name the same one.
// Anything else is a 400 naming the parameter: it is not a name that could
// exist, and a PATCH must not create a row for it.
func destinationName(r *http.Request) (string, error) {
	raw := r.PathValue("destination")
	bad := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		return &apiError{status: http.StatusBadRequest, detail: "destination: " + msg,
			fields: []fieldError{{Field: "destination", Detail: msg}}}
	}
	if len(raw) > maxURLBytes {
		return "", bad("must be at most %d bytes", maxURLBytes)
	}
	name, err := task.ParseDestination(raw)
	if err != nil {
		return "", bad("must be a destination such as \"https://api.example.com:443\" (or a URL on it), escaped as one path segment; got %s", quoteInput(raw))
	}
	// url.Parse accepts any digits as a port; enqueue refuses a target
	// outside 1..65535, so no destination has one.
	u, err := url.Parse(name)
	if err != nil {
		return "", fmt.Errorf("destination %q: normalized name does not parse: %w", name, err)
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return "", bad("has an invalid port %s", quoteInput(u.Port()))
	}
	return name, nil
}

func (s *server) listDestinations(r *http.Request) (destinationListJSON, error) {
	ds, err := s.cfg.Store.ListDestinations(r.Context(), destinationLive)
	if err != nil {
		return destinationListJSON{}, fmt.Errorf("list destinations: %w", err)
	}
	now := s.cfg.Now()
	out := destinationListJSON{Destinations: make([]destinationJSON, len(ds))}
	for i, d := range ds {
		out.Destinations[i] = toDestinationJSON(d, now)
	}
	return out, nil
}

func (s *server) getDestination(r *http.Request) (destinationJSON, error) {
	name, err := destinationName(r)
	if err != nil {
		return destinationJSON{}, err
	}
	d, err := s.cfg.Store.GetDestination(r.Context(), name, destinationLive)
	if errors.Is(err, store.ErrNotFound) {
		return destinationJSON{}, notFound("no destination %q: it has had no deliveries lately and no ceilings set", name)
	}
	if err != nil {
		return destinationJSON{}, fmt.Errorf("get destination %s: %w", name, err)
	}
	return toDestinationJSON(d, s.cfg.Now()), nil
}

// patchDestination sets the operator's ceilings; like a queue PATCH it
// creates a missing destination, so limits can be in place before the
// first delivery.
func (s *server) patchDestination(r *http.Request) (destinationJSON, error) {
	name, err := destinationName(r)
	if err != nil {
		return destinationJSON{}, err
	}
	body, err := readJSONBody(r)
	if err != nil {
		return destinationJSON{}, err
	}
	p, err := decodeDestinationPatch(body)
	if err != nil {
		return destinationJSON{}, err
	}
	d, err := s.cfg.Store.UpdateDestination(r.Context(), name, p, destinationLive)
	if err != nil {
		return destinationJSON{}, fmt.Errorf("update destination %s: %w", name, err)
	}
	return toDestinationJSON(d, s.cfg.Now()), nil
}

// decodeDestinationPatch turns a PATCH /v1/destinations/{destination} body
// into a DestinationPatch, with the queue PATCH's rules (null = absent,
// unknown and duplicate fields refused, an empty patch refused).
func decodeDestinationPatch(body []byte) (task.DestinationPatch, error) {
	var p task.DestinationPatch
	ms, c, err := patchMembers(body)
	if err != nil {
		return p, err
	}
	for _, m := range ms {
		switch m.key {
		case "max_concurrency":
			if n, ok := decodeInt(c, m.key, m.val, 0, store.MaxDestinationConcurrency); ok {
				v := int(n)
				p.MaxConcurrency = &v
			}
		case "rate_limit":
			if f, ok := decodeFloat(c, m.key, m.val, 0, store.MaxDestinationRateLimit); ok {
				p.RateLimit = &f
			}
		default:
			c.add(m.key, "unknown field")
		}
	}
	if err := c.err(); err != nil {
		return p, err
	}
	if p.MaxConcurrency == nil && p.RateLimit == nil {
		return p, invalidField("", "the patch changes nothing; give at least one of max_concurrency, rate_limit")
	}
	return p, nil
}
