package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultServiceName is service.name when OTEL_SERVICE_NAME is not set.
const DefaultServiceName = "spool"

// Tracing is the process's OpenTelemetry setup: a tracer provider (Spool's
// SDK, sdk.go, with an OTLP exporter, or the no-op provider when tracing is
// off) and the
// W3C trace-context propagator, which works either way so a caller's
// traceparent still reaches the delivered request with tracing off. It is
// passed to the API and the dispatcher explicitly; nothing is installed as
// the otel global provider.
type Tracing struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error // nil when off or when the caller owns the provider
	exporter   string                      // "otlp (http/json) <url>", or "" when off
}

// NewTracing configures tracing from the standard OTEL_* variables, looked
// up through env (os.LookupEnv in production):
//
//   - Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT,
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER is set, and
//     off when none is, when OTEL_TRACES_EXPORTER is "none" or when
//     OTEL_SDK_DISABLED is "true". Only the "otlp" exporter is supported.
//   - Spans go over OTLP/HTTP, encoded as OTLP/JSON, by Spool's own
//     exporter (otlphttp.go), which reads the endpoint, headers, timeout,
//     compression and TLS files from OTEL_EXPORTER_OTLP_(TRACES_)*.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
//     "http/json", or "http/protobuf" (the specification's default), which
//     is served by the same exporter and so also sends JSON. That is a
//     deliberate trade: the official OTLP exporters link gRPC and the
//     generated protobuf code, which nearly double the binary, while the
//     common OTLP/HTTP receivers (the Collector, Jaeger, Tempo) accept
//     JSON on the same path as protobuf (docs/operations.md, "Why JSON, and
//     no gRPC", names the exceptions and the workaround). "grpc" is refused
//     with an error saying to use the receiver's OTLP/HTTP port (4318).
//   - OTEL_SERVICE_NAME (default "spool") and OTEL_RESOURCE_ATTRIBUTES name
//     the resource; service.version is version.
//   - The sampler (OTEL_TRACES_SAMPLER and _ARG, default
//     parentbased_always_on), the span limits (OTEL_SPAN_*_LIMIT,
//     OTEL_ATTRIBUTE_*_LIMIT, OTEL_EVENT_/OTEL_LINK_ATTRIBUTE_COUNT_LIMIT)
//     and the batch span processor (OTEL_BSP_*), as the SDK specification
//     defines them (sdk.go); a malformed value is an error naming it.
//
// log receives export failures and dropped spans (slog.Default when nil).
func NewTracing(ctx context.Context, env func(string) (string, bool), version string, log *slog.Logger) (*Tracing, error) {
	get := func(k string) string { v, _ := env(k); return strings.TrimSpace(v) }
	off := &Tracing{provider: noop.NewTracerProvider(), propagator: propagation.TraceContext{}}

	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return off, nil
	}
	exporter := strings.ToLower(get("OTEL_TRACES_EXPORTER"))
	switch exporter {
	case "none":
		return off, nil
	case "":
		if get("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return off, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: Spool supports only \"otlp\" or \"none\"", exporter)
	}

	protocol := get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	protocolVar := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if protocol == "" {
		protocol, protocolVar = get("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch protocol {
	case "", "http/protobuf", "http/json":
		// Both HTTP protocols are served as OTLP/JSON; see above.
	case "grpc":
		return nil, fmt.Errorf("%s=grpc: Spool exports traces over OTLP/HTTP only; "+
			"set it to http/protobuf (or unset it) and point the endpoint at the receiver's OTLP/HTTP port (4318), "+
			"e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318", protocolVar)
	default:
		return nil, fmt.Errorf("%s=%q: Spool supports \"http/protobuf\" or \"http/json\" (both sent as OTLP/JSON over HTTP)", protocolVar, protocol)
	}
	cfg, err := otlpHTTPConfigFromEnv(get)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if cfg.endpoint.Port() == "4317" && log != nil {
		log.Warn("the OTLP endpoint uses port 4317, by convention OTLP/gRPC; Spool sends OTLP/HTTP, usually on 4318",
			"url.full", safeURL(cfg.endpoint))
	}
	settings, err := sdkSettingsFromEnv(get)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	res, bad := resourceFromEnv(get, version, semconv.SchemaURL)
	if len(bad) > 0 {
		log.Warn("OTEL_RESOURCE_ATTRIBUTES: entries without key=value skipped", "spool.entries", bad)
	}
	exp := newOTLPHTTPExporter(cfg, version)
	// The processor buffers spans (OTEL_BSP_MAX_QUEUE_SIZE, 2048) and
	// exports them from its own goroutine, so a slow receiver never delays
	// a request or a delivery.
	bsp := newBatchProcessor(exp, settings.batch, log)
	return &Tracing{
		provider:   newTracerProvider(res, settings.sampler, settings.limits, bsp.onEnd),
		propagator: propagation.TraceContext{},
		shutdown:   bsp.shutdown,
		exporter:   "otlp (http/json) " + exp.Endpoint(),
	}, nil
}

// NewTracingWith wraps a provider the caller built and owns (tests use the
// official SDK's provider with an in-memory exporter); Shutdown leaves it
// alone.
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
// from: Spool's SDK, or the no-op provider, whose spans still carry their
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
