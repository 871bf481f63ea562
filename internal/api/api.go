// Package api is Spool's HTTP/JSON API: the /v1 handlers, the health
// routes, the middleware around them and the OpenAPI document that the
// tests hold them to. It owns request decoding and validation, the JSON
// shapes clients rely on, and the mapping of errors to RFC 9457 problems.
// It talks to storage only through store.Store and must not import a
// driver, the dispatcher or the telemetry package (wiring is cmd's job).
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/semaphore"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
)

// Defaults for Config fields left zero.
const (
	// DefaultMaxBodyBytes bounds the body of a single enqueue (and of every
	// other request). A batch enqueue may be BatchBodyFactor times larger,
	// but each of its tasks must still fit in MaxBodyBytes.
	DefaultMaxBodyBytes = 1 << 20
	// BatchBodyFactor is how many times MaxBodyBytes a batch body may be.
	BatchBodyFactor = 10
	// DefaultMaxBatch is the most tasks one batch enqueue may hold.
	DefaultMaxBatch = 1000
	// DefaultRequestTimeout bounds one API request, store calls included.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultInflightBatches sizes the default MaxInflightBodyBytes: room
	// for this many maximum-size batch bodies being read and decoded at once.
	DefaultInflightBatches = 2
	// DefaultInflightWait is how long a request waits for room in
	// MaxInflightBodyBytes before it is refused with 503.
	DefaultInflightWait = time.Second
	// DefaultListLimit and MaxListLimit bound ?limit= on task lists.
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// ErrShuttingDown may be returned (wrapped or not) by Config.Ready while the
// process drains; /readyz then names the reason. Any other Ready error is
// logged and answered with a generic "not ready" so that internal details
// (hosts, database names) never reach a response.
var ErrShuttingDown = errors.New("shutting down")

// Config is what the API needs. Only Store is required.
type Config struct {
	// Store holds tasks and queues.
	Store store.Store
	// Logger receives one line per request and the details of internal
	// errors and panics. Default: discard.
	Logger *slog.Logger
	// APIKeys are the accepted bearer keys for /v1 routes with their roles
	// (each route needs one; see routes); empty means no authentication and
	// every request acts as admin (cmd refuses that on non-loopback addresses).
	APIKeys []auth.Key
	// MaxBodyBytes bounds a request body, and each task of a batch.
	// Default DefaultMaxBodyBytes (1 MiB). A batch body may be up to
	// BatchBodyFactor (10) times this.
	MaxBodyBytes int64
	// MaxBatch is the most tasks in one batch enqueue. Default 1000.
	MaxBatch int
	// MaxInflightBodyBytes bounds the request body bytes being read and
	// decoded at once, across all requests, so that concurrent large
	// batches cannot take the process's memory with them. A request holds
	// its declared Content-Length (a body without one, the route's limit)
	// from before its body is read until its answer is written. Default
	// DefaultInflightBatches × MaxBodyBytes × BatchBodyFactor (20 MiB);
	// it must hold at least one maximum-size batch.
	MaxInflightBodyBytes int64
	// InflightWait is how long a request waits for room in
	// MaxInflightBodyBytes before it is answered 503 with Retry-After
	// (nothing of it stored). Default DefaultInflightWait.
	InflightWait time.Duration
	// CheckTarget, when set, is asked about each target URL at enqueue so a
	// literal private or metadata address is refused early (422); the
	// dispatcher's dialer remains the real SSRF guard. nil = no check.
	CheckTarget func(u *url.URL) error
	// Ready reports whether the process can serve (/readyz); nil error means
	// ready. nil Ready means: ready when Store.Ping succeeds.
	Ready func(ctx context.Context) error
	// Instrument, when set, wraps each route's handler; route is the route
	// template ("POST /v1/queues/{queue}/tasks"), or "unmatched" for
	// requests no route matched, so metric labels stay bounded.
	Instrument func(route string, h http.Handler) http.Handler
	// TracerProvider starts the enqueue span (around the store call), whose
	// context is stored with the tasks as their traceparent. Default: the
	// no-op provider, which still carries the caller's trace context.
	TracerProvider trace.TracerProvider
	// SchedulesFile is the path of the schedules file, named in the 409
	// that refuses an API change to a schedule declared there. "" = none.
	SchedulesFile string
	// Version is reported by /livez.
	Version string
	// Now is this process's clock, which checks an explicit run_at (one in
	// the past means now; at most task.MaxScheduleAhead ahead). A delay is
	// left to the store's clock (the database's on PostgreSQL). Default
	// time.Now.
	Now func() time.Time
	// RequestTimeout bounds the work of one request, store calls included,
	// so a database that stops answering (a dropped network, not a refused
	// connection) yields a 503 instead of a request hanging until TCP gives
	// up. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// server is the state behind the handler New returns.
type server struct {
	cfg       Config
	log       *slog.Logger
	tracer    trace.Tracer
	keys      *auth.Keyring
	inflight  *semaphore.Weighted // body bytes being read and decoded (MaxInflightBodyBytes)
	mux       *http.ServeMux
	unmatched http.Handler
}

// route is one registered pattern with how its middleware is set up.
type route struct {
	pattern string    // Go 1.22 ServeMux pattern, also the OpenAPI path + method
	role    auth.Role // the least role a key needs; auth.None: public, no authentication
	quiet   bool      // log at Debug (health probes would drown the log)
	body    bodyKind
	handler func(s *server) http.Handler
}

// bodyKind is what request body a route reads, which sets its limit.
type bodyKind int

const (
	noBody     bodyKind = iota // never read; bounded anyway, but no 413
	singleBody                 // up to MaxBodyBytes
	batchBody                  // up to MaxBodyBytes × BatchBodyFactor
)

// routes is the table New registers and the OpenAPI test walks. Reading
// needs a read key, changing anything a write key; the task routes' ?view=full
// (header values) needs admin, which the handlers check.
func routes() []route {
	const read, write = auth.Read, auth.Write
	return []route{
		{pattern: "POST /v1/queues/{queue}/tasks", role: write, body: batchBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusCreated, s.enqueue) }},
		{pattern: "GET /v1/queues/{queue}/tasks", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listTasks) }},
		{pattern: "POST /v1/queues/{queue}/tasks/cancel", role: write, body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.bulkCancel) }},
		{pattern: "POST /v1/queues/{queue}/tasks/retry", role: write, body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.bulkRetry) }},
		{pattern: "GET /v1/tasks/{id}", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getTask) }},
		{pattern: "GET /v1/tasks/{id}/attempts", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listAttempts) }},
		{pattern: "POST /v1/tasks/{id}/cancel", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.cancelTask) }},
		{pattern: "POST /v1/tasks/{id}/retry", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.retryTask) }},
		{pattern: "GET /v1/queues", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listQueues) }},
		{pattern: "GET /v1/queues/{queue}", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getQueue) }},
		{pattern: "PATCH /v1/queues/{queue}", role: write, body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.patchQueue) }},
		{pattern: "POST /v1/queues/{queue}/pause", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.pauseQueue) }},
		{pattern: "POST /v1/queues/{queue}/resume", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.resumeQueue) }},
		{pattern: "GET /v1/destinations", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listDestinations) }},
		{pattern: "GET /v1/destinations/{destination}", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getDestination) }},
		{pattern: "PATCH /v1/destinations/{destination}", role: write, body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.patchDestination) }},
		{pattern: "GET /v1/schedules", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listSchedules) }},
		{pattern: "PUT /v1/schedules/{name}", role: write, body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.putSchedule) }},
		{pattern: "GET /v1/schedules/{name}", role: read, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getSchedule) }},
		{pattern: "DELETE /v1/schedules/{name}", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.deleteSchedule) }},
		{pattern: "POST /v1/schedules/{name}/trigger", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusCreated, s.triggerSchedule) }},
		{pattern: "POST /v1/schedules/{name}/pause", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.pauseSchedule) }},
		{pattern: "POST /v1/schedules/{name}/resume", role: write, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.resumeSchedule) }},
		{pattern: "GET /livez", quiet: true, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.livez) }},
		{pattern: "GET /readyz", quiet: true, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.readyz) }},
		{pattern: "GET /openapi.json", handler: func(s *server) http.Handler { return http.HandlerFunc(s.openAPI) }},
	}
}

