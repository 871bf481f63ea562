package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/auth"
)

// chain wraps one route's handler in Spool's middleware. The order, from
// the outside in, is fixed here and nowhere else:
//
//	recover → request id → instrument → logging → auth → body limit → handler
//
// recover is outermost so a panic anywhere below still becomes a 500
// problem; the request id comes next so everything below can log it;
// metrics and logs see auth failures and limit refusals too.
func (s *server) chain(route string, need auth.Role, quiet bool, body bodyKind, h http.Handler) http.Handler {
	h = s.limitBody(body, h)
	h = s.deadline(h)
	if need != auth.None {
		h = s.authenticate(route, need, h)
	}
	h = s.logRequests(route, quiet, h)
	if s.cfg.Instrument != nil {
		h = s.cfg.Instrument(route, h)
	}
	h = requestID(h)
	h = s.recoverPanics(route, h)
	return h
}

// recoverPanics turns a panic into a logged 500 problem (when nothing was
// written yet). http.ErrAbortHandler keeps its meaning: abort the response.
func (s *server) recoverPanics(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
				slog.String("http.route", route),
				slog.String("http.request.id", w.Header().Get(requestIDHeader)),
				slog.String("error.message", fmt.Sprint(p)),
				slog.String("error.stack_trace", string(debug.Stack())))
			if sw.status != 0 {
				// Headers are gone; the client sees a truncated response.
				return
			}
			writeProblem(sw, s.internalProblem(w.Header().Get(requestIDHeader)))
		}()
		next.ServeHTTP(sw, r)
	})
}

const requestIDHeader = "X-Request-Id"

type ctxKey int

const requestIDKey ctxKey = 0

// requestID keeps a sane incoming X-Request-Id (so a proxy's id threads
// through) or makes one, echoes it on the response and puts it in the context.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			var b [16]byte
			_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set(requestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

// validRequestID accepts short ids of URL-safe characters: anything else
// could be a log-injection or header-splitting attempt.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '='
		if !ok {
			return false
		}
	}
	return true
}

// requestIDFrom returns the request id the middleware stored in ctx.
func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// logRequests writes one line per request: method, route template, path,
// status, bytes and duration. Never headers: Authorization carries the key.
// Health probes log at Debug so that they do not drown real traffic.
func (s *server) logRequests(route string, quiet bool, next http.Handler) http.Handler {
	level := slog.LevelInfo
	if quiet {
		level = slog.LevelDebug
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		finished := false
		defer func() {
			status := sw.status
			if !finished {
				status = http.StatusInternalServerError // panicking; recover answers
			} else if status == 0 {
				status = http.StatusOK
			}
			lvl := level
			if status >= 500 {
				lvl = slog.LevelWarn
			}
			s.log.LogAttrs(r.Context(), lvl, "http request",
				slog.String("http.request.method", r.Method),
				slog.String("http.route", route),
				slog.String("url.path", truncate(r.URL.Path, 256)),
				slog.Int("http.response.status_code", status),
				slog.Int64("http.response.body.bytes", sw.bytes),
				slog.Int64("event.duration", time.Since(start).Nanoseconds()),
				slog.String("http.request.id", requestIDFrom(r.Context())))
		}()
		next.ServeHTTP(sw, r)
		finished = true
	})
}

// authenticate requires "Authorization: Bearer <key>" matching one of the
// configured keys (auth.Keyring compares in constant time) with a role that
// allows need, and puts the key's role in the request context for handlers
// that need more (?view=full). With no keys configured every request acts
// as admin. A missing or unknown key is a 401, a key without the role a 403.
func (s *server) authenticate(route string, need auth.Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.keys.Len() == 0 {
			next.ServeHTTP(w, r.WithContext(auth.WithRole(r.Context(), auth.Admin)))
			return
		}
		token, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="spool"`)
			writeProblem(w, s.toProblem(r, &apiError{status: http.StatusUnauthorized,
				detail: "missing API key: send the header \"Authorization: Bearer <key>\""}))
			return
		}
		role, ok := s.keys.Lookup(token)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="spool", error="invalid_token"`)
			writeProblem(w, s.toProblem(r, &apiError{status: http.StatusUnauthorized,
				detail: "the API key is not valid"}))
			return
		}
		if !role.Allows(need) {
			writeProblem(w, s.toProblem(r, forbidden(role, need, route)))
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithRole(r.Context(), role)))
	})
}

