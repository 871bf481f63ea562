package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"strings"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultServiceName is service.name when OTEL_SERVICE_NAME is not set.
const DefaultServiceName = "spool"

// The specification's default endpoints, used when no endpoint variable is
// set (OTEL_TRACES_EXPORTER=otlp alone): a Collector beside the process,
// without TLS. (The Go exporters' own default is https.)
const (
	defaultHTTPEndpoint = "http://localhost:4318/v1/traces"
	defaultGRPCEndpoint = "http://localhost:4317"
)

// Tracing is the process's OpenTelemetry setup: a tracer provider (the
// official SDK, go.opentelemetry.io/otel/sdk, with a batch span processor
// and the official OTLP exporter, or the no-op provider when tracing is
// off) and the W3C trace-context propagator, which works either way so a
// caller's traceparent still reaches the delivered request with tracing
// off. It is passed to the API and the dispatcher explicitly; nothing is
// installed as the otel global provider.
type Tracing struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error // nil when off or when the caller owns the provider
	exporter   string                      // "otlp (http/protobuf) <url>", or "" when off
}

// NewTracing configures tracing from the standard OTEL_* variables.
//
// Spool decides, from env (os.LookupEnv in production), whether tracing is
// on and which exporter runs:
//
//   - Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT,
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER is set, and
//     off when none is, when OTEL_TRACES_EXPORTER is "none" or when
//     OTEL_SDK_DISABLED is "true". Only the "otlp" exporter is supported.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
//     "http/protobuf" (the default) or "http/json" runs otlptracehttp,
//     sending binary protobuf or OTLP/JSON; "grpc" runs otlptracegrpc.
//   - The endpoint variables must be http:// or https:// URLs, and the
//     header variables name=value lists: a malformed value is an error
//     naming the variable, checked here because the exporter would log the
//     value (which may be a credential) and fall back to its default.
//
// The official SDK and exporters then read the rest from the process
// environment, as the specification defines it: the headers, timeout,
// compression and TLS files (OTEL_EXPORTER_OTLP_[TRACES_]*), the
// sampler (OTEL_TRACES_SAMPLER and _ARG, default parentbased_always_on),
// span limits (OTEL_SPAN_*_LIMIT…), the batch span processor (OTEL_BSP_*)
// and the resource (OTEL_SERVICE_NAME, default "spool", and
// OTEL_RESOURCE_ATTRIBUTES); service.version is version. A malformed value
// there is logged by the SDK and its default used.
//
// log receives the SDK's errors, export failures included, at warn with
// the message "opentelemetry" (slog.Default when nil). The SDK reports them
// through the otel global error handler and logger, so an enabled Tracing
// installs both, pointing at log.
func NewTracing(ctx context.Context, env func(string) (string, bool), version string, log *slog.Logger) (*Tracing, error) {
	get := func(k string) string { v, _ := env(k); return strings.TrimSpace(v) }
	off := &Tracing{provider: noop.NewTracerProvider(), propagator: propagation.TraceContext{}}

	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return off, nil
	}
	endpoint, endpointVar := get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	if endpoint == "" {
		endpoint, endpointVar = get("OTEL_EXPORTER_OTLP_ENDPOINT"), "OTEL_EXPORTER_OTLP_ENDPOINT"
	}
	if endpoint == "" {
		endpointVar = ""
	}
	switch exporter := strings.ToLower(get("OTEL_TRACES_EXPORTER")); exporter {
	case "none":
		return off, nil
	case "":
		if endpointVar == "" {
			return off, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: Spool supports only \"otlp\" or \"none\"", exporter)
	}
	if log == nil {
		log = slog.Default()
	}

	protocol, protocolVar := get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if protocol == "" {
		protocol, protocolVar = get("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch protocol {
	case "":
		protocol = "http/protobuf"
	case "http/protobuf", "http/json", "grpc":
	default:
		return nil, fmt.Errorf("%s=%q: Spool supports \"http/protobuf\" (the default), \"http/json\" or \"grpc\"",
			protocolVar, protocol)
	}

	// The endpoint and the headers are checked here, not left to the
	// exporter, because its messages quote the value (a token in the URL,
	// an Authorization header) and it goes on with its default endpoint or
	// without the header. target is the URL the exporter is given (its own
	// reading of the same variables agrees, but for its https default),
	// shown the one logged.
	target := defaultHTTPEndpoint
	if protocol == "grpc" {
		target = defaultGRPCEndpoint
	}
	shown := target
	if endpointVar != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// Not the parse error: it quotes the URL.
			return nil, fmt.Errorf("%s: want an http:// or https:// URL such as http://otel-collector:4318", endpointVar)
		}
		switch {
		case protocol == "grpc":
			u.Path, u.RawPath = "", "" // gRPC has no path
		case endpointVar == "OTEL_EXPORTER_OTLP_ENDPOINT":
			// A base URL: the exporter appends the signal's path.
			u.Path, u.RawPath = path.Join("/", u.Path, "v1/traces"), ""
		}
		target, shown = u.String(), safeURL(u)
		if p := u.Port(); p == "4317" && protocol != "grpc" {
			log.Warn("the OTLP endpoint uses port 4317, by convention OTLP/gRPC, but the protocol is "+protocol+", usually on 4318",
				"url.full", shown)
		} else if p == "4318" && protocol == "grpc" {
			log.Warn("the OTLP endpoint uses port 4318, by convention OTLP/HTTP, but the protocol is grpc, usually on 4317",
				"url.full", shown)
		}
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		if err := checkHeaders(name, get(name)); err != nil {
			return nil, err
		}
	}

	// The SDK reports what goes wrong (a failed export, a malformed
	// variable) through these globals; nothing else of Spool uses them.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry", "error.message", err.Error())
	}))
	otel.SetLogger(logr.FromSlogHandler(log.Handler()))

	var exp sdktrace.SpanExporter
	var err error
	if protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(target))
	} else {
		// The encoding and endpoint are given, though the exporter reads
		// the same variables, so it does what the start-up line says.
		opts := []otlptracehttp.Option{otlptracehttp.WithEncoding(otlptracehttp.EncodingProtobuf)}
		if protocol == "http/json" {
			opts[0] = otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON)
		}
		exp, err = otlptracehttp.New(ctx, append(opts, otlptracehttp.WithEndpointURL(target))...)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP %s exporter: %w", protocol, err)
	}

	// Later sources win: Spool's defaults, then OTEL_RESOURCE_ATTRIBUTES,
	// then OTEL_SERVICE_NAME.
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(semconv.ServiceName(DefaultServiceName), semconv.ServiceVersion(version)),
		resource.WithFromEnv(),
	)
	if err != nil {
		if !errors.Is(err, resource.ErrPartialResource) {
			_ = exp.Shutdown(ctx)
			return nil, fmt.Errorf("tracing: resource: %w", err)
		}
		// Not the error: it quotes the entry, whose value may be private.
		log.Warn("OTEL_RESOURCE_ATTRIBUTES: entries without key=value skipped")
	}

	// The batch processor buffers spans (OTEL_BSP_MAX_QUEUE_SIZE, 2048) and
	// exports them from its own goroutine, dropping them when the buffer is
	// full, so a slow receiver never delays a request or a delivery.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Tracing{
		provider:   tp,
		propagator: propagation.TraceContext{},
		shutdown:   tp.Shutdown,
		exporter:   "otlp (" + protocol + ") " + shown,
	}, nil
}

