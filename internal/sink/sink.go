// Package sink is the webhook receiver behind `spool sink`: it verifies
// Standard Webhooks signatures with the public webhook package's
// middleware (the code Spool's users run), counts deliveries and
// duplicates per webhook-id, and answers with failures and delays chosen in
// the target URL's query, so demos, tests and benchmarks can watch Spool
// deliver.
//
// It knows nothing of Spool's store or dispatcher; it sees only HTTP.
package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/spoolhq/spool/webhook"
)

// Limits.
const (
	// MaxBody bounds how much of a delivery the sink reads, so a huge
	// payload cannot exhaust its memory. Larger bodies get 413.
	MaxBody = 10 << 20
	// MaxDelay bounds ?delay= so a typo cannot hold a connection for hours.
	// The server's write timeout (see cli.Sink) is set above it.
	MaxDelay = 5 * time.Minute
)

// Config configures a Sink.
type Config struct {
	// Keys verify webhook-signature: a delivery passes when any of its
	// signatures (one per sender key) matches any of these. Empty:
	// deliveries are accepted unsigned.
	Keys [][]byte
	// Logger receives one line per bad signature (warn) and per delivery
	// (debug). Nil discards.
	Logger *slog.Logger
	// Tolerance for webhook-timestamp; 0 means webhook.DefaultTolerance.
	Tolerance time.Duration
	// Now is the clock used to check timestamps; nil means time.Now.
	Now func() time.Time
}

// Stats are the counters served at GET /stats.
type Stats struct {
	// Received counts deliveries that passed verification (or all
	// deliveries when no keys are configured), whatever the sink answered.
	Received int64 `json:"received"`
	// Unique counts distinct webhook-ids answered with a 2xx.
	Unique int64 `json:"unique"`
	// Duplicates counts 2xx answers for a webhook-id already answered 2xx:
	// a redelivery after success, which at-least-once delivery allows but a
	// healthy system keeps rare.
	Duplicates int64 `json:"duplicates"`
	// BadSignatures counts deliveries refused with 401.
	BadSignatures int64 `json:"bad_signatures"`
}

// Sink is an http.Handler; build it with New. It is safe for concurrent use.
type Sink struct {
	keys      [][]byte
	log       *slog.Logger
	tolerance time.Duration
	now       func() time.Time

	// verified is deliver behind webhook.Middleware when keys are set.
	verified http.Handler

	mu       sync.Mutex
	stats    Stats
	attempts map[string]int // verified requests per webhook-id
	ok       map[string]int // 2xx answers per webhook-id
}

// New returns a Sink with empty counters.
func New(cfg Config) *Sink {
	s := &Sink{
		keys:      cfg.Keys,
		log:       cfg.Logger,
		tolerance: cfg.Tolerance,
		now:       cfg.Now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.Reset()
	if len(s.keys) > 0 {
		s.verified = webhook.Middleware(s.keys,
			webhook.WithTolerance(s.tolerance),
			webhook.WithMaxBodyBytes(MaxBody),
			webhook.WithClock(s.now),
			webhook.WithErrorHandler(s.refused),
		)(http.HandlerFunc(s.deliver))
	}
	return s
}

// refused counts and logs a delivery the middleware turned away, then
// answers as webhook.DefaultErrorHandler does (401 for a bad signature).
func (s *Sink) refused(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, webhook.ErrMissingHeaders) || errors.Is(err, webhook.ErrTimestamp) || errors.Is(err, webhook.ErrNoMatch) {
		s.mu.Lock()
		s.stats.BadSignatures++
		s.mu.Unlock()
		s.log.Warn("sink: rejected delivery", "webhook_id", r.Header.Get(webhook.HeaderID), "error", err.Error())
	}
	webhook.DefaultErrorHandler(w, r, err)
}

// Verifying reports whether the sink checks signatures.
func (s *Sink) Verifying() bool { return len(s.keys) > 0 }

// Stats returns a snapshot of the counters.
func (s *Sink) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Reset zeroes the counters and forgets every webhook-id.
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{}
	s.attempts = make(map[string]int)
	s.ok = make(map[string]int)
}

// Seen returns how many times the sink answered 2xx for webhook-id id.
func (s *Sink) Seen(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok[id]
}

// Attempts returns how many verified requests arrived for webhook-id id,
// whatever the answer.
func (s *Sink) Attempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[id]
}

// ServeHTTP serves GET /stats, DELETE /stats, and treats every other
// request as a delivery.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/stats" {
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_ = json.NewEncoder(w).Encode(s.Stats()) // a failed write means the client left
			return
		case http.MethodDelete:
			s.Reset()
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	if s.verified != nil {
		s.verified.ServeHTTP(w, r)
		return
	}
	s.deliver(w, r)
}

// injection is the failure behaviour asked for in a delivery's query.
type injection struct {
	fail   int           // answer 500 to the first fail attempts of each id
	status int           // then always answer status (0 = 200)
	delay  time.Duration // wait before answering
}

func parseInjection(r *http.Request) (injection, error) {
	var inj injection
	q := r.URL.Query()
	if v := q.Get("fail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return inj, fmt.Errorf("?fail=%q: want a count >= 0", v)
		}
		inj.fail = n
	}
	if v := q.Get("status"); v != "" {
		c, err := strconv.Atoi(v)
		// 1xx would be an informational answer, not a final one.
		if err != nil || c < 200 || c > 599 {
			return inj, fmt.Errorf("?status=%q: want an HTTP status 200-599", v)
		}
		inj.status = c
	}
	if v := q.Get("delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxDelay {
			return inj, fmt.Errorf("?delay=%q: want a Go duration between 0 and %s", v, MaxDelay)
		}
		inj.delay = d
	}
	return inj, nil
}

func (s *Sink) deliver(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("sink: body larger than %d bytes", MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		s.log.Debug("sink: read body", "error", err.Error())
		http.Error(w, "sink: reading body failed", http.StatusBadRequest)
		return
	}

	// With keys, webhook.Middleware has verified the request already and
	// put the body back.
	id := r.Header.Get(webhook.HeaderID)

	// A malformed query is the sender's configuration mistake; 400 makes
	// the dispatcher fail the task permanently with this text as its error.
	inj, err := parseInjection(r)
	if err != nil {
		http.Error(w, "sink: "+err.Error(), http.StatusBadRequest)
		return
	}

	s.mu.Lock()
	s.stats.Received++
	attempt := 1
	if id != "" {
		s.attempts[id]++
		attempt = s.attempts[id]
	}
	s.mu.Unlock()

	if inj.delay > 0 {
		t := time.NewTimer(inj.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The sender gave up (its timeout) or we are shutting down: no
			// answer is sent, so nothing counts as answered.
			t.Stop()
			s.log.Debug("sink: delivery abandoned during delay", "webhook_id", id, "attempt", attempt)
			return
		}
	}

	status := http.StatusOK
	switch {
	case attempt <= inj.fail:
		status = http.StatusInternalServerError
	case inj.status != 0:
		status = inj.status
	}

	if status >= 200 && status < 300 {
		s.mu.Lock()
		// Without a webhook-id nothing can be deduplicated: each such
		// delivery counts as unique.
		if id == "" || s.ok[id] == 0 {
			s.stats.Unique++
		} else {
			s.stats.Duplicates++
		}
		if id != "" {
			s.ok[id]++
		}
		s.mu.Unlock()
	}
	s.log.Debug("sink: delivery", "webhook_id", id, "attempt", attempt, "status", status, "bytes", len(body))

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "%d %s\n", status, http.StatusText(status)) // the client may have left
}