// bearerToken extracts the credentials of a Bearer Authorization header
// (the scheme is case-insensitive, RFC 9110 §11.1).
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// limitBody caps what a handler can read, so an oversized body is a 413,
// not a memory spike; a route that reads a body also refuses a declared
// Content-Length over the limit before reading anything. Then it takes the
// body's room in the process-wide budget (MaxInflightBodyBytes) and holds
// it until the handler returns: the decoded tasks live as long as that.
func (s *server) limitBody(body bodyKind, next http.Handler) http.Handler {
	n := s.cfg.MaxBodyBytes
	if body == batchBody {
		n *= BatchBodyFactor
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body != noBody && r.ContentLength > n {
			writeProblem(w, s.toProblem(r, tooLarge(n)))
			return
		}
		if body != noBody {
			room := r.ContentLength
			if room < 0 {
				room = n // chunked: as much as it may turn out to be
			}
			if err := s.reserveBody(r, room); err != nil {
				writeProblem(w, s.toProblem(r, err))
				return
			}
			defer s.inflight.Release(room)
		}
		r.Body = http.MaxBytesReader(w, r.Body, n)
		next.ServeHTTP(w, r)
	})
}

// reserveBody waits up to InflightWait for room bytes of the body budget.
// Nothing of the body has been read while it waits (it stays in the
// kernel's socket buffer), so waiting costs no memory. Past the wait the
// answer is 503 with Retry-After, and the request stores nothing.
func (s *server) reserveBody(r *http.Request, room int64) error {
	if room == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.InflightWait)
	defer cancel()
	if s.inflight.Acquire(ctx, room) == nil {
		return nil
	}
	if r.Context().Err() != nil {
		return r.Context().Err() // the client left, or the request's deadline passed
	}
	return &apiError{status: http.StatusServiceUnavailable, retryAfter: 1,
		detail: fmt.Sprintf("the server is busy decoding other large requests (%d bytes of request bodies at once at most); retry after the Retry-After delay", s.cfg.MaxInflightBodyBytes)}
}

// serveUnmatched lets the mux answer (404, 405 with Allow, or a path
// cleaning redirect) but replaces its plain-text error bodies with problems.
func (s *server) serveUnmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	h.ServeHTTP(&problemInterceptor{ResponseWriter: w, r: r, s: s}, r)
}

// problemInterceptor rewrites 404 and 405 responses as problem+json and
// discards the body the mux writes for them.
type problemInterceptor struct {
	http.ResponseWriter
	r         *http.Request
	s         *server
	swallowed bool
}

func (p *problemInterceptor) WriteHeader(code int) {
	if code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		p.ResponseWriter.WriteHeader(code)
		return
	}
	p.swallowed = true
	h := p.ResponseWriter.Header()
	h.Del("Content-Type")
	h.Del("X-Content-Type-Options")
	e := &apiError{status: code}
	if code == http.StatusNotFound {
		e.detail = fmt.Sprintf("no route for %s %s", p.r.Method, truncate(p.r.URL.Path, 128))
	} else {
		e.detail = fmt.Sprintf("method %s is not allowed on %s; allowed: %s", p.r.Method, truncate(p.r.URL.Path, 128), h.Get("Allow"))
	}
	writeProblem(p.ResponseWriter, p.s.toProblem(p.r, e))
}

func (p *problemInterceptor) Write(b []byte) (int, error) {
	if p.swallowed {
		return len(b), nil
	}
	return p.ResponseWriter.Write(b)
}

// statusWriter records the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// truncate shortens s to at most n bytes (on a rune boundary) for messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// deadline bounds a request's context: store calls see it, and a deadline
// that expires inside the store comes back as store.ErrUnavailable (503).
func (s *server) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