// checkHeaders checks an OTEL_EXPORTER_OTLP_[TRACES_]HEADERS value as the
// exporter will parse it, "k=v,k2=v2" with URL-encoded values; its error
// names the entry by position, never quoting a value.
func checkHeaders(name, v string) error {
	if v == "" {
		return nil
	}
	for i, pair := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || !validHeaderName(k) {
			return fmt.Errorf("%s: entry %d is not name=value with a valid header name", name, i+1)
		}
		if _, err := url.PathUnescape(strings.TrimSpace(val)); err != nil {
			return fmt.Errorf("%s: the value of %q is not URL-encoded correctly", name, k)
		}
	}
	return nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// safeURL prints u without what may be a credential: its user info and
// its query (some vendors put an API key there).
func safeURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		c.RawQuery = "REDACTED"
	}
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// NewTracingWith wraps a provider the caller built and owns (tests use the
// SDK's provider with an in-memory exporter); Shutdown leaves it alone.
func NewTracingWith(tp trace.TracerProvider) *Tracing {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return &Tracing{provider: tp, propagator: propagation.TraceContext{}, exporter: "caller's provider"}
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.exporter != "" }

// Exporter names the exporter in use ("" when tracing is off), for the
// start-up log line.
func (t *Tracing) Exporter() string { return t.exporter }

// TracerProvider is the provider the API and the dispatcher start spans
// from: the SDK's, or the no-op provider, whose spans still carry their
// parent's context.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Propagator reads and writes W3C traceparent headers.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.propagator }

// Shutdown exports the spans still buffered and stops the exporter; call it
// last in the shutdown sequence, with a deadline. A no-op when tracing is
// off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.shutdown == nil {
		return nil
	}
	if err := t.shutdown(ctx); err != nil {
		return fmt.Errorf("tracing shutdown: %w", err)
	}
	return nil
}
