// Package api is Spool's HTTP/JSON API: the /v1 handlers, the health
// routes, the middleware around them and the OpenAPI document that the
// tests hold them to. It owns request decoding and validation, the JSON
// shapes clients rely on, and the mapping of errors to RFC 9457 problems.
// It talks to storage only through store.Store and must not import a
// driver, the dispatcher or the telemetry package (wiring is cmd's job).
package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

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
	// APIKeys are the accepted bearer keys for /v1 routes; empty means no
	// authentication (cmd refuses that on non-loopback addresses).
	APIKeys []string
	// MaxBodyBytes bounds a request body, and each task of a batch.
	// Default DefaultMaxBodyBytes (1 MiB). A batch body may be up to
	// BatchBodyFactor (10) times this.
	MaxBodyBytes int64
	// MaxBatch is the most tasks in one batch enqueue. Default 1000.
	MaxBatch int
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
	// Now is the clock used for delay and run_at. Default time.Now.
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
	keys      [][sha256.Size]byte // SHA-256 of each API key
	mux       *http.ServeMux
	unmatched http.Handler
}

// route is one registered pattern with how its middleware is set up.
type route struct {
	pattern string // Go 1.22 ServeMux pattern, also the OpenAPI path + method
	public  bool   // no authentication
	quiet   bool   // log at Debug (health probes would drown the log)
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

// routes is the table New registers and the OpenAPI test walks.
func routes() []route {
	return []route{
		{pattern: "POST /v1/queues/{queue}/tasks", body: batchBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusCreated, s.enqueue) }},
		{pattern: "GET /v1/queues/{queue}/tasks", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listTasks) }},
		{pattern: "GET /v1/tasks/{id}", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getTask) }},
		{pattern: "POST /v1/tasks/{id}/cancel", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.cancelTask) }},
		{pattern: "POST /v1/tasks/{id}/retry", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.retryTask) }},
		{pattern: "GET /v1/queues", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listQueues) }},
		{pattern: "GET /v1/queues/{queue}", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getQueue) }},
		{pattern: "PATCH /v1/queues/{queue}", body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.patchQueue) }},
		{pattern: "POST /v1/queues/{queue}/pause", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.pauseQueue) }},
		{pattern: "POST /v1/queues/{queue}/resume", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.resumeQueue) }},
		{pattern: "GET /v1/destinations", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listDestinations) }},
		{pattern: "GET /v1/destinations/{destination}", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getDestination) }},
		{pattern: "PATCH /v1/destinations/{destination}", body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.patchDestination) }},
		{pattern: "GET /v1/schedules", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.listSchedules) }},
		{pattern: "PUT /v1/schedules/{name}", body: singleBody, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.putSchedule) }},
		{pattern: "GET /v1/schedules/{name}", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.getSchedule) }},
		{pattern: "DELETE /v1/schedules/{name}", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.deleteSchedule) }},
		{pattern: "POST /v1/schedules/{name}/trigger", handler: func(s *server) http.Handler { return endpoint(s, http.StatusCreated, s.triggerSchedule) }},
		{pattern: "POST /v1/schedules/{name}/pause", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.pauseSchedule) }},
		{pattern: "POST /v1/schedules/{name}/resume", handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.resumeSchedule) }},
		{pattern: "GET /livez", public: true, quiet: true, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.livez) }},
		{pattern: "GET /readyz", public: true, quiet: true, handler: func(s *server) http.Handler { return endpoint(s, http.StatusOK, s.readyz) }},
		{pattern: "GET /openapi.json", public: true, handler: func(s *server) http.Handler { return http.HandlerFunc(s.openAPI) }},
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
	s := &server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), tracer: cfg.TracerProvider.Tracer(tracerName)}
	for i, k := range cfg.APIKeys {
		if k == "" {
			return nil, fmt.Errorf("api: Config.APIKeys[%d] is empty", i)
		}
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
	for _, rt := range routes() {
		s.mux.Handle(rt.pattern, routed{s.chain(rt.pattern, rt.public, rt.quiet, rt.body, rt.handler(s))})
	}
	// Requests no pattern matches (404, 405) go through the same middleware
	// under one bounded route label, and get problem+json bodies.
	s.unmatched = s.chain("unmatched", true, false, noBody, http.HandlerFunc(s.serveUnmatched))
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
