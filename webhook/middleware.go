package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Spool's own delivery headers, beside the three of the spec. Spool sets
// them on every attempt; they are not signed, so treat them as hints (the
// signed webhook-id is the identity of a message).
const (
	// HeaderAttempt is the attempt number, 1 on the first delivery.
	HeaderAttempt = "spool-attempt"
	// HeaderQueue is the queue the task was enqueued in.
	HeaderQueue = "spool-queue"
)

// DefaultMaxBodyBytes is the largest body VerifyRequest and Middleware read
// unless told otherwise: Spool's own default limit for a task's payload
// (SPOOL_MAX_BODY_BYTES). A server configured for larger payloads needs
// receivers configured with WithMaxBodyBytes to match.
const DefaultMaxBodyBytes = 1 << 20

// ErrBodyTooLarge is returned (wrapped) when a request body exceeds the
// limit; Middleware answers it with 413.
var ErrBodyTooLarge = errors.New("webhook: body too large")

// Option configures VerifyRequest and Middleware.
type Option func(*options)

type options struct {
	tolerance time.Duration
	maxBody   int64
	now       func() time.Time
	seen      func(ctx context.Context, id string) (bool, error)
	onError   func(w http.ResponseWriter, r *http.Request, err error)
}

func buildOptions(opts []Option) options {
	o := options{tolerance: DefaultTolerance, maxBody: DefaultMaxBodyBytes, now: time.Now, onError: DefaultErrorHandler}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithTolerance sets how far webhook-timestamp may be from the receiver's
// clock, in either direction; d <= 0 keeps DefaultTolerance (5 minutes).
func WithTolerance(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.tolerance = d
		}
	}
}

// WithMaxBodyBytes sets the largest body read; n <= 0 keeps
// DefaultMaxBodyBytes. A larger body is refused with ErrBodyTooLarge.
func WithMaxBodyBytes(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxBody = n
		}
	}
}

// WithClock sets the clock timestamps are checked against (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithSeen sets Middleware's duplicate check. After a request is verified,
// seen is asked whether its webhook-id was already handled; when it answers
// true, Middleware answers 200 without calling the handler, since Spool
// delivers at least once and a 2xx is what stops its redeliveries (any
// other answer would make it deliver the duplicate again). An error from
// seen is answered 500, so Spool retries later.
//
// seen must report only ids whose handling has completed (recorded, say, in
// the same database transaction as the handler's work): an id marked seen
// before the handler succeeds is a message lost if the handler then fails.
func WithSeen(seen func(ctx context.Context, id string) (bool, error)) Option {
	return func(o *options) { o.seen = seen }
}

// WithErrorHandler replaces DefaultErrorHandler, which Middleware calls to
// answer a request it refuses (err wraps ErrMissingHeaders, ErrTimestamp,
// ErrNoMatch, ErrBodyTooLarge, a read error or the duplicate check's error).
func WithErrorHandler(h func(w http.ResponseWriter, r *http.Request, err error)) Option {
	return func(o *options) {
		if h != nil {
			o.onError = h
		}
	}
}

// DefaultErrorHandler answers a refused request: 413 for ErrBodyTooLarge;
// 401 with the reason for a missing, stale or unmatched signature (Spool
// fails the task at once on a 401 rather than retrying a message that can
// never verify); 400 when the body could not be read; 500 otherwise (the
// duplicate check failed: Spool retries later). The body is one line of
// text and never holds a key.
func DefaultErrorHandler(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
	case errors.Is(err, ErrMissingHeaders), errors.Is(err, ErrTimestamp), errors.Is(err, ErrNoMatch):
		http.Error(w, err.Error(), http.StatusUnauthorized)
	case errors.Is(err, errRead):
		http.Error(w, "webhook: reading the body failed", http.StatusBadRequest)
	default:
		http.Error(w, "webhook: duplicate check failed", http.StatusInternalServerError)
	}
}

var errRead = errors.New("webhook: read body")

// VerifyRequest reads r's body (at most the WithMaxBodyBytes limit),
// verifies its signature against keys with Verify, and puts the body back
// in r.Body so a handler can read it again. It returns the body. Options
// other than the tolerance, body limit and clock are ignored.
func VerifyRequest(r *http.Request, keys [][]byte, opts ...Option) ([]byte, error) {
	o := buildOptions(opts)
	return verifyRequest(nil, r, keys, &o)
}

func verifyRequest(w http.ResponseWriter, r *http.Request, keys [][]byte, o *options) ([]byte, error) {
	body, err := readBody(w, r, o.maxBody)
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := Verify(keys, r.Header, body, o.now(), o.tolerance); err != nil {
		return body, err
	}
	return body, nil
}

// readBody reads at most limit bytes; one byte more is ErrBodyTooLarge.
// With a ResponseWriter, http.MaxBytesReader also tells the server to close
// the connection instead of draining an oversized body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return []byte{}, nil
	}
	var src io.Reader = io.LimitReader(r.Body, limit+1)
	if w != nil {
		src = http.MaxBytesReader(w, r.Body, limit)
	}
	body, err := io.ReadAll(src)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errRead, err)
	}
	return body, nil
}

// Middleware returns net/http middleware that lets through only requests
// signed by one of keys (any signature of the webhook-signature header
// matching any key, so a rotation never breaks the receiver) with a
// webhook-timestamp within the tolerance. The handler gets the body back in
// r.Body, and the webhook-id and Spool's attempt number in the request's
// context (IDFromContext, AttemptFromContext). With WithSeen, a duplicate
// is answered 200 without calling the handler.
//
// With no keys every request is refused: an unverified receiver is a
// configuration mistake, not a mode.
func Middleware(keys [][]byte, opts ...Option) func(http.Handler) http.Handler {
	o := buildOptions(opts)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := verifyRequest(w, r, keys, &o); err != nil {
				o.onError(w, r, err)
				return
			}
			id := r.Header.Get(HeaderID)
			if o.seen != nil {
				dup, err := o.seen(r.Context(), id)
				if err != nil {
					o.onError(w, r, fmt.Errorf("webhook: duplicate check for %q: %w", id, err))
					return
				}
				if dup {
					w.Header().Set("Content-Type", "text/plain; charset=utf-8")
					w.WriteHeader(http.StatusOK)
					_, _ = io.WriteString(w, "duplicate: already handled\n") // the sender may have left
					return
				}
			}
			ctx := context.WithValue(r.Context(), ctxKey{}, delivery{id: id, attempt: parseAttempt(r.Header.Get(HeaderAttempt))})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// parseAttempt reads spool-attempt; 0 when absent or not a positive number.
func parseAttempt(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0
	}
	return n
}

type ctxKey struct{}

type delivery struct {
	id      string
	attempt int
}

// IDFromContext returns the verified webhook-id of the request Middleware
// let through: Spool's task id, the same on every attempt, the key to
// deduplicate on. ok is false outside Middleware.
func IDFromContext(ctx context.Context) (id string, ok bool) {
	d, ok := ctx.Value(ctxKey{}).(delivery)
	return d.id, ok
}

// AttemptFromContext returns the spool-attempt number (1 on the first
// delivery) of the request Middleware let through; 0 when the sender did not
// send one (a sender other than Spool). ok is false outside Middleware.
func AttemptFromContext(ctx context.Context) (attempt int, ok bool) {
	d, ok := ctx.Value(ctxKey{}).(delivery)
	return d.attempt, ok
}
