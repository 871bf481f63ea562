package telemetry

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// This file is the API's server-span middleware. It replaces otelhttp,
// which with its httpsnoop dependency cost about 1.7 MB of the binary for
// what Spool needs from it: one span per request, with the HTTP semantic
// conventions' attributes, continuing the caller's traceparent.

// httpTracerName is the instrumentation scope of the API's server spans.
const httpTracerName = "github.com/spoolhq/spool/internal/telemetry"

// unmatchedRoute is the route api.Config.Instrument passes for requests no
// route pattern matched.
const unmatchedRoute = "unmatched"

// Instrument wraps one API route in a server span named by its route
// template ("POST /v1/queues/{queue}/tasks"; the bare method for
// "unmatched" requests), continuing the trace of an incoming traceparent,
// and puts the span in the request's context so the enqueue span and the
// log lines below see it. Its signature is api.Config.Instrument's. With
// tracing off it still extracts the caller's trace context (the no-op
// tracer passes it through), so the enqueue stores it.
//
// Attributes (HTTP semantic conventions): http.request.method (and
// http.request.method_original for a method outside the standard set),
// http.route, url.path (never the query, which may carry a secret),
// url.scheme, server.address, server.port (when not the scheme's default),
// network.protocol.version, network.peer.address/port, client.address,
// user_agent.original, and at the end http.response.status_code; a 5xx
// answer (or a panic) sets error.type and the Error status. HTTP metrics
// come from Metrics.Instrument; this only traces.
func (t *Tracing) Instrument(route string, h http.Handler) http.Handler {
	tracer := t.provider.Tracer(httpTracerName)
	httpRoute := ""
	if route != unmatchedRoute {
		// "POST /v1/queues/{queue}/tasks" → "/v1/queues/{queue}/tasks".
		if i := strings.IndexByte(route, '/'); i >= 0 {
			httpRoute = route[i:]
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := t.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		method, known := standardMethod(r.Method)
		name := route
		if httpRoute == "" {
			// Semantic conventions: no route, so the method alone ("HTTP"
			// for a nonstandard one, which would otherwise let a client
			// mint span names).
			name = method
			if !known {
				name = "HTTP"
			}
		}
		// The request attributes go in at the start, where a sampler can
		// see them.
		ctx, span := tracer.Start(ctx, name,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(serverRequestAttrs(r, method, known, httpRoute)...))
		sw := &spanWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			endServerSpan(span, sw, p)
			if p != nil {
				panic(p) // for the recover middleware outside
			}
		}()
		h.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// endServerSpan records the response on span and ends it. p is what the
// handler panicked with, or nil.
func endServerSpan(span trace.Span, sw *spanWriter, p any) {
	defer span.End()
	if !span.IsRecording() {
		return
	}
	code := sw.code
	switch {
	case code == 0 && p != nil:
		// Nothing written: the recover middleware outside answers 500
		// (Metrics.Instrument counts it the same way).
		code = http.StatusInternalServerError
	case code == 0:
		code = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	span.SetAttributes(attribute.Int("http.response.status_code", code))
	switch {
	case code >= 500:
		span.SetAttributes(attribute.String("error.type", strconv.Itoa(code)))
		msg := ""
		if p != nil {
			msg = "panic"
		}
		span.SetStatus(codes.Error, msg)
	case p != nil:
		// A panic after a non-5xx status was written: the client gets a
		// truncated response.
		span.SetAttributes(attribute.String("error.type", "panic"))
		span.SetStatus(codes.Error, "panic")
	}
	// 4xx is the client's error, not the server's: status stays Unset.
}

// serverRequestAttrs are a server span's attributes known at its start.
func serverRequestAttrs(r *http.Request, method string, known bool, httpRoute string) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 13)
	attrs = append(attrs, attribute.String("http.request.method", method))
	if !known {
		attrs = append(attrs, attribute.String("http.request.method_original", r.Method))
	}
	if httpRoute != "" {
		attrs = append(attrs, attribute.String("http.route", httpRoute))
	}
	if r.URL != nil && r.URL.Path != "" {
		attrs = append(attrs, attribute.String("url.path", r.URL.Path))
	}
	scheme, defaultPort := "http", 80
	if r.TLS != nil {
		scheme, defaultPort = "https", 443
	}
	attrs = append(attrs, attribute.String("url.scheme", scheme))
	if host, port := splitHostPort(r.Host); host != "" {
		attrs = append(attrs, attribute.String("server.address", host))
		if port > 0 && port != defaultPort {
			attrs = append(attrs, attribute.Int("server.port", port))
		}
	}
	if v := protocolVersion(r); v != "" {
		attrs = append(attrs, attribute.String("network.protocol.version", v))
	}
	peer, peerPort := splitHostPort(r.RemoteAddr)
	if peer != "" {
		attrs = append(attrs, attribute.String("network.peer.address", peer))
		if peerPort > 0 {
			attrs = append(attrs, attribute.Int("network.peer.port", peerPort))
		}
	}
	// The original client behind proxies when they say so (the first
	// X-Forwarded-For entry), else the peer; as otelhttp did.
	client := peer
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		first, _, _ := strings.Cut(xff, ",")
		if first = strings.TrimSpace(first); first != "" {
			client = first
		}
	}
	if client != "" {
		attrs = append(attrs, attribute.String("client.address", client))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, attribute.String("user_agent.original", ua))
	}
	return attrs
}

// standardMethod returns the method as the semantic conventions record it:
// one of the standard methods, or "_OTHER" (known false) for anything
// else, so clients cannot inflate the attribute's cardinality.
func standardMethod(m string) (string, bool) {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m, true
	}
	return "_OTHER", false
}

// protocolVersion is network.protocol.version: "1.0", "1.1", "2", "3".
func protocolVersion(r *http.Request) string {
	switch {
	case r.ProtoMajor == 1:
		return fmt.Sprintf("1.%d", r.ProtoMinor)
	case r.ProtoMajor > 1:
		return strconv.Itoa(r.ProtoMajor)
	}
	return ""
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port"; port is
// -1 when absent or malformed.
func splitHostPort(hp string) (host string, port int) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), -1
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return h, -1
	}
	return h, int(n)
}

// spanWriter records the response status for the server span. Flush and
// Unwrap keep streaming and http.ResponseController (Hijack, deadlines)
// working through it.
type spanWriter struct {
	http.ResponseWriter
	code int // the final status; 0 until the header is written
}

func (w *spanWriter) WriteHeader(code int) {
	// 1xx answers other than 101 are informational: the final status
	// comes later.
	if w.code == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *spanWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush sends buffered data to the client (net/http's writers all
// support it); it does nothing when the writer below cannot flush.
func (w *spanWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls first, so its
// caller sees the error of the writer below (http.ErrNotSupported).
func (w *spanWriter) FlushError() error {
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if w.code == 0 {
		w.code = http.StatusOK // the flush committed the header
	}
	return nil
}

// Unwrap lets http.ResponseController reach the writer below.
func (w *spanWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