// New validates cfg, fills its defaults and returns the API handler.
func New(cfg Config) (http.Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("api: Config.MaxBodyBytes is %d; want > 0 (or 0 for the default)", cfg.MaxBodyBytes)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxBatch < 0 {
		return nil, fmt.Errorf("api: Config.MaxBatch is %d; want > 0 (or 0 for the default)", cfg.MaxBatch)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	batchLimit := cfg.MaxBodyBytes * BatchBodyFactor
	if cfg.MaxInflightBodyBytes == 0 {
		cfg.MaxInflightBodyBytes = DefaultInflightBatches * batchLimit
	}
	if cfg.MaxInflightBodyBytes < batchLimit {
		return nil, fmt.Errorf("api: Config.MaxInflightBodyBytes is %d; want at least one maximum-size batch body, MaxBodyBytes × %d = %d (or 0 for the default)",
			cfg.MaxInflightBodyBytes, BatchBodyFactor, batchLimit)
	}
	if cfg.InflightWait < 0 {
		return nil, fmt.Errorf("api: Config.InflightWait is %s; want >= 0 (0 for the default)", cfg.InflightWait)
	}
	if cfg.InflightWait == 0 {
		cfg.InflightWait = DefaultInflightWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestTimeout < 0 {
		return nil, fmt.Errorf("api: Config.RequestTimeout is %s; want > 0 (or 0 for the default)", cfg.RequestTimeout)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	s := &server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), tracer: cfg.TracerProvider.Tracer(tracerName),
		inflight: semaphore.NewWeighted(cfg.MaxInflightBodyBytes)}
	keys, err := auth.NewKeyring(cfg.APIKeys)
	if err != nil {
		return nil, fmt.Errorf("api: Config.APIKeys: %w", err)
	}
	s.keys = keys
	for _, rt := range routes() {
		s.mux.Handle(rt.pattern, routed{s.chain(rt.pattern, rt.role, rt.quiet, rt.body, rt.handler(s))})
	}
	// Requests no pattern matches (404, 405) go through the same middleware
	// under one bounded route label, and get problem+json bodies.
	s.unmatched = s.chain("unmatched", auth.None, false, noBody, http.HandlerFunc(s.serveUnmatched))
	return s, nil
}

// routed marks the handlers registered for routes, as opposed to those the
// mux makes up itself (404, 405, path-cleaning redirects).
type routed struct{ http.Handler }

// ServeHTTP sends requests for a route to the mux and the rest to the
// unmatched chain, which turns the mux's plain-text 404/405 into problems
// and gives redirects a request id and a log line like everything else.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, _ := s.mux.Handler(r); !isRouted(h) {
		s.unmatched.ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func isRouted(h http.Handler) bool {
	_, ok := h.(routed)
	return ok
}
